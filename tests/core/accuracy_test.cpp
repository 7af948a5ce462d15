// The accuracy guard (label `accuracy`): the cost model with the GPU YAMLs as shipped, evaluated on the held-out split
// of the AIConfigurator tables (../shared/calibration/aiconfigurator), for every GPU and family, and cross-GPU (H100's
// parameters on H200's and B200's spec sheets). Fails when a median passes its bound (own GPU 5%, cross-GPU 15%), so
// accuracy cannot regress silently; p90 (bound 15%) is printed in the table's verdict column. Prints the table (the
// same as `parasol calibrate --report`). Each held-out set is evaluated on a seeded-hash subsample of at most
// kMaxSamples shapes, which keeps the test within a minute on two cores; the split itself is the report's.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

#include "core/cost/fitting.hpp"
#include "core/spec/gpu.hpp"

namespace parasol::cost {
namespace {

constexpr size_t kMaxSamples = 4000;

TEST(Accuracy, ShippedGpuYamlsMeetTheMedianBoundsOnTheHeldOutSplit) {
  const std::string aic = std::string(PARASOL_DATA_DIR) + "/../shared/calibration/aiconfigurator";
  if (!std::filesystem::is_directory(aic)) GTEST_SKIP() << "no " << aic;
  ASSERT_FALSE(families().empty()) << "no op family is registered (core/cost/family_*.cpp)";
  ReportOptions opts;
  opts.max_samples = kMaxSamples;
  const auto rows = accuracy_report(
      aic,
      [](const std::string& gpu) {
        return spec::load_gpu_file(std::string(PARASOL_DATA_DIR) + "/topologies/gpus/" + gpu + ".yaml");
      },
      opts);
  std::cout << format_report(rows, false) << std::flush;
  ASSERT_FALSE(rows.empty());
  for (const auto& r : rows) {
    if (r.stats.n == 0) continue;
    const double bound = r.params_from.empty() ? kMedianBound : kCrossMedianBound;
    EXPECT_LE(r.stats.median, bound) << r.gpu << " " << r.family
                                     << (r.params_from.empty() ? "" : " with " + r.params_from + "'s parameters")
                                     << ": held-out median |error| over n=" << r.stats.n;
  }
}

}  // namespace
}  // namespace parasol::cost

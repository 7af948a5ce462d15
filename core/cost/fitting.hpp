// Fitting the cost model to measured tables (`parasol calibrate`): loading a GPU's AIConfigurator tables into
// Samples, the held-out split, the fit of one family's parameters, and the error statistics of the report and of the
// accuracy test.
//   split: a sample is held out when hash(seed, family, gpu, key) falls in the lowest `held_out_fraction` of the hash
//          range: 30% by default, seed kSplitSeed; held-out samples are never used in fitting.
//   fit:   minimise the mean of |log(pred / meas)| (robust: it targets the median ratio) over the training samples,
//          by NLopt's bounded derivative-free local search (subplex, LN_SBPLX) from the GPU's current values; scale
//          parameters (positive, bounds wider than 4x) are searched in log space. Deterministic.
//   error: |pred - meas| / meas per sample; median, p90, and the signed bias median((pred - meas) / meas).
// Thread behaviour: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/cost/fit_family.hpp"

namespace parasol::cost {

inline constexpr uint64_t kSplitSeed = 20261202;
inline constexpr double kHeldOutFraction = 0.3;
// The fit's objective runs on at most this many training samples (a seeded-hash subsample): a few thousand shapes
// pin a handful of parameters, and keep a fit of a 100k-row table to seconds. Errors are on the whole split.
inline constexpr size_t kFitMaxSamples = 3000;

bool held_out(const Sample& s, uint64_t seed = kSplitSeed, double fraction = kHeldOutFraction);
// (training, held-out) parts of `samples`, in their order.
std::pair<std::vector<Sample>, std::vector<Sample>> split(const std::vector<Sample>& samples,
                                                          uint64_t seed = kSplitSeed);
// At most `max_n` of `samples`, chosen by a seeded hash (deterministic, independent of the split), in their order.
std::vector<Sample> subsample(const std::vector<Sample>& samples, size_t max_n, uint64_t seed = kSplitSeed);
// Sets `to`'s values of `family`'s parameters to `from`'s (the cross-GPU check: H100's fit on H200's spec sheet).
void copy_params(const Family& family, const spec::Gpu& from, spec::Gpu& to);

// One AIConfigurator GPU folder (e.g. ../shared/calibration/aiconfigurator/h100_sxm).
struct AicSource {
  std::string dir;        // the GPU folder
  std::string gpu;        // parasol GPU name
  std::string framework;  // "vllm-0.24.0": the kernel tables' subfolder; collectives come from nccl-*/
};
// The shipped mapping of AIConfigurator folders to GPUs, for `root` (the aiconfigurator folder); absent ones skipped.
std::vector<AicSource> aic_sources(const std::string& root);
// Samples of `family` from `src` (every table the family lists that exists there).
std::vector<Sample> load_samples(const AicSource& src, const Family& family);

struct ErrorStats {
  size_t n = 0;
  double median = 0, p90 = 0, bias = 0;  // fractions
};
ErrorStats error_stats(const Family& family, const std::vector<Sample>& samples, const spec::Gpu& gpu);

struct FitResult {
  spec::Gpu gpu;                                      // the start GPU with the family's parameters fitted
  std::vector<std::pair<std::string, double>> values;  // FitParam::name -> fitted value (SI)
  // Per parameter: false when no training sample's prediction depends on it (e.g. fp8 terms on a GPU measured only
  // in bfloat16); such a value stays at its start and is not written.
  std::vector<bool> fitted;
  ErrorStats train, held_out;
  int evaluations = 0;
};
// Fits `family`'s parameters on the training part of `samples` (all of one GPU), starting from `start`.
FitResult fit_family(const Family& family, const std::vector<Sample>& samples, const spec::Gpu& start,
                     uint64_t seed = kSplitSeed);

}  // namespace parasol::cost

namespace parasol::cost {

// ---- The accuracy report (`parasol calibrate --report`, tests/core/accuracy_test.cpp) ----
// Bounds of issue "Calibrated cost model": per GPU and family on the held-out split, and cross-GPU (a family's
// parameters fitted on H100, applied to another GPU whose spec sheet alone differs).
inline constexpr double kMedianBound = 0.05;
inline constexpr double kP90Bound = 0.15;
inline constexpr double kCrossMedianBound = 0.15;
inline constexpr const char* kCrossSourceGpu = "h100-sxm";
inline const std::vector<std::string> kCrossTargetGpus = {"h200-sxm", "b200"};

struct AccuracyRow {
  std::string gpu, family;
  std::string params_from;  // cross-GPU rows: the GPU whose parameters were used; empty otherwise
  ErrorStats stats;
  bool median_ok() const { return stats.median <= (params_from.empty() ? kMedianBound : kCrossMedianBound); }
  bool p90_ok() const { return !params_from.empty() || stats.p90 <= kP90Bound; }
  bool pass() const { return stats.n == 0 || (median_ok() && p90_ok()); }
};

struct ReportOptions {
  std::vector<std::string> gpus;      // parasol GPU names; empty: every AIConfigurator GPU
  std::vector<std::string> families;  // empty: all
  bool cross = true;                  // add the cross-GPU rows
  size_t max_samples = 0;             // >0: evaluate a seeded-hash subsample of each held-out set of this size
};
// Evaluates the GPUs as `gpu_of(name)` returns them (the shipped YAMLs) on the held-out split of the AIConfigurator
// tables under `aic_root`.
std::vector<AccuracyRow> accuracy_report(const std::string& aic_root,
                                         const std::function<spec::Gpu(const std::string&)>& gpu_of,
                                         const ReportOptions& options = {});
// The table, as aligned text or as Markdown.
std::string format_report(const std::vector<AccuracyRow>& rows, bool markdown);

// ---- Writing fitted values into a GPU YAML (`parasol calibrate --write`) ----
// A fitted value as its YAML scalar: times with a unit ("3.1 us", quoted), other values as plain numbers.
std::string yaml_value(const FitParam& p, double value);
// `text` (a GPU YAML) with each (dotted path, scalar) set: the key's line is rewritten in place with `comment`
// appended ("# ..."), a missing key is added at the end of its section (a missing section at the end of the file);
// every other line, comment and blank line is kept byte for byte. `file` names the text in errors (a flow-style
// section it cannot edit: ConfigError).
std::string update_yaml(const std::string& text, const std::vector<std::pair<std::string, std::string>>& values,
                        const std::string& comment, const std::string& file);

}  // namespace parasol::cost

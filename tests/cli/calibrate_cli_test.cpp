// `parasol calibrate --report --samples FILE`: one CSV line per held-out sample of the report's own-GPU rows, as
// many as the report counts, with fields quoted where they hold commas (the sample keys do), each error equal to
// (predicted - measured) / measured of its own line; and --samples without --report is a usage error (exit 2).
// Needs ../shared/calibration/aiconfigurator (skips without it).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

// One CSV record (RFC 4180 quoting), no line breaks inside fields.
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

TEST(CalibrateCli, ReportSamplesListEveryHeldOutSampleWithItsError) {
  const std::string aic = std::string(PARASOL_DATA_DIR) + "/../shared/calibration/aiconfigurator";
  if (!std::filesystem::is_directory(aic)) GTEST_SKIP() << "no " << aic;
  TempDir dir;
  const auto file = dir / "samples.csv";
  RunResult r = run_parasol({"calibrate", "--report", "--gpu", "h100-sxm", "--family", "context_attention", "--family",
                             "all_reduce", "--samples", file.string(), "--json"},
                            120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = nlohmann::json::parse(r.out);
  size_t want = 0;
  for (const auto& row : report.at("rows"))
    if (row.at("params_from").get<std::string>().empty()) want += row.at("n").get<size_t>();
  ASSERT_GT(want, 0u);
  std::istringstream in(read_all(file));
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "gpu,family,key,where,measured_s,predicted_s,error");
  size_t n = 0, quoted = 0;
  while (std::getline(in, line)) {
    const auto f = csv_fields(line);
    ASSERT_EQ(f.size(), 7u) << line;
    EXPECT_EQ(f[0], "h100-sxm");
    EXPECT_TRUE(f[1] == "context_attention" || f[1] == "all_reduce") << f[1];
    EXPECT_NE(f[3].find(".csv:"), std::string::npos) << "where: file:line, found " << f[3];
    const double meas = std::stod(f[4]), pred = std::stod(f[5]), err = std::stod(f[6]);
    ASSERT_GT(meas, 0) << line;
    EXPECT_NEAR(err, (pred - meas) / meas, 1e-3 + 1e-5 * std::fabs(err)) << line;
    quoted += line.find('"') != std::string::npos ? 1 : 0;
    ++n;
  }
  EXPECT_EQ(n, want);
  EXPECT_GT(quoted, 0u) << "the attention keys hold commas: they must be quoted";

  RunResult bad = run_parasol({"calibrate", "--samples", (dir / "x.csv").string()}, 60);
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("--samples"), std::string::npos) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.csv"));
}

}  // namespace
}  // namespace parasol::testing

// The capacity objectives of `parasol plan`, end to end in simulation:
//   --objective max_rate: the rate search brackets the crossing (the highest simulated rate meets both p99 SLOs, the
//   lowest simulated rate above it misses one, within the tolerance), is deterministic, is the same for the chosen
//   plan and for that plan given back with --plan, and writes its curve as CSV and SVG;
//   --objective fewest_gpus --verify K: the chosen sizing meets the SLOs in simulation and one colocated instance
//   fewer misses them (the answer is exact in simulation), fewest GPUs first;
//   bad combinations are exit code 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

const std::string kDefault = std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml";
constexpr double kTtftSlo = 0.5, kTpotSlo = 0.05;  // scenarios/default.yaml

TEST(PlanCapacity, MaxRateBracketsTheRateWhereTheSimulatedP99CrossesTheSlo) {
  TempDir dir;
  const std::vector<std::string> args = {"plan",  kDefault, "--objective", "max_rate", "--verify-requests", "600",
                                         "--json", "--out", dir.path().string()};
  const RunResult a = run_parasol(args, 300.0);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const RunResult b = run_parasol(args, 300.0);
  EXPECT_EQ(a.out, b.out) << "the rate search is deterministic";
  const auto m = nlohmann::json::parse(a.out).at("max_rate");
  const double lo = m.at("sustained_rps").get<double>(), hi = m.at("missed_rps").get<double>();
  ASSERT_GT(lo, 0);
  ASSERT_GT(hi, lo);
  EXPECT_LE(hi, lo * 1.02 * (1 + 1e-9));
  int at_lo = 0, at_hi = 0;
  double prev = 0;
  for (const auto& p : m.at("curve")) {
    const double rate = p.at("rate_rps").get<double>();
    EXPECT_GT(rate, prev) << "ascending, each rate once";
    prev = rate;
    ASSERT_TRUE(p.at("ok").get<bool>());
    const bool meets = p.at("ttft_p99_s").get<double>() <= kTtftSlo && p.at("tpot_p99_s").get<double>() <= kTpotSlo;
    EXPECT_EQ(meets, p.at("meets_slo").get<bool>()) << rate;
    EXPECT_EQ(p.at("requests").get<int64_t>(), 600) << "the workload's own cap (500) is replaced";
    if (rate == lo) {
      ++at_lo;
      EXPECT_TRUE(meets);
    }
    if (rate == hi) {
      ++at_hi;
      EXPECT_FALSE(meets);
    }
    if (rate > lo && rate < hi) ADD_FAILURE() << "a simulated rate inside the bracket: " << rate;
  }
  EXPECT_EQ(at_lo, 1);
  EXPECT_EQ(at_hi, 1);
  // The curve files: one CSV row per simulated rate, one marker per rate and panel.
  const std::string csv = read_all(dir / "rate_curve.csv");
  EXPECT_EQ(line_count(csv), static_cast<int>(m.at("curve").size()) + 1);
  const std::string svg = read_all(dir / "rate_curve.svg");
  std::ptrdiff_t circles = 0;
  for (size_t at = 0; (at = svg.find("<circle", at)) != std::string::npos; ++at) ++circles;
  EXPECT_EQ(circles, 2 * static_cast<std::ptrdiff_t>(m.at("curve").size()));
  // The same deployment given back with --plan: the same search.
  const RunResult c = run_parasol({"plan", kDefault, "--objective", "max_rate", "--verify-requests", "600", "--json",
                                   "--plan", (dir / "plan.yaml").string()},
                                  300.0);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const auto mc = nlohmann::json::parse(c.out).at("max_rate");
  EXPECT_EQ(mc.at("sustained_rps").get<double>(), lo);
  EXPECT_EQ(mc.at("curve").dump(), m.at("curve").dump());
}

TEST(PlanCapacity, FewestGpusInSimulationMeetsTheSlosAndOneInstanceFewerDoesNot) {
  TempDir dir;
  // The default scenario at 60 req/s: more than one 8B replica's worth.
  std::string text = read_all(kDefault);
  text = std::regex_replace(text, std::regex("rate: 10\\}"), "rate: 60}");
  text = std::regex_replace(text, std::regex("requests: 500"), "requests: 1200");
  write_text(dir / "busy.yaml", text);
  const RunResult r = run_parasol({"plan", (dir / "busy.yaml").string(), "--objective", "fewest_gpus", "--verify",
                                   "3", "--verify-requests", "1200", "--json"},
                                  300.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("objective").get<std::string>(), "fewest_gpus");
  const auto& cands = j.at("verified").at("candidates");
  ASSERT_EQ(cands.size(), 3u);
  int prev_gpus = 0;
  bool checked = false;
  for (const auto& c : cands) {
    ASSERT_TRUE(c.at("ok").get<bool>()) << c.dump();
    const bool meets = c.at("simulated").at("meets_slo").get<bool>();
    if (!meets) continue;
    const int gpus = c.at("gpus").get<int>();
    EXPECT_GE(gpus, prev_gpus) << "fewest GPUs first among those that meet the SLOs";
    prev_gpus = gpus;
    static const std::regex dp("dp([0-9]+)$");
    std::smatch md;
    const std::string layout = c.at("layout").get<std::string>();
    ASSERT_TRUE(std::regex_search(layout, md, dp)) << layout;
    if (std::stoi(md[1]) == 1) continue;
    ASSERT_TRUE(c.contains("smaller_missed")) << c.dump();
    const auto& s = c.at("smaller_missed");
    EXPECT_EQ(s.at("layout").get<std::string>(),
              layout.substr(0, static_cast<size_t>(md.position(1))) + std::to_string(std::stoi(md[1]) - 1))
        << "the sizing below the answer was simulated";
    EXPECT_TRUE(s.at("ttft_p99_s").get<double>() > kTtftSlo || s.at("tpot_p99_s").get<double>() > kTpotSlo);
    checked = true;
  }
  EXPECT_TRUE(checked) << "some candidate needs more than one replica at 60 req/s";
  EXPECT_EQ(j.at("chosen").get<std::string>(), cands.at(0).at("layout").get<std::string>());
}

TEST(PlanCapacity, APlanWithoutMaxRateOrAnUnknownObjectiveIsExitCode2) {
  const RunResult a = run_parasol({"plan", kDefault, "--plan", "x.yaml"});
  EXPECT_EQ(a.exit_code, 2) << a.err;
  EXPECT_NE(a.err.find("--objective max_rate"), std::string::npos) << a.err;
  const RunResult b = run_parasol({"plan", kDefault, "--objective", "cheapest"});
  EXPECT_EQ(b.exit_code, 2) << b.err;
  EXPECT_NE(b.err.find("--objective"), std::string::npos) << b.err;
  TempDir dir;
  std::string text = read_all(kDefault);
  text = std::regex_replace(text, std::regex("top_n: 5"), "top_n: 5\n  objective: most_tokens");
  write_text(dir / "bad.yaml", text);
  const RunResult c = run_parasol({"plan", (dir / "bad.yaml").string()});
  EXPECT_EQ(c.exit_code, 2) << c.err;
  EXPECT_NE(c.err.find("objective"), std::string::npos) << c.err;
  EXPECT_NE(c.err.find("fewest_gpus"), std::string::npos) << c.err;
}

}  // namespace
}  // namespace parasol::testing

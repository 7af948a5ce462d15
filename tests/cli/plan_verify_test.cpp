// `parasol plan --verify K`: the estimator's best K candidates are simulated on the scenario's workload and the
// choice follows the simulation: the chosen layout's simulated goodput is within 5% of the best simulated goodput of
// those that meet the SLOs (2% is the tie band of the ranking), the report carries the estimate next to the
// simulation for each, the output is deterministic, and `parasol sim --verify K` simulates the same choice. On the
// default scenario (PP 2 candidates among them) and on the P/D Mooncake scenario (when its trace is present).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

// The layout labels in a plan's description ("P[tp1.pp8...]+D[...]", "prefill tp1.pp8... + decode ...").
std::vector<std::string> layouts(const std::string& text) {
  static const std::regex label("tp[0-9]+\\.pp[0-9]+\\.ep[0-9]+\\.adp[0-9]+\\.dp[0-9]+");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), label); it != std::sregex_iterator(); ++it)
    out.push_back(it->str());
  return out;
}

void check_verified(const std::string& scenario, int k, int64_t requests) {
  const std::vector<std::string> args = {"plan", scenario, "--verify", std::to_string(k), "--verify-requests",
                                         std::to_string(requests), "--json"};
  const RunResult a = run_parasol(args, 300.0);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const RunResult b = run_parasol(args, 300.0);
  EXPECT_EQ(a.out, b.out) << "the verification is deterministic";
  const auto j = nlohmann::json::parse(a.out);
  const auto& cands = j.at("verified").at("candidates");
  ASSERT_EQ(static_cast<int>(cands.size()), std::min<int>(k, static_cast<int>(j.at("ranked").size())));
  std::set<int> ranks;
  double best = 0;
  for (const auto& c : cands) {
    ranks.insert(c.at("estimator_rank").get<int>());
    ASSERT_TRUE(c.at("ok").get<bool>()) << c.dump();
    const auto& sim = c.at("simulated");
    EXPECT_GT(sim.at("requests").get<int64_t>(), 0);
    EXPECT_LE(sim.at("requests").get<int64_t>(), requests);
    EXPECT_GT(sim.at("ttft_p99_s").get<double>(), 0.0);
    EXPECT_TRUE(c.at("estimated").contains("ttft_p99_s"));
    if (sim.at("meets_slo").get<bool>())
      best = std::max(best, sim.at("goodput_rps").get<double>() / c.at("gpus").get<double>());
  }
  EXPECT_EQ(static_cast<int>(ranks.size()), static_cast<int>(cands.size())) << "each candidate once";
  const auto& chosen = cands.at(0);
  EXPECT_EQ(j.at("chosen").get<std::string>(), chosen.at("layout").get<std::string>());
  if (best > 0) {
    ASSERT_TRUE(chosen.at("simulated").at("meets_slo").get<bool>());
    EXPECT_GE(chosen.at("simulated").at("goodput_rps").get<double>() / chosen.at("gpus").get<double>(), 0.95 * best);
  }
  // sim without a plan takes the same verified choice.
  const RunResult s = run_parasol({"sim", scenario, "--verify", std::to_string(k), "--verify-requests",
                                   std::to_string(requests), "--requests", "50", "--json"},
                                  300.0);
  ASSERT_EQ(s.exit_code, 0) << s.err;
  const auto sj = nlohmann::json::parse(s.out);
  EXPECT_EQ(layouts(sj.at("run").at("plan").get<std::string>()), layouts(chosen.at("layout").get<std::string>()))
      << sj.at("run").at("plan") << " vs " << chosen.at("layout");
}

TEST(PlanVerify, DefaultScenarioChoosesTheBestSimulatedOfItsTopCandidates) {
  check_verified(std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml", 4, 500);
}

TEST(PlanVerify, DisaggregatedMooncakeScenarioIsVerifiedToo) {
  const fs::path trace =
      fs::path(PARASOL_DATA_DIR).parent_path() / "shared" / "traces" / "mooncake_fast25" / "conversation_trace.jsonl";
  if (!fs::exists(trace)) GTEST_SKIP() << "needs ../shared/traces (absent: " << trace << ")";
  check_verified(std::string(PARASOL_DATA_DIR) + "/scenarios/pd-disagg-mooncake.yaml", 2, 400);
}

TEST(PlanVerify, AVerifyCountOutOfRangeIsExitCode2) {
  const RunResult r = run_parasol({"plan", std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml", "--verify", "-1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--verify"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace parasol::testing

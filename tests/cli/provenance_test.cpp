// Every summary says where its figures come from: the build (version, commit), the scenario (path and hash of its
// bytes), the plan (layout, where it came from, GPUs, replicas), engine, fidelity, workload and seed; the terminal
// summary puts each SLO target beside its percentile with met / MISSED.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/common/hash.hpp"
#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

TEST(Provenance, SummaryJsonRecordsBuildScenarioPlanAndSeed) {
  TempDir dir;
  const std::string scenario = std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml";
  const RunResult r = run_parasol({"sim", scenario, "--seed", "7", "--json", "--out", (dir / "out").string()}, 120.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& run = j.at("run");
  EXPECT_EQ(run.at("command"), "sim");
  EXPECT_FALSE(run.at("parasol").get<std::string>().empty());
  EXPECT_FALSE(run.at("commit").get<std::string>().empty());
  EXPECT_EQ(run.at("scenario"), scenario);
  EXPECT_EQ(run.at("scenario_hash"), hex64(fnv1a64(read_all(scenario))));
  EXPECT_EQ(run.at("plan_source"), "search");
  EXPECT_GT(run.at("gpus").get<int64_t>(), 0);
  EXPECT_GE(run.at("gpus").get<int64_t>(), run.at("replicas").get<int64_t>());
  EXPECT_EQ(run.at("engine"), "vllm");
  EXPECT_EQ(run.at("fidelity"), "analytic");
  EXPECT_EQ(run.at("seed"), 7);
  // The file in --out is the same document.
  EXPECT_EQ(nlohmann::json::parse(read_all(dir / "out" / "summary.json")), j);
}

TEST(Provenance, TerminalSummaryShowsEachSloBesideItsPercentile) {
  const RunResult r = run_parasol({"sim"}, 120.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("SLO p99 <= 500 ms: "), std::string::npos) << r.out;   // ttft_p99: 500 ms
  EXPECT_NE(r.out.find("SLO p99 <= 50.0 ms: "), std::string::npos) << r.out;  // tpot_p99: 50 ms
}

TEST(Provenance, VersionNamesTheCommit) {
  const RunResult r = run_parasol({"--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("parasol 0."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("("), std::string::npos) << r.out;
}

// Every output folder says where its files come from (run.json), whatever the command.
TEST(Provenance, EveryOutFolderHasRunJson) {
  TempDir dir;
  const std::string scenario = std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml";
  const std::string cluster = std::string(PARASOL_DATA_DIR) + "/topologies/clusters/dgx-h100.yaml";
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {"plan", {"plan", scenario, "-q", "--out", (dir / "plan").string()}},
      {"sim", {"sim", scenario, "-q", "--out", (dir / "sim").string()}},
      {"describe", {"describe", scenario, "-q", "--out", (dir / "describe").string()}},
      {"netbench", {"netbench", cluster, "--colls", "all_reduce", "--max", "1MiB", "-q", "--out",
                    (dir / "netbench").string()}}};
  for (const auto& [command, args] : runs) {
    const RunResult r = run_parasol(args, 120.0);
    ASSERT_EQ(r.exit_code, 0) << command << ": " << r.err;
    const auto j = nlohmann::json::parse(read_all(dir / command / "run.json"));
    EXPECT_EQ(j.at("command"), command);
    EXPECT_FALSE(j.at("commit").get<std::string>().empty()) << command;
    ASSERT_FALSE(j.at("inputs").empty()) << command;
    const std::string input = j.at("inputs")[0].at("path");
    EXPECT_EQ(j.at("inputs")[0].at("hash"), hex64(fnv1a64(read_all(input)))) << command;
  }
}

}  // namespace
}  // namespace parasol::testing

// `parasol describe` on real files: every shipped file is described (exit 0) with the kind its folder implies, the
// JSON agrees with the files it references, plans written by `parasol plan` are described, and a scenario whose trace
// file is not on this machine is still described (traces live outside the repository).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

std::string data(const std::string& rel) {
  return (fs::path(PARASOL_DATA_DIR) / rel).string();
}

// The kind a shipped file must have, from where it lives.
std::string expected_kind(const fs::path& file) {
  const std::string rel = fs::relative(file, PARASOL_DATA_DIR).string();
  if (rel.ends_with(".plan.yaml")) return "plan";
  if (rel.rfind("scenarios/models/", 0) == 0) return "model";
  if (rel.rfind("topologies/gpus/", 0) == 0) return "gpu";
  if (rel.rfind("topologies/clusters/", 0) == 0) return "cluster";
  if (rel.rfind("scenarios/", 0) == 0 && file.parent_path() == fs::path(PARASOL_DATA_DIR) / "scenarios")
    return "scenario";
  return "";  // anything else: no expectation beyond exit 0
}

TEST(Describe, EveryShippedFileExitsZeroWithTheKindOfItsFolder) {
  const auto files = shipped_data_files();
  ASSERT_GT(files.size(), 20u);
  std::vector<std::string> args = {"describe", "--json"};
  for (const auto& f : files) args.push_back(f.string());
  RunResult r = run_parasol(args, 60.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    EXPECT_EQ(j[i]["file"], files[i].string());
    EXPECT_EQ(j[i]["exit_code"], 0) << files[i];
    const std::string kind = expected_kind(files[i]);
    if (!kind.empty()) {
      EXPECT_EQ(j[i]["kind"], kind) << files[i];
    }
    EXPECT_TRUE(j[i]["summary"].is_object()) << files[i];
  }
}

TEST(Describe, HfConfigAndOurYamlOfTheSameModelAgree) {
  RunResult r = run_parasol({"describe", "--json", data("scenarios/models/llama-3.1-8b.yaml"),
                             data("scenarios/models/hf/llama-3.1-8b.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0]["kind"], "model");
  EXPECT_EQ(j[1]["kind"], "model");
  EXPECT_EQ(j[0]["summary"], j[1]["summary"]);
}

TEST(Describe, ScenarioJsonAgreesWithItsModelAndCluster) {
  RunResult r = run_parasol({"describe", "--json", data("scenarios/default.yaml"),
                             data("scenarios/models/llama-3.1-8b.yaml"), data("topologies/clusters/dgx-h100.yaml")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0]["summary"]["model"]["name"], j[1]["name"]);
  EXPECT_EQ(j[0]["summary"]["cluster"]["name"], j[2]["name"]);
  EXPECT_EQ(j[0]["summary"]["cluster"]["bisection_bw_Bps"], j[2]["summary"]["bisection_bw_Bps"])
      << j[2]["summary"].dump();
}

TEST(Describe, ScenarioWhoseTraceIsNotOnThisMachineIsStillDescribed) {
  TempDir dir;
  write_text(dir / "s.yaml",
             "schema: parasol.scenario/1\nname: t\nmodel: " + data("scenarios/models/llama-3.1-8b.yaml") +
                 "\ncluster: " + data("topologies/clusters/dgx-h100.yaml") +
                 "\nworkload: {kind: trace, trace: {path: no-such-trace.csv, format: azure}}\n");
  RunResult r = run_parasol({"describe", (dir / "s.yaml").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("not on this machine"), std::string::npos) << r.out;
  // Other workload errors are still errors.
  write_text(dir / "b.yaml",
             "schema: parasol.scenario/1\nname: t\nmodel: " + data("scenarios/models/llama-3.1-8b.yaml") +
                 "\ncluster: " + data("topologies/clusters/dgx-h100.yaml") +
                 "\nworkload: {kind: synthetic, requests: 10, arival: {process: poisson, rate: 1}}\n");
  RunResult bad = run_parasol({"describe", (dir / "b.yaml").string()});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("workload.arival"), std::string::npos) << bad.err;
}

TEST(Describe, PlanWrittenByPlanIsDescribed) {
  TempDir dir;
  RunResult plan = run_parasol({"plan", data("scenarios/default.yaml"), "-q", "--out", dir.path().string()}, 120.0);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  ASSERT_TRUE(fs::exists(dir / "plan.yaml"));
  RunResult r = run_parasol({"describe", "--json", (dir / "plan.yaml").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[0]["kind"], "plan");
  RunResult text = run_parasol({"describe", (dir / "plan.yaml").string()});
  EXPECT_NE(text.out.find("plan for llama-3.1-8b on dgx-h100"), std::string::npos) << text.out;
}

}  // namespace
}  // namespace parasol::testing

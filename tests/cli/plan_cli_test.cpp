// `parasol plan` end to end on every shipped scenario (scenarios/*.yaml, the golden tests): exit 0, a ranked table,
// a plan.yaml that loads and saves back to identical bytes and that `parasol describe` reads, --json with the same
// ranking as the table, a Pareto CSV of mutually non-dominated rows, and identical bytes from two runs.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/plan/plan_io.hpp"

namespace parasol {
namespace {

namespace fs = std::filesystem;

struct CmdResult {
  int rc = -1;
  std::string out;
};

CmdResult run(const std::string& args) {
  CmdResult r;
  const std::string cmd = std::string(PARASOL_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string scenario(const std::string& name) {
  return std::string(PARASOL_DATA_DIR) + "/scenarios/" + name + ".yaml";
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("parasol_plan_cli_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

// Layout labels of the ranked rows of the table, in order.
std::vector<std::string> table_layouts(const std::string& out) {
  std::vector<std::string> labels;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream row(line);
    int rank = 0;
    std::string label;
    if (row >> rank >> label && rank == static_cast<int>(labels.size()) + 1 && label.find("tp") != std::string::npos)
      labels.push_back(label);
  }
  return labels;
}

// `parasol describe` comes from another part of the CLI; the plan tests use it when it is built in.
bool describe_available() {
  return run("--help").out.find("\n  describe ") != std::string::npos;
}

class PlanCli : public ::testing::TestWithParam<const char*> {};

TEST_P(PlanCli, PlansRanksAndWritesAPlanThatRoundTrips) {
  const std::string name = GetParam();
  const fs::path dir = temp_dir(name);
  const CmdResult r = run("plan " + scenario(name) + " --out " + dir.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("rank"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("chosen"), std::string::npos) << r.out;
  const auto labels = table_layouts(r.out);
  ASSERT_FALSE(labels.empty()) << r.out;

  // The plan: load, save again, identical bytes; `describe` reads it.
  const fs::path plan_file = dir / "plan.yaml";
  ASSERT_TRUE(fs::exists(plan_file));
  const std::string written = read(plan_file);
  EXPECT_EQ(plan::to_yaml(plan::load_plan_file(plan_file.string())), written);
  if (describe_available()) {
    const CmdResult d = run("describe " + plan_file.string());
    EXPECT_EQ(d.rc, 0) << d.out;
  }

  // --json: the same ranking as the table.
  const CmdResult j = run("plan " + scenario(name) + " --json");
  ASSERT_EQ(j.rc, 0) << j.out;
  const auto doc = nlohmann::json::parse(j.out);
  std::vector<std::string> json_labels;
  for (const auto& e : doc.at("ranked")) json_labels.push_back(e.at("layout").get<std::string>());
  EXPECT_EQ(json_labels, labels);
  EXPECT_EQ(doc.at("chosen").get<std::string>(), labels.front());

  // Pareto CSV rows are mutually non-dominated (goodput/GPU and tokens/s/user both maximized).
  std::istringstream csv(read(dir / "pareto.csv"));
  std::string line;
  std::getline(csv, line);
  std::vector<std::pair<double, double>> pts;
  while (std::getline(csv, line)) {
    std::vector<std::string> f;
    std::istringstream row(line);
    std::string cell;
    while (std::getline(row, cell, ',')) f.push_back(cell);
    ASSERT_GE(f.size(), 5u) << line;
    pts.emplace_back(std::stod(f[3]), std::stod(f[4]));
  }
  ASSERT_FALSE(pts.empty());
  for (size_t a = 0; a < pts.size(); ++a)
    for (size_t b = 0; b < pts.size(); ++b) {
      if (a == b) continue;
      const bool dominated = pts[a].first >= pts[b].first && pts[a].second >= pts[b].second &&
                             (pts[a].first > pts[b].first || pts[a].second > pts[b].second);
      EXPECT_FALSE(dominated) << "row " << a << " dominates row " << b;
    }

  // Determinism: a second run writes identical bytes and prints the same table.
  const fs::path dir2 = temp_dir(name + "_again");
  const CmdResult r2 = run("plan " + scenario(name) + " --out " + dir2.string());
  ASSERT_EQ(r2.rc, 0);
  EXPECT_EQ(read(dir2 / "plan.yaml"), written);
  EXPECT_EQ(read(dir2 / "pareto.csv"), read(dir / "pareto.csv"));
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

INSTANTIATE_TEST_SUITE_P(ShippedScenarios, PlanCli,
                         ::testing::Values("llama70b-chat-dgx", "llama8b-code-fleet", "deepseek-v3-ep", "mixtral-2node",
                                           "pd-disagg-mooncake"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST(PlanCliDescribe, DescribeReadsTheWrittenPlan) {
  if (!describe_available()) GTEST_SKIP() << "this build has no `parasol describe`";
  const fs::path dir = temp_dir("describe");
  ASSERT_EQ(run("plan " + scenario("llama70b-chat-dgx") + " -q --out " + dir.string()).rc, 0);
  const CmdResult d = run("describe " + (dir / "plan.yaml").string());
  EXPECT_EQ(d.rc, 0) << d.out;
  fs::remove_all(dir);
}

// A scenario whose trace file is absent plans from its declared statistics; without them it is an input error.
TEST(PlanCliWorkload, AbsentTraceFallsBackToDeclaredStats) {
  const fs::path dir = temp_dir("fallback");
  fs::create_directories(dir);
  const std::string base = std::string("schema: parasol.scenario/1\nname: fallback\n") + "model: " + PARASOL_DATA_DIR +
                           "/scenarios/models/llama-3.1-8b.yaml\n" + "cluster: " + PARASOL_DATA_DIR +
                           "/topologies/clusters/dgx-h100.yaml\n" +
                           "workload: {kind: trace, trace: {path: no-such-trace.csv, format: azure}}\n" +
                           "slo: {ttft_p99: 1 s, tpot_p99: 50 ms}\n";
  std::ofstream(dir / "with.yaml") << base
                                   << "search: {workload_stats: {rate: 4, input_mean: 1000, output_mean: 200}}\n";
  std::ofstream(dir / "without.yaml") << base;
  const CmdResult with = run("plan " + (dir / "with.yaml").string());
  EXPECT_EQ(with.rc, 0) << with.out;
  EXPECT_NE(with.out.find("declared workload_stats"), std::string::npos) << with.out;
  const CmdResult without = run("plan " + (dir / "without.yaml").string());
  EXPECT_EQ(without.rc, 2) << without.out;
  EXPECT_NE(without.out.find("no-such-trace.csv"), std::string::npos) << without.out;
  fs::remove_all(dir);
}

TEST(PlanCliErrors, MissingScenarioIsExitCode2) {
  const CmdResult r = run("plan /nonexistent/scenario.yaml");
  EXPECT_EQ(r.rc, 2) << r.out;
}

TEST(PlanCliVerbose, ListsInfeasibleLayoutsWithReasons) {
  const CmdResult r = run("plan " + scenario("llama70b-chat-dgx") + " -v");
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("infeasible layouts:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tp1.pp1.ep1.adp1.dp1:"), std::string::npos) << r.out;  // 141 GB of weights on one 80 GB GPU
}

}  // namespace
}  // namespace parasol

// `parasol exec --plan` end to end on the local communicator: each shipped exec scenario (scenarios/exec/: a tiny
// Llama with TP 2, a tiny Mixtral with TP 2 x EP 2, a tiny DeepSeek with attention-DP 2 + EP 2) serves its workload
// through core/serve on a wall clock; every request completes with its tokens, the metrics files parse and the
// profile loads as a calibration table (exec/serve_check.hpp). Bad invocations are ConfigErrors (exit code 2).
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>

#include "exec/serve_check.hpp"

namespace parasol::exec {
namespace {

struct Outcome {
  int rc = 0;
  std::string output;
};

Outcome run_command(const std::string& cmd) {
  Outcome o;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.output.append(buf.data(), n);
  int status = pclose(p);
  o.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return o;
}

std::string data(const std::string& rel) {
  return std::string(PARASOL_DATA_DIR) + "/" + rel;
}

class ExecServe : public ::testing::TestWithParam<std::string> {};

TEST_P(ExecServe, EveryRequestCompletesWithItsTokensAndTheFilesParse) {
  const std::string name = GetParam();
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("parasol_exec_serve_" + name + "_" + std::to_string(::getpid())))
          .string();
  const std::string scenario = data("scenarios/exec/" + name + ".yaml");
  Outcome o =
      run_command(std::string(PARASOL_BINARY) + " exec --plan " + data("scenarios/exec/" + name + ".plan.yaml") +
                  " --workload " + scenario + " --comm local --backend cpu --seed 3 --timeout 30 -q --out " + dir +
                  " --profile " + dir + "/profile.csv");
  ASSERT_EQ(o.rc, 0) << o.output;
  testing::check_served(dir, scenario, 3);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ExecServe,
                         ::testing::Values("tiny-llama-tp2", "tiny-mixtral-tp2-ep2", "tiny-deepseek-adp2-ep2"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

// dp 2: two TP-2 instances as 4 local ranks; both serve. A profile needs a dp-1 plan (exit 2).
TEST(ExecServe, ADp2PlanServesEveryRequestOnBothInstances) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("parasol_exec_serve_dp2_" + std::to_string(::getpid()))).string();
  const std::string scenario = data("scenarios/exec/tiny-llama-tp2-dp2.yaml");
  const std::string plan = data("scenarios/exec/tiny-llama-tp2-dp2.plan.yaml");
  Outcome o = run_command(std::string(PARASOL_BINARY) + " exec --plan " + plan + " --workload " + scenario +
                          " --comm local --backend cpu --seed 3 --timeout 30 -q --out " + dir);
  ASSERT_EQ(o.rc, 0) << o.output;
  testing::check_served(dir, scenario, 3, 2, false);
  std::filesystem::remove_all(dir);
  Outcome p = run_command(std::string(PARASOL_BINARY) + " exec --plan " + plan + " --workload " + scenario +
                          " --comm local -q --profile /tmp/never.csv");
  EXPECT_EQ(p.rc, 2) << p.output;
  EXPECT_NE(p.output.find("--profile"), std::string::npos) << p.output;
}

TEST(ExecServeErrors, APlanWithoutAWorkloadOrWithAnUnknownCommIsExitCode2) {
  const std::string plan = data("scenarios/exec/tiny-llama-tp2.plan.yaml");
  Outcome a = run_command(std::string(PARASOL_BINARY) + " exec -q --plan " + plan);
  EXPECT_EQ(a.rc, 2) << a.output;
  EXPECT_NE(a.output.find("--workload"), std::string::npos) << a.output;
  Outcome b = run_command(std::string(PARASOL_BINARY) + " exec -q --plan " + plan + " --workload " +
                          data("scenarios/exec/tiny-llama-tp2.yaml") + " --comm carrier-pigeon");
  EXPECT_EQ(b.rc, 2) << b.output;
  EXPECT_NE(b.output.find("--comm"), std::string::npos) << b.output;
}

}  // namespace
}  // namespace parasol::exec

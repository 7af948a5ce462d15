// A scenario's `faults:` in `parasol sim`: the instance holding a GPU fails and its requests are sent again (every
// request completes, requests.csv counts the retries), without retries exactly those fail with the reason; bad fault
// schedules are exit-2 errors at the key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

std::string scenario(const std::string& faults) {
  const std::string data = PARASOL_DATA_DIR;
  return "schema: parasol.scenario/1\nname: faults\nmodel: " + data + "/scenarios/models/llama-3.1-8b.yaml\ncluster: " +
         data + "/topologies/clusters/dgx-h100.yaml\n"
         "workload: {kind: synthetic, requests: 800, arrival: {process: poisson, rate: 40}, input: {dist: uniform, "
         "min: 100, max: 2000}, output: {dist: uniform, min: 10, max: 300}}\n"
         "search: {tp: [1], pp: [1], ep: [1], attn_dp: [1]}\n" +
         faults;
}

struct Result {
  RunResult run;
  nlohmann::json summary;
  int64_t retried_rows = 0, failed_rows = 0;
};

Result sim(const TempDir& dir, const std::string& faults) {
  write_text(dir.path() / "s.yaml", scenario(faults));
  Result r;
  r.run = run_parasol({"sim", (dir.path() / "s.yaml").string(), "--json", "--out", (dir.path() / "o").string()}, 60);
  if (r.run.exit_code != 0) return r;
  r.summary = nlohmann::json::parse(r.run.out);
  std::istringstream csv(read_all(dir.path() / "o" / "requests.csv"));
  std::string line;
  std::getline(csv, line);
  EXPECT_NE(line.find(",retries"), std::string::npos) << line;
  while (std::getline(csv, line)) {
    const std::string last = line.substr(line.rfind(',') + 1);
    if (std::stoi(last) > 0) ++r.retried_rows;
    if (line.find(",failed,") != std::string::npos) ++r.failed_rows;
  }
  return r;
}

TEST(FaultsCli, AFailedInstancesRequestsAreSentAgainOrFailWithTheReason) {
  TempDir a;
  const Result retried = sim(a, "faults: {retries: 1, detect_after: 1 s, events: [{at: 8 s, gpu: 3, repair_after: 5 s}]}\n");
  ASSERT_EQ(retried.run.exit_code, 0) << retried.run.err;
  EXPECT_EQ(retried.summary.at("requests").at("completed").get<int64_t>(), 800);
  EXPECT_GT(retried.retried_rows, 0);
  TempDir b;
  const Result lost = sim(b, "faults: {events: [{at: 8 s, gpu: 3}]}\n");
  ASSERT_EQ(lost.run.exit_code, 0) << lost.run.err;
  const int64_t failed = lost.summary.at("requests").at("failed").get<int64_t>();
  EXPECT_GT(failed, 0);
  EXPECT_EQ(failed, lost.failed_rows);
  EXPECT_EQ(lost.summary.at("requests").at("completed").get<int64_t>() + failed, 800);
  EXPECT_NE(read_all(b.path() / "o" / "requests.csv").find("replica 3 failed"), std::string::npos);
  // The failure and its repair are instant events on the replica's row of the trace.
  const auto trace = nlohmann::json::parse(read_all(a.path() / "o" / "trace.json"));
  std::set<std::string> marks;
  for (const auto& e : trace.at("traceEvents"))
    if (e.value("ph", "") == "i" && e.at("name").get<std::string>().rfind("replica 3 ", 0) == 0)
      marks.insert(e.at("name").get<std::string>());
  EXPECT_EQ(marks, (std::set<std::string>{"replica 3 failed", "replica 3 failure detected", "replica 3 repaired"}));
}

TEST(FaultsCli, BadFaultSchedulesAreExitCode2AtTheKey) {
  for (const auto& [faults, key] : std::vector<std::pair<std::string, std::string>>{
           {"faults: {events: [{at: 8 s, gpu: 99}]}\n", "gpu"},
           {"faults: {events: [{at: 8 s, gpu: 1, replica: 1}]}\n", "replica"},
           {"faults: {events: [{at: 8, gpu: 1}]}\n", "at"},
           {"faults: {retries: -1}\n", "retries"},
           {"faults: {random: {gpu_mtbf: 0 s, mttr: 1 h}}\n", "gpu_mtbf"},
           {"faults: {explode: true}\n", "explode"}}) {
    TempDir d;
    const Result r = sim(d, faults);
    EXPECT_EQ(r.run.exit_code, 2) << faults << r.run.err;
    EXPECT_NE(r.run.err.find(key), std::string::npos) << faults << " -> " << r.run.err;
  }
}

}  // namespace
}  // namespace parasol::testing

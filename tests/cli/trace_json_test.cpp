// trace.json as Perfetto shows it: on every track (pid, tid) the iteration slices never overlap, compared in the
// whole nanoseconds they are written in; a fleet's trace (the first replicas) covers the whole simulated span.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <sstream>
#include <set>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

int64_t ns(const nlohmann::json& us) { return std::llround(us.get<double>() * 1000.0); }

struct TraceFacts {
  int slices = 0;
  int overlaps = 0;
  std::string first_overlap;
  int64_t first_ns = INT64_MAX, last_end_ns = 0;
};

TraceFacts read_trace(const fs::path& file) {
  const auto doc = nlohmann::json::parse(read_all(file));
  std::map<std::pair<int64_t, int64_t>, std::vector<std::pair<int64_t, int64_t>>> tracks;
  TraceFacts f;
  for (const auto& e : doc.at("traceEvents")) {
    if (e.value("ph", "") != "X") continue;
    const int64_t ts = ns(e.at("ts")), dur = ns(e.at("dur"));
    tracks[{e.at("pid").get<int64_t>(), e.value("tid", int64_t{0})}].emplace_back(ts, ts + dur);
    ++f.slices;
    f.first_ns = std::min(f.first_ns, ts);
    f.last_end_ns = std::max(f.last_end_ns, ts + dur);
  }
  for (auto& [track, s] : tracks) {
    std::sort(s.begin(), s.end());
    for (size_t i = 1; i < s.size(); ++i)
      if (s[i].first < s[i - 1].second) {
        if (f.overlaps++ == 0)
          f.first_overlap = "pid " + std::to_string(track.first) + " tid " + std::to_string(track.second) + ": [" +
                            std::to_string(s[i - 1].first) + ", " + std::to_string(s[i - 1].second) + ") and [" +
                            std::to_string(s[i].first) + ", ...)";
      }
  }
  return f;
}

void expect_no_overlaps(const std::vector<std::string>& args) {
  TempDir dir;
  std::vector<std::string> a = args;
  a.insert(a.end(), {"-q", "--out", (dir / "out").string()});
  const RunResult r = run_parasol(a, 300.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const TraceFacts f = read_trace(dir / "out" / "trace.json");
  EXPECT_GT(f.slices, 100);
  EXPECT_EQ(f.overlaps, 0) << f.first_overlap;
}

TEST(TraceJson, DefaultScenarioHasNoOverlappingSlices) { expect_no_overlaps({"sim"}); }

// Pipeline parallelism puts micro-batches in flight together: each takes its own lane.
TEST(TraceJson, PipelineMicroBatchesTakeTheirOwnLanes) {
  TempDir dir;
  RunResult plan = run_parasol({"plan", std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml", "-q", "--out",
                                (dir / "p").string()},
                               120.0);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  // The default search picks a PP2 layout on this cluster; the test is about lanes either way.
  expect_no_overlaps({"sim", "--plan", (dir / "p" / "plan.yaml").string()});
}

TEST(TraceJson, CodeFleetScenarioHasNoOverlappingSlices) {
  const fs::path trace = fs::path(PARASOL_DATA_DIR).parent_path() / "shared" / "traces" / "azure_llm_2023" /
                         "AzureLLMInferenceTrace_code.csv";
  if (!fs::exists(trace)) GTEST_SKIP() << "needs ../shared/traces (absent: " << trace << ")";
  expect_no_overlaps({"sim", std::string(PARASOL_DATA_DIR) + "/scenarios/llama8b-code-fleet.yaml"});
}

// 512 replicas: the trace keeps the first replicas' iterations for the whole run instead of the first steps of all:
// it starts with the run and ends with the last request those replicas finished (requests.csv).
TEST(TraceJson, FleetTraceCoversTheWholeSimulatedSpan) {
  TempDir dir;
  const RunResult r = run_parasol({"sim", std::string(PARASOL_DATA_DIR) + "/scenarios/bench/sim-fleet-512replica.yaml",
                                   "--requests", "30000", "--json", "--out", (dir / "out").string()},
                                  300.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto summary = nlohmann::json::parse(r.out);
  const double span_s = summary.at("duration_s").get<double>();
  const TraceFacts f = read_trace(dir / "out" / "trace.json");
  EXPECT_EQ(f.overlaps, 0) << f.first_overlap;
  EXPECT_LT(f.first_ns, 1e9 * 0.05 * span_s);
  // The last finish among requests served by the traced replicas (the default --trace-replicas 8).
  std::istringstream csv(read_all(dir / "out" / "requests.csv"));
  std::string line;
  std::getline(csv, line);  // id,outcome,replica,prefill_replica,arrival_s,first_scheduled_s,first_token_s,finish_s,...
  double last_finish_s = 0;
  int rows = 0;
  while (std::getline(csv, line)) {
    std::vector<std::string> col;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',') && col.size() < 8;) col.push_back(c);
    ASSERT_EQ(col.size(), 8u) << line;
    if (col[1] != "completed" || std::stoi(col[2]) >= 8) continue;
    last_finish_s = std::max(last_finish_s, std::stod(col[7]));
    ++rows;
  }
  ASSERT_GT(rows, 0);
  EXPECT_GT(last_finish_s, 0.5 * span_s) << "the traced replicas serve until late in the run";
  EXPECT_NEAR(static_cast<double>(f.last_end_ns), 1e9 * last_finish_s, 1e3) << "span " << span_s << " s";
}

// --trace-replicas chooses how many replicas the trace shows (the first N; 0: all).
TEST(TraceJson, TraceReplicasChoosesTheReplicasShown) {
  for (const std::string n : {"1", "0"}) {
    TempDir dir;
    const RunResult r =
        run_parasol({"sim", "--json", "--trace-replicas", n, "--out", (dir / "out").string()}, 120.0);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto replicas = nlohmann::json::parse(r.out).at("run").at("replicas").get<size_t>();
    ASSERT_GT(replicas, 1u);  // the default scenario's pick has several, so "1" and "0" differ
    const auto doc = nlohmann::json::parse(read_all(dir / "out" / "trace.json"));
    std::set<int64_t> pids;
    for (const auto& e : doc.at("traceEvents"))
      if (e.value("ph", "") == "X") pids.insert(e.at("pid").get<int64_t>());
    EXPECT_EQ(pids.size(), n == "1" ? 1u : replicas) << "--trace-replicas " << n;
  }
}

}  // namespace
}  // namespace parasol::testing

// End-to-end properties of core/serve driven by the reference event loop: conservation (arrived = completed +
// rejected, KV all free), token totals of replayed real traces equal the traces' own totals, and determinism.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/serve/event_loop.hpp"

namespace parasol::serve {
namespace {

const std::string kTraces = PARASOL_DATA_DIR "/../shared/traces";

struct RunOutput {
  Summary summary;
  std::string csv, json, trace;
  EventLoopResult result;
  std::vector<SchedulerStats> stats;
  int64_t kv_used = 0;
  int64_t generated = 0, input = 0;
};

RunOutput serve(RequestSource& src, int replicas, SchedulerConfig cfg, const std::string& router_name,
                double base_s = 2e-3, double prefill_token_s = 1e-5, double decode_seq_s = 5e-5, int pp = 1) {
  std::vector<Scheduler> scheds;
  for (int r = 0; r < replicas; ++r) scheds.emplace_back(cfg, r);
  auto router = make_router(router_name);
  LinearStepRunner runner(base_s, prefill_token_s, decode_seq_s);
  std::ostringstream csv, trace;
  MetricsConfig mc;
  mc.replicas = replicas;
  mc.requests_csv = &csv;
  mc.trace_json = &trace;
  mc.trace_max_steps = 2000;
  mc.slo.ttft_s = 0.5;
  mc.slo.tpot_s = 0.05;
  MetricsCollector metrics(mc);
  EventLoopOptions opt;
  opt.pp = pp;
  RunOutput out;
  out.result = run_event_loop(src, *router, scheds, runner, metrics, opt);
  out.summary = metrics.finish(out.result.end_s);
  std::ostringstream json;
  MetricsCollector::write_summary_json(out.summary, json);
  out.csv = csv.str();
  out.json = json.str();
  out.trace = trace.str();
  for (auto& s : scheds) {
    out.stats.push_back(s.stats());
    out.kv_used += s.kv().used_blocks();
  }
  return out;
}

WorkloadSpec synthetic(int64_t n, double rate) {
  WorkloadSpec w;
  w.arrival.kind = ArrivalKind::kGamma;
  w.arrival.rate_per_s = rate;
  w.arrival.cv = 2.0;
  w.input.kind = LengthKind::kLognormal;
  w.input.mean = 800;
  w.input.cv = 1.2;
  w.input.max = 20000;
  w.output.kind = LengthKind::kLognormal;
  w.output.mean = 150;
  w.output.cv = 1.0;
  w.output.max = 4000;
  w.max_requests = n;
  return w;
}

TEST(ServeLoop, ConservationUnderOverloadWithRejectionsAndPreemptions) {
  SchedulerConfig cfg;
  cfg.kv_blocks = 500;  // 8k tokens: long prompts are rejected, the rest preempt each other
  auto src = make_source(synthetic(3000, 40), 11);
  RunOutput out = serve(*src, 3, cfg, "least_outstanding_tokens");
  const Summary& s = out.summary;
  EXPECT_EQ(s.arrived, 3000);
  EXPECT_EQ(s.arrived, s.completed + s.rejected + s.failed);
  EXPECT_GT(s.rejected, 0);
  EXPECT_GT(s.preemptions, 0);
  int64_t reasons = 0;
  for (const auto& [why, n] : s.reasons) {
    EXPECT_FALSE(why.empty());
    reasons += n;
  }
  EXPECT_EQ(reasons, s.rejected + s.failed);
  EXPECT_EQ(out.kv_used, 0);
  // One CSV line per request, plus the header.
  EXPECT_EQ(std::count(out.csv.begin(), out.csv.end(), '\n'), 3001);
  int64_t completed = 0;
  for (const auto& st : out.stats) completed += st.completed;
  EXPECT_EQ(completed, s.completed);
}

TEST(ServeLoop, PipelineParallelServesEverything) {
  SchedulerConfig cfg;
  cfg.kv_blocks = 4000;
  auto src = make_source(synthetic(500, 20), 3);
  RunOutput out = serve(*src, 2, cfg, "round_robin", 2e-3, 1e-5, 5e-5, /*pp=*/4);
  EXPECT_EQ(out.summary.arrived, out.summary.completed + out.summary.rejected);
  EXPECT_EQ(out.kv_used, 0);
}

struct TraceTotals {
  int64_t requests = 0, input = 0, output = 0;
};

// Independent totals: plain text parsing, nothing shared with the readers under test.
TraceTotals csv_totals(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  TraceTotals t;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto a = line.find(','), b = line.find(',', a + 1);
    t.input += std::stoll(line.substr(a + 1, b - a - 1));
    t.output += std::stoll(line.substr(b + 1));
    ++t.requests;
  }
  return t;
}

TraceTotals jsonl_totals(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  TraceTotals t;
  auto value = [&](const std::string& key) {
    const auto p = line.find("\"" + key + "\":");
    return std::stoll(line.substr(p + key.size() + 3));
  };
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    t.input += value("input_length");
    t.output += value("output_length");
    ++t.requests;
  }
  return t;
}

void check_replay(const std::string& file, TraceFormat format, bool prefix_caching) {
  const std::string path = kTraces + "/" + file;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " absent";
  const TraceTotals want = format == TraceFormat::kMooncake ? jsonl_totals(path) : csv_totals(path);
  WorkloadSpec w;
  w.kind = WorkloadSpec::Kind::kTrace;
  w.trace.path = path;
  w.trace.format = format;
  auto src = make_source(w, 1);
  SchedulerConfig cfg;
  cfg.kv_blocks = 200000;  // 3.2M tokens: nothing is rejected or preempted
  cfg.prefix_caching = prefix_caching;
  // Steps fast enough to keep pace with the trace, long enough to batch (few iterations: a fast test).
  RunOutput out = serve(*src, 2, cfg, "least_outstanding_tokens", 0.05, 2e-7, 1e-5);
  EXPECT_EQ(out.summary.arrived, want.requests);
  EXPECT_EQ(out.summary.completed, want.requests);
  EXPECT_EQ(out.summary.input_tokens, want.input);
  EXPECT_EQ(out.summary.output_tokens, want.output);
  EXPECT_EQ(out.kv_used, 0);
  if (prefix_caching) {
    EXPECT_GT(out.summary.prefix_hit_rate, 0.1);
    int64_t prefill = 0;
    for (const auto& st : out.stats) prefill += st.prefill_tokens;
    // Every prompt token is either computed or served from the cache (no preemption at this KV size).
    EXPECT_EQ(out.summary.preemptions, 0);
    EXPECT_EQ(prefill + out.summary.prefix_hit_tokens, want.input);
  }
}

TEST(ServeLoop, AzureCodeReplayConservesTokenTotals) {
  check_replay("azure_llm_2023/AzureLLMInferenceTrace_code.csv", TraceFormat::kAzure, false);
}
TEST(ServeLoop, AzureConvReplayConservesTokenTotals) {
  check_replay("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", TraceFormat::kAzure, false);
}
TEST(ServeLoop, MooncakeConversationReplayConservesTokenTotalsAndHitsPrefixCache) {
  check_replay("mooncake_fast25/conversation_trace.jsonl", TraceFormat::kMooncake, true);
}

TEST(ServeLoop, TwoRunsGiveIdenticalBytes) {
  SchedulerConfig cfg;
  cfg.kv_blocks = 3000;
  cfg.prefix_caching = true;
  auto a_src = make_source(synthetic(1500, 30), 42);
  auto b_src = make_source(synthetic(1500, 30), 42);
  RunOutput a = serve(*a_src, 4, cfg, "least_outstanding_tokens");
  RunOutput b = serve(*b_src, 4, cfg, "least_outstanding_tokens");
  EXPECT_FALSE(a.csv.empty());
  EXPECT_EQ(a.csv, b.csv);
  EXPECT_EQ(a.json, b.json);
  EXPECT_EQ(a.trace, b.trace);
  auto c_src = make_source(synthetic(1500, 30), 43);
  RunOutput c = serve(*c_src, 4, cfg, "least_outstanding_tokens");
  EXPECT_NE(a.csv, c.csv);  // the seed matters
}

}  // namespace
}  // namespace parasol::serve

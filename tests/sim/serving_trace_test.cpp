// Trace replay through the serving simulation: every request of the Azure conversation, Azure code and Mooncake
// traces arrives once and leaves once (arrived = completed + rejected, each rejection with a reason), the token totals
// in the outputs equal the trace's own totals, and every KV block is free at the end. The traces live outside the
// repository (<repo>/../shared/traces); a test whose trace is absent is skipped. One simulation per TEST.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "core/plan/placement.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/workload.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

const std::string kData = PARASOL_DATA_DIR;

struct Totals {
  int64_t n = 0, input = 0, output = 0;
};

// The trace's own totals, read with the same reader the simulation uses.
Totals trace_totals(const serve::TraceSpec& t) {
  Totals x;
  auto src = serve::open_trace(t);
  while (auto r = src->next()) {
    ++x.n;
    x.input += r->input_tokens;
    x.output += r->output_tokens;
  }
  return x;
}

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (char c : line) {
    if (c == '"') quoted = !quoted;
    else if (c == ',' && !quoted) out.emplace_back();
    else out.back() += c;
  }
  return out;
}

void replay(const std::string& trace_file, serve::TraceFormat format, const std::string& model,
            const std::string& cluster_file, int dp, bool prefix_caching) {
  const std::string path = kData + "/../shared/traces/" + trace_file;
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " absent";
  const spec::Model m = spec::load_model_file(kData + "/scenarios/models/" + model);
  const spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/" + cluster_file);
  plan::ParallelConfig pc;
  pc.dp = dp;
  const auto made = plan::make_plan(m, cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok);
  const serve::TraceSpec ts = serve::trace_spec(path, format);
  const Totals want = trace_totals(ts);
  ASSERT_GT(want.n, 1000);

  serve::WorkloadSpec w;
  w.kind = serve::WorkloadSpec::Kind::kTrace;
  w.trace = ts;
  auto src = serve::make_source(w, 1);
  std::ostringstream csv;
  serve::MetricsConfig mc;
  mc.replicas = dp;
  mc.requests_csv = &csv;
  serve::MetricsCollector metrics(mc);
  ServeOptions o;
  for (const auto& pool : made.plan.pools) {
    o.schedulers.push_back(serve::SchedulerConfig::from_pool(pool));
    o.schedulers.back().policy = serve::BatchPolicy::kPrefillFirst;  // vLLM-like
    o.schedulers.back().prefix_caching = prefix_caching;
  }
  const ServeResult res = simulate_serving(made.plan, cluster, *src, metrics, o);
  const serve::Summary sum = metrics.finish(res.end_s);

  // Every request once: arrived = completed + rejected, nothing failed, each rejection with its reason.
  EXPECT_EQ(sum.arrived, want.n);
  EXPECT_EQ(sum.arrived, sum.completed + sum.rejected);
  EXPECT_EQ(sum.failed, 0);
  std::istringstream in(csv.str());
  std::string line;
  std::getline(in, line);
  const auto head = split(line);
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < head.size(); ++i) col[head[i]] = i;
  std::vector<bool> seen(static_cast<size_t>(want.n), false);
  Totals rows, completed;
  int64_t generated = 0, itl = 0;
  while (std::getline(in, line)) {
    const auto f = split(line);
    ASSERT_EQ(f.size(), head.size()) << line;
    const int64_t id = std::stoll(f[col["id"]]);
    ASSERT_TRUE(id >= 0 && id < want.n && !seen[static_cast<size_t>(id)]) << "id " << id;
    seen[static_cast<size_t>(id)] = true;
    const int64_t input = std::stoll(f[col["input_tokens"]]), output = std::stoll(f[col["output_tokens"]]);
    const int64_t gen = std::stoll(f[col["generated_tokens"]]);
    ++rows.n;
    rows.input += input;
    rows.output += output;
    if (f[col["outcome"]] == "completed") {
      EXPECT_EQ(gen, output) << "request " << id;
      ++completed.n;
      completed.input += input;
      generated += gen;
      itl += std::max<int64_t>(0, gen - 1);
    } else {
      EXPECT_EQ(f[col["outcome"]], "rejected");
      EXPECT_FALSE(f[col["reason"]].empty()) << "request " << id;
    }
  }
  // Token totals: the outputs carry exactly the trace's tokens.
  EXPECT_EQ(rows.n, want.n);
  EXPECT_EQ(rows.input, want.input);
  EXPECT_EQ(rows.output, want.output);
  EXPECT_EQ(completed.n, sum.completed);
  EXPECT_EQ(sum.input_tokens, completed.input);
  EXPECT_EQ(sum.output_tokens, generated);
  EXPECT_EQ(sum.itl_s.count, itl);
  if (sum.rejected == 0) {
    EXPECT_EQ(sum.input_tokens, want.input);
    EXPECT_EQ(sum.output_tokens, want.output);
  }
  // Every KV block free, nothing left on any replica; the scheduler saw each request once.
  ASSERT_EQ(res.replica_end.size(), static_cast<size_t>(dp));
  int64_t added = 0;
  for (const auto& e : res.replica_end) {
    EXPECT_EQ(e.kv_used_blocks, 0);
    EXPECT_EQ(e.outstanding_requests, 0);
    added += e.stats.added;
  }
  EXPECT_EQ(added, want.n);
}

TEST(ServingTrace, AzureConversationOnOneA100ConservesRequestsTokensAndKv) {
  replay("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", serve::TraceFormat::kAzure, "llama-2-7b.yaml",
         "a100-1gpu.yaml", 1, false);
}

TEST(ServingTrace, AzureCodeOnOneA100ConservesRequestsTokensAndKv) {
  replay("azure_llm_2023/AzureLLMInferenceTrace_code.csv", serve::TraceFormat::kAzure, "llama-2-7b.yaml",
         "a100-1gpu.yaml", 1, false);
}

// Long prompts with prefix hashes: eight Llama-3.1-8B replicas with prefix caching.
TEST(ServingTrace, MooncakeConversationWithPrefixCachingConservesRequestsTokensAndKv) {
  replay("mooncake_fast25/conversation_trace.jsonl", serve::TraceFormat::kMooncake, "llama-3.1-8b.yaml",
         "dgx-h100.yaml", 8, true);
}

}  // namespace
}  // namespace parasol::sim

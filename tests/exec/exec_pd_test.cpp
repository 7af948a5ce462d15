// Prefill/decode disaggregation on the executor: a TP-2 prefill instance and a TP-2 decode instance (4 local ranks)
// serve the workload through the one serving loop; each finished prefill's KV moves rank by rank to the decode
// instance, which continues from it. The greedy tokens of every request equal those of the same workload served by
// one mixed TP-2 instance (same weights, fp32): a KV shard lost, misplaced or stale on the way would change them.
#include <gtest/gtest.h>

#include "core/plan/plan_io.hpp"
#include "core/serve/metrics.hpp"
#include "core/spec/scenario.hpp"
#include "exec/generate.hpp"
#include "exec/serving.hpp"

namespace parasol::exec {
namespace {

struct Served {
  ServeResult result;
  serve::Summary summary;
  std::vector<serve::RequestRecord> records;
};

Served serve_plan(const std::string& plan_file, const serve::WorkloadSpec& ws, uint64_t seed) {
  const plan::Plan plan = plan::load_plan_file(plan_file);
  std::vector<ServeConfig> configs;
  int world = 0;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    ServeConfig c = make_serve_config(plan, static_cast<int>(p), 256);
    c.seed = seed;
    configs.push_back(c);
    world += plan.pools[p].config.instance_size() * plan.pools[p].config.dp;
  }
  auto src = serve::make_source(ws, seed);
  serve::MetricsCollector metrics(serve::MetricsConfig{});
  SyntheticWeights weights(seed);
  Served run;
  serve::LoopOptions lo;
  lo.on_record = [&](const serve::RequestRecord& r) { run.records.push_back(r); };
  run_local(world, 30.0, [&](int rank, Communicator& comm) {
    ServeResult r = serve_rank(plan, weights, comm, configs, rank == 0 ? src.get() : nullptr,
                               rank == 0 ? &metrics : nullptr, lo);
    if (rank == 0) run.result = std::move(r);
  });
  run.summary = metrics.finish(run.result.end_s);
  return run;
}

TEST(ExecPd, TheDecodeInstanceContinuesFromTheMovedKvAsOneInstanceWould) {
  const std::string dir = std::string(PARASOL_DATA_DIR) + "/scenarios/exec/";
  const spec::Scenario sc = spec::load_scenario_file(dir + "tiny-llama-pd.yaml");
  serve::WorkloadSpec ws = serve::load_workload(*sc.workload);
  const Served pd = serve_plan(dir + "tiny-llama-pd.plan.yaml", ws, 7);
  const Served mixed = serve_plan(dir + "tiny-llama-tp2.plan.yaml", ws, 7);
  ASSERT_EQ(pd.summary.completed, pd.summary.arrived);
  ASSERT_EQ(mixed.summary.completed, mixed.summary.arrived);
  int64_t handed_off = 0;
  for (const serve::RequestRecord& r : pd.records) {
    if (r.output_tokens > 1) {
      ++handed_off;
      EXPECT_EQ(r.replica, 1) << "request " << r.id << " finished on the decode instance";
      EXPECT_EQ(r.prefill_replica, 0) << r.id;
    }
  }
  EXPECT_GT(handed_off, 0);
  EXPECT_EQ(pd.result.kv_transfers, handed_off);
  ASSERT_EQ(pd.result.outputs.size(), mixed.result.outputs.size());
  for (const auto& [id, tokens] : mixed.result.outputs) {
    auto it = pd.result.outputs.find(id);
    ASSERT_NE(it, pd.result.outputs.end()) << id;
    EXPECT_EQ(it->second, tokens) << "request " << id;
    EXPECT_FALSE(tokens.empty());
  }
}

}  // namespace
}  // namespace parasol::exec

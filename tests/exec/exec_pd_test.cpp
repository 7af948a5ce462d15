// Prefill/decode disaggregation on the executor: a TP-2 prefill instance and a TP-2 decode instance (4 local ranks)
// serve the workload through the one serving loop; each finished prefill's KV moves rank by rank to the decode
// instance, which continues from it. The greedy tokens of every request equal those of the same workload served by
// one mixed TP-2 instance (same weights, fp32): a KV shard lost, misplaced or stale on the way would change them.
#include <gtest/gtest.h>

#include "core/plan/plan_io.hpp"
#include "core/serve/metrics.hpp"
#include "core/spec/scenario.hpp"
#include "exec/serve_local.hpp"

namespace parasol::exec {
namespace {

using testing::Served;

Served serve_plan(const std::string& plan_file, const serve::WorkloadSpec& ws, uint64_t seed) {
  const plan::Plan plan = plan::load_plan_file(plan_file);
  std::vector<ServeConfig> configs;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    ServeConfig c = make_serve_config(plan, static_cast<int>(p), 256);
    c.seed = seed;
    configs.push_back(c);
  }
  return testing::serve_local(plan, configs, ws, seed);
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

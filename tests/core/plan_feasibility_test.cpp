// Feasibility and placement: the facts (70B at TP1/TP2 on H100, DeepSeek-V3 on 8 x H100 vs 8 x H200, TP16 over
// two nodes), divisibility, uneven stages, and the memory identity.
#include <gtest/gtest.h>

#include <set>

#include "core/plan/feasibility.hpp"
#include "core/plan/placement.hpp"
#include "plan_fixtures.hpp"

namespace parasol::plan {
namespace {

using testing::shipped_gpu;
using testing::shipped_model;
using testing::test_cluster;

bool mentions(const Feasibility& f, const std::string& word) {
  for (const auto& r : f.reasons)
    if (r.find(word) != std::string::npos) return true;
  return false;
}

TEST(PlanFeasibility, Llama70bBf16InfeasibleAtTp1OnH100ForMemoryFeasibleAtTp2) {
  const auto m = shipped_model("llama-3.1-70b");
  const auto gpu = shipped_gpu("h100-sxm");
  ParallelConfig c;
  auto r1 = check_feasibility(m, gpu, c);
  EXPECT_FALSE(r1.feasibility.ok);
  EXPECT_TRUE(mentions(r1.feasibility, "memory"));
  EXPECT_GT(r1.memory.weight_bytes, 140e9);  // ~141 GB of bf16 weights
  c.tp = 2;
  auto r2 = check_feasibility(m, gpu, c);
  EXPECT_TRUE(r2.feasibility.ok) << (r2.feasibility.reasons.empty() ? "" : r2.feasibility.reasons[0]);
  EXPECT_GT(r2.memory.kv_tokens, 0);
  EXPECT_EQ(r2.memory.kv_tokens % r2.memory.kv_block_tokens, 0);
}

TEST(PlanFeasibility, MemoryBudgetAddsUpToUsable) {
  const auto m = shipped_model("llama-3.1-70b");
  const auto gpu = shipped_gpu("h100-sxm");
  ParallelConfig c;
  c.tp = 4;
  auto r = check_feasibility(m, gpu, c);
  ASSERT_TRUE(r.feasibility.ok);
  const auto& b = r.memory;
  EXPECT_NEAR(b.weight_bytes + b.activation_bytes + b.reserve_bytes + b.kv_bytes, b.usable_bytes, 1.0);
  const double per_token = rank_kv_bytes_per_token(m, 4, m.kv_dtype, {0, m.layers});
  EXPECT_DOUBLE_EQ(per_token, 80.0 * 2 * 2 * 128 * 2);  // 80 layers x K,V x 2 heads/rank x 128 x bf16
  EXPECT_LE(static_cast<double>(b.kv_tokens) * per_token, b.kv_bytes);
  EXPECT_GT(static_cast<double>(b.kv_tokens + b.kv_block_tokens) * per_token, b.kv_bytes);
}

TEST(PlanFeasibility, ShardedWeightsSumToTheModelsWeightBytes) {
  const auto m = shipped_model("llama-3.1-8b");
  const double whole = rank_weight_bytes(m, ParallelConfig{}, DType::kBf16, {0, m.layers}, true, true);
  EXPECT_NEAR(whole, spec::weight_bytes(m, DType::kBf16), 1e-6 * whole);
  ParallelConfig c;
  c.tp = 8;  // 8 kv heads: no replication, so the shards add up to the whole
  EXPECT_NEAR(8 * rank_weight_bytes(m, c, DType::kBf16, {0, m.layers}, true, true), whole, 1e-3 * whole);
}

TEST(PlanFeasibility, DeepSeekV3Fp8InfeasibleOn8H100FeasibleOn8H200) {
  const auto m = shipped_model("deepseek-v3");
  ASSERT_EQ(m.weight_dtype, DType::kFp8);
  bool any_h100 = false, any_h200 = false;
  for (const auto& [tp, ep, adp] : {std::tuple{8, 1, 1}, {8, 8, 1}, {1, 8, 8}, {2, 8, 4}, {4, 8, 2}}) {
    ParallelConfig c;
    c.tp = tp, c.ep = ep, c.attn_dp = adp;
    auto h100 = make_plan(m, test_cluster(shipped_gpu("h100-sxm"), 1, 8), "", c);
    auto h200 = make_plan(m, test_cluster(shipped_gpu("h200-sxm"), 1, 8), "", c);
    EXPECT_FALSE(h100.feasibility.ok) << c.label();
    EXPECT_TRUE(mentions(h100.feasibility, "memory")) << c.label();
    any_h100 |= h100.feasibility.ok;
    any_h200 |= h200.feasibility.ok;
  }
  EXPECT_FALSE(any_h100);
  EXPECT_TRUE(any_h200);
  ParallelConfig tp8;
  tp8.tp = 8;
  EXPECT_TRUE(make_plan(m, test_cluster(shipped_gpu("h200-sxm"), 1, 8), "", tp8).feasibility.ok);
}

TEST(PlanFeasibility, Tp16AcrossTwoNodesRejectedUnlessAllowed) {
  const auto m = shipped_model("llama-3.1-70b");
  const auto cluster = test_cluster(shipped_gpu("h100-sxm"), 2, 8);
  ParallelConfig c;
  c.tp = 16;  // 64 heads, 8 kv heads: kv replicated 2x, divisible
  auto rejected = make_plan(m, cluster, "", c);
  EXPECT_FALSE(rejected.feasibility.ok);
  EXPECT_TRUE(mentions(rejected.feasibility, "scale-up domain"));
  PlanOptions o;
  o.allow_cross_domain_tp = true;
  auto allowed = make_plan(m, cluster, "", c, o);
  EXPECT_TRUE(allowed.feasibility.ok);
  ASSERT_EQ(allowed.plan.pools[0].placement.size(), 1u);
  EXPECT_EQ(std::set<int>(allowed.plan.pools[0].placement[0].begin(), allowed.plan.pools[0].placement[0].end()).size(),
            16u);
}

TEST(PlanFeasibility, DivisibilityAndKvReplication) {
  auto m = shipped_model("llama-3.1-70b");
  const auto gpu = shipped_gpu("h200-sxm");
  ParallelConfig c;
  c.tp = 3;
  EXPECT_FALSE(check_feasibility(m, gpu, c).feasibility.ok);
  c.tp = 16;
  auto r = check_feasibility(m, gpu, c);
  EXPECT_TRUE(mentions(r.feasibility, "replicated 2x"));
  EXPECT_EQ(shard_heads(m, 16).kv_heads, 1);
  EXPECT_EQ(shard_heads(m, 16).kv_replicas, 2);
  c = ParallelConfig{};
  c.ep = 2;
  EXPECT_FALSE(check_feasibility(m, gpu, c).feasibility.ok);  // ep needs an MoE model
  c.tp = 4, c.ep = 3;
  EXPECT_FALSE(c.invalid_reason().empty());
}

TEST(PlanFeasibility, UnevenLayerSplitIsAllowedAndReported) {
  const auto m = shipped_model("llama-3.1-70b");  // 80 layers
  auto split = split_layers(80, 3);
  ASSERT_EQ(split.size(), 3u);
  EXPECT_EQ(split[0], (std::pair<int64_t, int64_t>{0, 27}));
  EXPECT_EQ(split[2].second, 80);
  ParallelConfig c;
  c.tp = 2, c.pp = 3;
  auto r = check_feasibility(m, shipped_gpu("h100-sxm"), c);
  EXPECT_TRUE(r.feasibility.ok);
  EXPECT_TRUE(mentions(r.feasibility, "uneven"));
}

TEST(PlanPlacement, TpGroupsInsideDomainsStagesOnNeighbourNodesInstancesPacked) {
  const auto m = shipped_model("llama-3.1-8b");
  const auto cluster = test_cluster(shipped_gpu("h100-sxm"), 4, 8);
  ParallelConfig c;
  c.tp = 4, c.pp = 4, c.dp = 2;
  auto made = make_plan(m, cluster, "", c);
  ASSERT_TRUE(made.feasibility.ok);
  const auto& pl = made.plan.pools[0].placement;
  ASSERT_EQ(pl.size(), 2u);
  std::set<int> all;
  for (const auto& inst : pl) {
    ASSERT_EQ(inst.size(), 16u);
    for (int s = 0; s < 4; ++s) {
      const int d = cluster.domain_of(inst[static_cast<size_t>(c.rank(s, 0, 0))]);
      for (int t = 0; t < 4; ++t) EXPECT_EQ(cluster.domain_of(inst[static_cast<size_t>(c.rank(s, 0, t))]), d);
      if (s > 0) {  // the next stage is on the same or the next node
        const int prev = cluster.node_of(inst[static_cast<size_t>(c.rank(s - 1, 0, 0))]);
        EXPECT_LE(cluster.node_of(inst[static_cast<size_t>(c.rank(s, 0, 0))]) - prev, 1);
      }
    }
    all.insert(inst.begin(), inst.end());
  }
  EXPECT_EQ(all.size(), 32u);  // no GPU used twice
  EXPECT_EQ(make_plan(m, cluster, "", c).plan.pools[0].placement, pl);  // deterministic
  c.dp = 3;  // 48 GPUs > 32
  EXPECT_FALSE(make_plan(m, cluster, "", c).feasibility.ok);
}

TEST(PlanPlacement, DisaggregatedPoolsUseDisjointGpus) {
  const auto m = shipped_model("llama-3.1-8b");
  const auto cluster = test_cluster(shipped_gpu("h100-sxm"), 2, 8);
  DisaggConfig dc;
  dc.prefill.tp = 2, dc.prefill.dp = 2;
  dc.decode.tp = 4, dc.decode.dp = 3;
  auto made = make_plan(m, cluster, "", dc);
  ASSERT_TRUE(made.feasibility.ok);
  ASSERT_TRUE(made.plan.disaggregated());
  std::set<int> used;
  size_t n = 0;
  for (const auto& pool : made.plan.pools)
    for (const auto& inst : pool.placement) {
      used.insert(inst.begin(), inst.end());
      n += inst.size();
    }
  EXPECT_EQ(used.size(), n);
  EXPECT_EQ(n, 16u);
}

TEST(PlanConfig, LabelRoundTripsAndBadLabelsAreRejected) {
  ParallelConfig c;
  c.tp = 8, c.pp = 2, c.ep = 4, c.attn_dp = 2, c.dp = 3;
  EXPECT_EQ(c.label(), "tp8.pp2.ep4.adp2.dp3");
  EXPECT_EQ(ParallelConfig::parse_label(c.label()), c);
  EXPECT_FALSE(ParallelConfig::parse_label("tp8.pp2"));
  EXPECT_FALSE(ParallelConfig::parse_label("tp0.pp1.ep1.adp1.dp1"));
  EXPECT_FALSE(ParallelConfig::parse_label("tp8.pp2.ep4.adp2.dp3x"));
}

}  // namespace
}  // namespace parasol::plan

// The search's space and its cheap costing: the default enumeration is exactly the set of legal combinations
// (counted here independently, by divisors), it reaches the stages the old cap left out, the scenario's lists still
// constrain it; and the one-rank costing of symmetric stages gives the all-ranks numbers bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <tuple>

#include "core/plan/build_step.hpp"
#include "core/search/goodput.hpp"
#include "core/search/search.hpp"
#include "core/spec/cluster.hpp"
#include "plan_fixtures.hpp"

namespace parasol {
namespace {

using plan::ParallelConfig;
using search::GroupBatch;
using search::PoolRole;

using testing::layout;

// Every rank of the step runs rank 0's program (up to op names and which group of a size it talks to).
bool all_ranks_alike(const plan::Step& s) {
  const auto& r0 = s.ranks[0].ops;
  for (const auto& r : s.ranks) {
    if (r.ops.size() != r0.size()) return false;
    for (size_t i = 0; i < r0.size(); ++i) {
      const plan::Op &x = r0[i], &y = r.ops[i];
      if (x.kind != y.kind || x.m != y.m || x.n != y.n || x.k != y.k || x.tokens != y.tokens || x.flops != y.flops ||
          x.bytes != y.bytes || x.comm_bytes != y.comm_bytes || x.q_lens != y.q_lens || x.ctx_lens != y.ctx_lens ||
          x.expert_tokens != y.expert_tokens || x.a2a_send_bytes != y.a2a_send_bytes)
        return false;
    }
  }
  return true;
}

void expect_same(const search::LayerTimes& a, const search::LayerTimes& b) {
  EXPECT_EQ(a.dense_s, b.dense_s);
  EXPECT_EQ(a.moe_s, b.moe_s);
  EXPECT_EQ(a.ends_s, b.ends_s);
  EXPECT_EQ(a.tokens, b.tokens);
}

struct TimerCase {
  const char* model;
  ParallelConfig config;  // pp > 1: uneven splits, compared through a PoolModel
};

TEST(SearchEstimator, OneRankStageCostEqualsAllRanksBitForBit) {
  const auto gpu = testing::shipped_gpu("h100-sxm");
  const auto cl = testing::test_cluster(gpu, 4, 8);
  const std::vector<TimerCase> cases = {
      {"llama-3.1-8b", layout(4, 1)},           // dense TP
      {"llama-3.1-8b", layout(2, 3)},           // uneven PP (32 layers over 3 stages)
      {"tiny-mixtral", layout(2, 1, 2)},        // EP inside TP
      {"tiny-deepseek", layout(2, 1, 8, 4)},    // attention-DP + EP, all-to-all form
      {"tiny-deepseek", layout(1, 2, 8, 8)},    // same, uneven PP (3 layers over 2 stages)
      {"tiny-deepseek", layout(4, 1, 8, 8)},    // attention-DP + EP, gather form (expert TP 4)
      {"deepseek-v3", layout(8, 1, 32, 4)},     // MLA, all-to-all form over 32 ranks
      {"deepseek-v3", layout(8, 1, 8, 4)},      // MLA, gather form
  };
  const std::vector<GroupBatch> batches = {
      {1, 1100, 0, 0},   {3, 1100, 0, 0},   {8, 1100, 0, 0},   {64, 1100, 0, 0}, {256, 700, 0, 0},
      {0, 0, 256, 1000}, {0, 0, 1000, 1000}, {0, 0, 4096, 1000}, {5, 1100, 27, 1000}, {32, 1100, 992, 1000},
  };
  plan::PlanOptions opt;
  for (const auto& k : cases) {
    SCOPED_TRACE(std::string(k.model) + " " + k.config.label());
    const auto m = testing::shipped_model(k.model);
    cost::LinkTables tables(cl);
    search::StageTimer one(m, cl, "", k.config, opt, tables);
    search::StageTimer all(m, cl, "", k.config, opt);
    all.set_one_rank(false);
    ParallelConfig stage = k.config;
    stage.pp = 1;
    const auto proxy = plan::make_plan(search::proxy_model(m), cl, "", stage, opt);
    ASSERT_TRUE(proxy.feasibility.ok);
    int asymmetric = 0;
    for (const auto& b : batches) {
      SCOPED_TRACE(std::to_string(b.decode_seqs) + " decode, " + std::to_string(b.prefill_tokens) + " prefill");
      const int64_t before = one.one_rank_evaluations();
      expect_same(one.times(b), all.times(b));
      // The one-rank path is taken exactly when every rank runs the same program.
      const bool alike = all_ranks_alike(plan::build_step(proxy.plan, 0, b.to_batch(stage.attn_dp)));
      EXPECT_EQ(one.one_rank_evaluations() > before, alike);
      asymmetric += !alike;
    }
    if (k.config.ep == k.config.ranks_per_stage() && k.config.tp > 1) {
      EXPECT_GT(asymmetric, 0);  // e.g. 3 tokens sliced over tp
    }
    EXPECT_EQ(all.one_rank_evaluations(), 0);
    EXPECT_GT(one.one_rank_evaluations(), 0);  // the path under test was taken
    if (k.config.pp > 1) {
      const auto f = plan::check_feasibility(m, gpu, k.config, opt);
      ASSERT_EQ(f.stage_layers.size(), static_cast<size_t>(k.config.pp));
      ASSERT_NE(f.stage_layers.front().second - f.stage_layers.front().first,
                f.stage_layers.back().second - f.stage_layers.back().first);  // uneven indeed
      for (PoolRole role : {PoolRole::kMixed, PoolRole::kDecode, PoolRole::kPrefill}) {
        const search::WorkloadLoad load{1, 1000, 200};
        search::PoolModel a(one, m, k.config, f.memory, f.stage_layers, 1e-7, 5e-6, role, load, opt);
        search::PoolModel b(all, m, k.config, f.memory, f.stage_layers, 1e-7, 5e-6, role, load, opt);
        for (double tau : {1.0, 7.0, 64.0, 200.0}) {
          EXPECT_EQ(a.latency_s(tau), b.latency_s(tau));
          EXPECT_EQ(a.cycle_s(tau), b.cycle_s(tau));
        }
      }
    }
  }
}

using Combo = std::tuple<int, int, int, int>;  // tp, attn_dp, ep, pp

// Every legal combination, by divisors: tp | heads (tp <= the domain), every pp up to the layers; MoE:
// ep | experts, expert TP t | expert FFN, stage = ep x t divisible by tp (attn_dp = stage / tp); stage x pp <= budget.
std::set<Combo> legal_combinations(const spec::Model& m, int domain, int budget) {
  std::set<Combo> out;
  std::vector<int> pps;
  for (int pp = 1; pp <= std::min<int64_t>(m.layers, budget); ++pp) pps.push_back(pp);
  for (int tp = 1; tp <= domain; ++tp) {
    if (m.heads % tp != 0) continue;
    if (!m.is_moe()) {
      for (int pp : pps)
        if (tp * pp <= budget) out.insert({tp, 1, 1, pp});
      continue;
    }
    for (int ep = 1; ep <= m.moe.num_experts; ++ep) {
      if (m.moe.num_experts % ep != 0) continue;
      for (int64_t t = 1; t <= m.moe.expert_ffn && ep * t <= budget; ++t) {
        if (m.moe.expert_ffn % t != 0 || (ep * t) % tp != 0) continue;
        for (int pp : pps)
          if (ep * t * pp <= budget) out.insert({tp, static_cast<int>(ep * t / tp), ep, pp});
      }
    }
  }
  return out;
}

search::SearchInput colocated(const std::string& model, const spec::Cluster& cluster) {
  // Colocated only: one candidate per feasible layout.
  search::SearchInput in = testing::search_input(model, cluster, spec::Disaggregation::kOff);
  in.slo.ttft_p99_s = 2.0;
  in.slo.tpot_p99_s = 0.05;
  in.load = {50, 2048, 512};
  return in;
}

// What the search enumerated: every layout is either ranked (colocated: one candidate each) or listed infeasible.
std::multiset<Combo> enumerated(const search::SearchResult& r) {
  std::multiset<Combo> out;
  for (const auto& c : r.ranked) out.insert({c.mixed.config.tp, c.mixed.config.attn_dp, c.mixed.config.ep, c.mixed.config.pp});
  for (const auto& x : r.infeasible) out.insert({x.config.tp, x.config.attn_dp, x.config.ep, x.config.pp});
  return out;
}

void expect_every_legal_combination(const std::string& model, const spec::Cluster& cl, int domain, int old_cap) {
  SCOPED_TRACE(model);
  const auto in = colocated(model, cl);
  const auto r = search::search(in);
  const auto want = legal_combinations(in.model, domain, cl.gpu_count());
  const auto got = enumerated(r);
  EXPECT_EQ(r.stats.layouts, static_cast<int64_t>(want.size()));
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin(), want.end()));  // each once, none else
  // The stages the old cap (ranks per stage <= max(domain, experts)) left out are there, and some are feasible.
  int beyond = 0, beyond_feasible = 0;
  for (const auto& [tp, adp, ep, pp] : got) beyond += tp * adp > old_cap;
  for (const auto& c : r.ranked) beyond_feasible += c.mixed.config.ranks_per_stage() > old_cap;
  EXPECT_GT(beyond, 0);
  EXPECT_GT(beyond_feasible, 0);
  for (const auto& x : r.infeasible) EXPECT_FALSE(x.reasons.empty()) << x.config.label();
}

TEST(SearchSpace, DefaultEnumerationIsEveryLegalCombination) {
  const auto gpu = testing::shipped_gpu("h100-sxm");
  const auto cl = testing::test_cluster(gpu, 4, 8);
  expect_every_legal_combination("tiny-deepseek", cl, 8, 8);
  expect_every_legal_combination("tiny-mixtral", cl, 8, 8);
  const auto dense = colocated("llama-3.1-8b", cl);
  EXPECT_EQ(search::search(dense).stats.layouts,
            static_cast<int64_t>(legal_combinations(dense.model, 8, cl.gpu_count()).size()));
}

TEST(SearchSpace, DeepSeekV3On1024GpusReachesStagesBeyond256Ranks) {
  const spec::Cluster cl =
      spec::load_cluster_file(std::string(PARASOL_DATA_DIR) + "/topologies/clusters/h200-128node-leafspine.yaml");
  ASSERT_EQ(cl.gpu_count(), 1024);
  expect_every_legal_combination("deepseek-v3", cl, 8, 256);
}

TEST(SearchSpace, ScenarioListsStillConstrainTheSpace) {
  const auto gpu = testing::shipped_gpu("h100-sxm");
  const auto cl = testing::test_cluster(gpu, 4, 8);
  auto in = colocated("tiny-deepseek", cl);
  in.space.attn_dp = {2, 4};
  in.space.ep = {4};
  in.space.pp = {1};
  const auto r = search::search(in);
  const auto got = enumerated(r);
  ASSERT_FALSE(got.empty());
  for (const auto& [tp, adp, ep, pp] : got) {
    EXPECT_TRUE(adp == 2 || adp == 4);
    EXPECT_EQ(ep, 4);
    EXPECT_EQ(pp, 1);
    EXPECT_EQ(tp * adp % ep, 0);
  }
  // tp 1, 2, 4 (divisors of 4 heads) x attn_dp 2, 4 with ep 4 dividing the stage: (1,4) (2,2) (2,4) (4,2) (4,4).
  EXPECT_EQ(r.stats.layouts, 5);
}

}  // namespace
}  // namespace parasol

// Plan search and the steady-state estimator: the proxy stage costing equals costing the full model, the queueing
// model's fixed points and limits hold, and the search's facts (feasible, sorted, Pareto, deterministic).
#include "core/search/search.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/search/goodput.hpp"
#include "plan_fixtures.hpp"

namespace parasol {
namespace {

using plan::ParallelConfig;
using search::PoolRole;

using testing::layout;

search::SearchInput input(const std::string& model, const spec::Cluster& cluster, spec::Disaggregation d) {
  search::SearchInput in = testing::search_input(model, cluster, d);
  in.slo.ttft_p99_s = 1.0;
  in.slo.tpot_p99_s = 0.05;
  in.load = {6.0, 1200, 220};
  return in;
}

// Step time of the whole model for one batch, costed directly (no proxy).
double full_step_s(const spec::Model& m, const spec::Cluster& cl, const ParallelConfig& c,
                   const search::GroupBatch& b) {
  auto made = plan::make_plan(m, cl, "", c);
  EXPECT_TRUE(made.feasibility.ok);
  plan::Step step = plan::build_step(made.plan, 0, b.to_batch(c.attn_dp));
  return cost::cost_step(step, made.plan, cl).total_s;
}

struct ProxyCase {
  const char* model;
  ParallelConfig config;
  PoolRole role;
  double tau;
  double tolerance;  // relative
};

TEST(SearchEstimator, ProxyStageCostEqualsFullModelCost) {
  const auto gpu = testing::shipped_gpu("h100-sxm");
  const auto cl = testing::test_cluster(gpu, 2, 8);
  const search::WorkloadLoad load{1, 1000, 200};
  // pp = 1: the proxy's per-layer times scale exactly to the full model. pp = 2: the pipeline transfer is modelled
  // from the path, so a small difference remains.
  const std::vector<ProxyCase> cases = {
      {"llama-3.1-8b", layout(2, 1), PoolRole::kDecode, 32, 1e-9},
      {"llama-3.1-8b", layout(4, 1), PoolRole::kMixed, 1024, 1e-9},
      {"llama-3.1-8b", layout(2, 1), PoolRole::kPrefill, 4096, 1e-9},
      {"tiny-deepseek", layout(2, 1, 4, 2), PoolRole::kDecode, 16, 1e-9},
      {"tiny-mixtral", layout(2, 1, 2, 1), PoolRole::kMixed, 512, 1e-9},
      {"llama-3.1-8b", layout(2, 2), PoolRole::kDecode, 64, 0.02},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(std::string(k.model) + " " + k.config.label() + " " + search::to_string(k.role));
    const auto m = testing::shipped_model(k.model);
    plan::PlanOptions opt;
    auto f = plan::check_feasibility(m, gpu, k.config, opt);
    ASSERT_TRUE(f.feasibility.ok);
    search::StageTimer timer(m, cl, "", k.config, opt);
    double p2p_s = 0, p2p_lat = 0;
    if (k.config.pp > 1) {  // the path between the first ranks of the two stages
      cost::LinkCache links(cl);
      const auto pr = plan::place(cl, plan::resolve_gpu_type(cl, ""), k.config, opt);
      ASSERT_TRUE(pr.feasibility.ok);
      const auto& path = links.path(pr.placement[0][0], pr.placement[0][static_cast<size_t>(k.config.rank(1, 0, 0))]);
      p2p_s = 2.0 * m.hidden * dtype_bytes(m.act_dtype) / (path.bw_Bps * gpu.eff.comm_efficiency);
      p2p_lat = path.latency_s;
    }
    search::PoolModel pm(timer, m, k.config, f.memory, f.stage_layers, p2p_s, p2p_lat, k.role, load, opt);
    // Rebuild the batch the pool model costs at this grid point.
    search::GroupBatch b;
    const int64_t tau = static_cast<int64_t>(k.tau);
    if (k.role == PoolRole::kDecode) b = {tau, 1100, 0, 0};
    if (k.role == PoolRole::kPrefill) b = {0, 0, tau, 1000};
    if (k.role == PoolRole::kMixed) {
      b.decode_seqs = std::llround(k.tau * 200 / 1200);
      b.decode_context = 1100;
      b.prefill_tokens = tau - b.decode_seqs;
      b.prompt_len = 1000;
    }
    const double full = full_step_s(m, cl, k.config, b);
    EXPECT_NEAR(pm.latency_s(k.tau), full, k.tolerance * full);
  }
}

TEST(SearchEstimator, SteadyStateSatisfiesLittlesLawAndGoodputIsTheSloBoundary) {
  const auto gpu = testing::shipped_gpu("h100-sxm");
  const auto cl = testing::test_cluster(gpu, 1, 8);
  const auto m = testing::shipped_model("llama-3.1-8b");
  const search::WorkloadLoad load{1, 1500, 300};
  plan::PlanOptions opt;
  for (const ParallelConfig c : {layout(1, 1), layout(2, 2)}) {
    SCOPED_TRACE(c.label());
    auto f = plan::check_feasibility(m, gpu, c, opt);
    search::StageTimer timer(m, cl, "", c, opt);
    search::PoolModel dec(timer, m, c, f.memory, f.stage_layers, 0, 0, PoolRole::kDecode, load, opt);
    // Little's law: sequences in flight (pp micro-batches of B) = rate x output tokens x time per token.
    for (double rate : {0.5, 2.0, 5.0}) {
      const auto p = dec.at(rate);
      ASSERT_TRUE(p.stable);
      EXPECT_NEAR(c.pp * p.batch, rate * load.output_mean * dec.cycle_s(p.batch), 1e-6 * c.pp * p.batch);
      EXPECT_GE(p.tpot_p99_s, p.tpot_mean_s);
    }
    spec::Slo slo;
    slo.tpot_p99_s = 0.02;
    const double g = dec.max_rate(slo);
    ASSERT_GT(g, 0);
    EXPECT_TRUE(dec.meets(dec.at(g), slo, 0));
    EXPECT_FALSE(dec.meets(dec.at(g * 1.001), slo, 0));

    // Prefill: at a trickle there is no queueing, TTFT is the prompt's own iteration; it grows with the load.
    search::PoolModel pre(timer, m, c, f.memory, f.stage_layers, 0, 0, PoolRole::kPrefill, load, opt);
    EXPECT_NEAR(pre.at(1e-6).ttft_p99_s, pre.latency_s(load.input_mean), 1e-6 * pre.latency_s(load.input_mean));
    EXPECT_GT(pre.at(20).ttft_p99_s, pre.at(1).ttft_p99_s);
  }
}

// Pools of Llama-3.1-8B at tp1 on one H100 node, sharing one stage timer.
struct Tp1Pools {
  spec::Gpu gpu = testing::shipped_gpu("h100-sxm");
  spec::Cluster cl = testing::test_cluster(gpu, 1, 8);
  spec::Model m = testing::shipped_model("llama-3.1-8b");
  plan::PlanOptions opt;
  ParallelConfig c = layout(1, 1);
  plan::FeasibilityResult f = plan::check_feasibility(m, gpu, c, opt);
  search::StageTimer timer{m, cl, "", c, opt};
  search::PoolModel pool(PoolRole role, const search::WorkloadLoad& load) {
    return search::PoolModel(timer, m, c, f.memory, f.stage_layers, 0, 0, role, load, opt);
  }
};

TEST(SearchEstimator, PrefillQueueingScalesWithArrivalAndLengthVariabilityAndLongPromptsSetTheirOwnTail) {
  Tp1Pools rig;
  auto pool = [&](const search::WorkloadLoad& load) { return rig.pool(PoolRole::kPrefill, load); };
  const search::WorkloadLoad md1{10, 1500, 300};  // Poisson, one prompt length: the M/D/1 case
  auto base = pool(md1);
  const double rate = 10;  // one group carries the whole stream
  const auto p = base.at(rate);
  ASSERT_TRUE(p.stable);
  ASSERT_GT(p.ttft_p99_s, base.at(1e-9).ttft_p99_s);  // queueing at this load
  // Kingman: the waiting-time tail is linear in ca2 + cs2 (the prompt's own prefill does not depend on it).
  search::WorkloadLoad bursty = md1, burstier = md1;
  bursty.arrival_cv2 = 3, burstier.arrival_cv2 = 5;
  auto b = pool(bursty);
  const double t1 = p.ttft_p99_s, t3 = b.at(rate).ttft_p99_s, t5 = pool(burstier).at(rate).ttft_p99_s;
  EXPECT_GT(t3, t1);
  EXPECT_NEAR(t5 - t3, t3 - t1, 1e-9 * t5);
  search::WorkloadLoad varied = md1;
  varied.input_cv2 = 2;
  auto v = pool(varied);
  EXPECT_NEAR(v.at(rate).ttft_p99_s, b.at(rate).ttft_p99_s, 1e-12) << "ca2 + cs2 is what counts";
  // Split over n groups the arrivals' excess variability is 1/n (Whitt): 5 groups of ca2 = 6 equal one of ca2 = 2.
  search::WorkloadLoad six = md1, two = md1;
  six.arrival_cv2 = 6, two.arrival_cv2 = 2;
  two.rate_per_s = rate / 5;
  EXPECT_NEAR(pool(six).at(rate / 5).ttft_p99_s, pool(two).at(rate / 5).ttft_p99_s, 1e-12);
  // A 99th-percentile prompt of 6,000 tokens: at a trickle the TTFT p99 is that prompt's own prefill.
  search::WorkloadLoad longp = md1;
  longp.input_p99 = 6000;
  auto l = pool(longp);
  EXPECT_NEAR(l.at(1e-9).ttft_p99_s, l.latency_s(6000), 1e-6 * l.latency_s(6000));
  EXPECT_GE(l.at(rate).ttft_p99_s, p.ttft_p99_s);
}

TEST(SearchEstimator, OverloadIsReportedWithItsLimit) {
  Tp1Pools rig;
  search::PoolModel mixed = rig.pool(PoolRole::kMixed, {1, 1000, 200});
  const auto p = mixed.at(1e5);
  EXPECT_FALSE(p.stable);
  EXPECT_FALSE(p.limit.empty());
}

class SearchFacts : public ::testing::Test {
 protected:
  void SetUp() override {
    gpu_ = testing::shipped_gpu("h100-sxm");
    cluster_ = testing::test_cluster(gpu_, 2, 8);
  }
  spec::Gpu gpu_;
  spec::Cluster cluster_;
};

TEST_F(SearchFacts, EveryRankedCandidateIsAFeasiblePlan) {
  for (const char* model : {"llama-3.1-70b", "tiny-mixtral"}) {
    SCOPED_TRACE(model);
    auto in = input(model, cluster_, spec::Disaggregation::kBoth);
    const auto r = search::search(in);
    ASSERT_FALSE(r.ranked.empty());
    for (const auto& c : r.ranked) {
      const auto made = search::candidate_plan(in, c);
      EXPECT_TRUE(made.feasibility.ok) << c.label();
      EXPECT_LE(c.gpus, r.gpu_budget);
      int gpus = 0;
      for (const auto& pool : made.plan.pools) gpus += pool.config.total_gpus();
      EXPECT_EQ(gpus, c.gpus) << c.label();
    }
  }
}

TEST_F(SearchFacts, InfeasibleLayoutsCarryTheirReasons) {
  auto in = input("llama-3.1-70b", cluster_, spec::Disaggregation::kOff);
  const auto r = search::search(in);
  bool tp1_listed = false;
  for (const auto& x : r.infeasible) {
    EXPECT_FALSE(x.reasons.empty()) << x.config.label();
    if (x.config.tp == 1 && x.config.pp == 1) tp1_listed = true;  // 141 GB of bf16 weights on an 80 GB GPU
  }
  EXPECT_TRUE(tp1_listed);
  for (const auto& c : r.ranked) EXPECT_FALSE(c.mixed.config.tp == 1 && c.mixed.config.pp == 1);
}

TEST_F(SearchFacts, RankingFollowsTheObjectiveAndParetoRowsAreMutuallyNonDominated) {
  auto in = input("llama-3.1-70b", cluster_, spec::Disaggregation::kBoth);
  const auto r = search::search(in);
  ASSERT_GT(r.ranked.size(), 2u);
  for (size_t i = 1; i < r.ranked.size(); ++i) {
    EXPECT_FALSE(search::ranks_before(r.ranked[i], r.ranked[i - 1])) << i;
    const auto& a = r.ranked[i - 1];
    const auto& b = r.ranked[i];
    if (a.meets_slo == b.meets_slo) {
      EXPECT_GE(a.goodput_tok_s_per_gpu, b.goodput_tok_s_per_gpu);
    }
    if (!a.meets_slo) {
      EXPECT_FALSE(b.meets_slo);
    }
    EXPECT_FALSE(search::why_lost(b, r.ranked[0]).empty());
  }
  ASSERT_FALSE(r.pareto.empty());
  auto dominates = [](const search::Candidate& x, const search::Candidate& y) {
    return x.goodput_tok_s_per_gpu >= y.goodput_tok_s_per_gpu && x.tok_s_per_user >= y.tok_s_per_user &&
           (x.goodput_tok_s_per_gpu > y.goodput_tok_s_per_gpu || x.tok_s_per_user > y.tok_s_per_user);
  };
  EXPECT_EQ(r.ranked_total, static_cast<int64_t>(r.ranked.size()));  // the exhaustive evaluation keeps every one
  for (const auto& pt : r.pareto) {
    ASSERT_GE(pt.rank, 1);
    ASSERT_LE(pt.rank, r.ranked_total);
    EXPECT_EQ(r.ranked[static_cast<size_t>(pt.rank - 1)].label(), pt.candidate.label());
  }
  for (const auto& x : r.pareto)
    for (const auto& y : r.pareto)
      if (x.rank != y.rank) {
        EXPECT_FALSE(dominates(x.candidate, y.candidate)) << x.rank << " " << y.rank;
      }
  // Complete: every ranked candidate off the frontier is dominated by (or equal to) a frontier point.
  for (size_t k = 0; k < r.ranked.size(); ++k) {
    const auto& c = r.ranked[k];
    if (c.goodput_tok_s_per_gpu <= 0) continue;
    bool covered = false;
    for (const auto& pt : r.pareto)
      covered = covered || pt.rank == static_cast<int64_t>(k) + 1 || dominates(pt.candidate, c) ||
                (pt.candidate.goodput_tok_s_per_gpu == c.goodput_tok_s_per_gpu &&
                 pt.candidate.tok_s_per_user == c.tok_s_per_user);
    EXPECT_TRUE(covered) << c.label();
  }
}

TEST_F(SearchFacts, MoreLoadNeverImprovesTheLatencyAtLoad) {
  auto in = input("llama-3.1-70b", cluster_, spec::Disaggregation::kOff);
  const auto low = search::search(in);
  in.load.rate_per_s *= 3;
  const auto high = search::search(in);
  for (const auto& a : low.ranked)
    for (const auto& b : high.ranked)
      if (a.label() == b.label()) {
        EXPECT_DOUBLE_EQ(a.goodput_rps, b.goodput_rps) << a.label();  // goodput does not depend on the load
        if (a.meets_slo && b.meets_slo) {
          EXPECT_LE(a.tpot_p99_s, b.tpot_p99_s) << a.label();
        }
        if (!a.meets_slo) {
          EXPECT_FALSE(b.meets_slo) << a.label();
        }
      }
}

TEST_F(SearchFacts, TwoRunsGiveIdenticalBytes) {
  auto in = input("tiny-mixtral", cluster_, spec::Disaggregation::kBoth);
  const auto a = search::search(in);
  const auto b = search::search(in);
  EXPECT_EQ(search::to_json(a, 1000).dump(), search::to_json(b, 1000).dump());
  EXPECT_EQ(search::pareto_csv(a), search::pareto_csv(b));
}

}  // namespace
}  // namespace parasol

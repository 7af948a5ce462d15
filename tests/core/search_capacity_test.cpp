// The fewest-GPUs objective of the plan search: identical replicas of a known sustainable rate (the estimator's
// largest per-instance load meeting the SLOs) need exactly ceil(rate / per-replica rate) of them; a P/D candidate's
// two pools are each the fewest that carry the rate; the ranking puts fewer GPUs first; the kept top equals the
// exhaustive ranking's; a sizing beyond the budget misses the SLOs and says how many GPUs it needs.
#include <gtest/gtest.h>

#include <cmath>

#include "core/search/search.hpp"
#include "plan_fixtures.hpp"

namespace parasol {
namespace {

class FewestGpus : public ::testing::Test {
 protected:
  void SetUp() override {
    gpu_ = testing::shipped_gpu("h100-sxm");
    cluster_ = testing::test_cluster(gpu_, 2, 8);
  }
  search::SearchInput input(spec::Disaggregation d, spec::Objective o) const {
    search::SearchInput in = testing::search_input("llama-3.1-8b", cluster_, d);
    in.slo.ttft_p99_s = 1.0;
    in.slo.tpot_p99_s = 0.05;
    in.load = {6.0, 1200, 220};
    in.space.objective = o;
    return in;
  }
  spec::Gpu gpu_;
  spec::Cluster cluster_;
};

TEST_F(FewestGpus, IdenticalReplicasNeedTheCeilingOfTheRateOverTheirSustainableRate) {
  for (int tp : {1, 2}) {
    SCOPED_TRACE(tp);
    search::SearchInput in = input(spec::Disaggregation::kOff, spec::Objective::kGoodputPerGpu);
    in.space.tp = {tp};
    in.space.pp = {1};
    const search::SearchResult ref = search::search(in);
    ASSERT_EQ(ref.ranked.size(), 1u);
    const double per_replica = ref.ranked[0].mixed.max_rate_per_group;  // attention-DP 1: one group per replica
    ASSERT_GT(per_replica, 0);
    in.space.objective = spec::Objective::kFewestGpus;
    for (int k : {1, 3, 5}) {
      for (const double side : {1 - 1e-6, 1 + 1e-6}) {
        in.load.rate_per_s = k * per_replica * side;
        const search::SearchResult r = search::search(in);
        ASSERT_EQ(r.ranked.size(), 1u);
        const search::Candidate& c = r.ranked[0];
        const int want = side < 1 ? k : k + 1;
        EXPECT_EQ(c.mixed.config.dp, want) << in.load.rate_per_s;
        EXPECT_EQ(c.gpus, want * tp);
        EXPECT_TRUE(c.meets_slo) << c.violation;
        EXPECT_DOUBLE_EQ(c.goodput_rps, want * per_replica);  // the sized deployment's capacity
      }
    }
    // Beyond the budget (16 GPUs): the budget's instances, missing the SLOs, with the count it would need.
    in.load.rate_per_s = (16 / tp + 2) * per_replica * (1 - 1e-6);
    const search::Candidate c = search::search(in).ranked.at(0);
    EXPECT_FALSE(c.meets_slo);
    EXPECT_EQ(c.gpus, 16);
    EXPECT_NE(c.violation.find("needs " + std::to_string((16 / tp + 2) * tp) + " GPUs"), std::string::npos)
        << c.violation;
  }
}

TEST_F(FewestGpus, EachDisaggregatedPoolIsTheFewestThatCarriesTheRate) {
  search::SearchInput in = input(spec::Disaggregation::kOn, spec::Objective::kFewestGpus);
  in.load.rate_per_s = 14;
  const search::SearchResult r = search::search(in);
  ASSERT_FALSE(r.ranked.empty());
  for (const search::Candidate& c : r.ranked) {
    ASSERT_TRUE(c.disaggregated);
    if (!c.meets_slo) continue;
    auto fewest = [&](const search::PoolEstimate& p) {
      return static_cast<int>(std::ceil(in.load.rate_per_s / (p.max_rate_per_group * p.config.attn_dp) * (1 - 1e-12)));
    };
    EXPECT_EQ(c.prefill.config.dp, fewest(c.prefill)) << c.label();
    EXPECT_EQ(c.decode.config.dp, fewest(c.decode)) << c.label();
    // One instance fewer of either pool carries less than the rate.
    EXPECT_LT((c.prefill.config.dp - 1) * c.prefill.max_rate_per_group * c.prefill.config.attn_dp,
              in.load.rate_per_s);
    EXPECT_LT((c.decode.config.dp - 1) * c.decode.max_rate_per_group * c.decode.config.attn_dp, in.load.rate_per_s);
    EXPECT_EQ(c.gpus, c.prefill.config.total_gpus() + c.decode.config.total_gpus());
  }
}

TEST_F(FewestGpus, RankingPutsFewerGpusFirstAndTheKeptTopIsTheExhaustiveOnes) {
  search::SearchInput in = input(spec::Disaggregation::kBoth, spec::Objective::kFewestGpus);
  in.load.rate_per_s = 20;
  const search::SearchResult all = search::search(in);
  ASSERT_GT(all.ranked.size(), 5u);
  EXPECT_TRUE(all.pareto.empty());
  for (size_t i = 1; i < all.ranked.size(); ++i) {
    const auto& a = all.ranked[i - 1];
    const auto& b = all.ranked[i];
    EXPECT_FALSE(search::ranks_before_under(b, a, spec::Objective::kFewestGpus)) << i;
    if (a.meets_slo == b.meets_slo) {
      EXPECT_LE(a.gpus, b.gpus) << a.label() << " " << b.label();
    }
    if (b.gpus > all.ranked[0].gpus && all.ranked[0].meets_slo && b.meets_slo) {
      EXPECT_NE(search::why_lost(b, all.ranked[0], spec::Objective::kFewestGpus).find("GPUs"), std::string::npos);
    }
  }
  in.keep_top = 5;
  const search::SearchResult top = search::search(in);
  ASSERT_EQ(top.ranked.size(), 5u);
  EXPECT_EQ(top.ranked_total, all.ranked_total);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(top.ranked[i].label(), all.ranked[i].label()) << i;
}

}  // namespace
}  // namespace parasol

// The pruned pair evaluation (keep_top > 0: bounded top N, incremental Pareto frontier, pairs skipped by bounds)
// gives exactly what the exhaustive evaluation (keep_top = 0: every candidate estimated, kept and sorted) gives: the
// same top N, the same frontier with the same ranks (pareto.csv byte for byte), the same counts. And the bounds it
// prunes with hold: a pair's goodput/GPU and tokens/s/user never exceed them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/search/planning_load.hpp"
#include "core/search/search.hpp"
#include "core/search/search_collect.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/scenario.hpp"
#include "plan_fixtures.hpp"

namespace parasol {
namespace {

search::SearchInput input(const std::string& model, const spec::Cluster& cluster, search::WorkloadLoad load,
                          double ttft_s, double tpot_s) {
  search::SearchInput in = testing::search_input(model, cluster, spec::Disaggregation::kBoth);
  in.slo.ttft_p99_s = ttft_s;
  in.slo.tpot_p99_s = tpot_s;
  in.load = load;
  return in;
}

void expect_same_candidate(const search::Candidate& a, const search::Candidate& b) {
  EXPECT_EQ(a.label(), b.label());
  EXPECT_EQ(a.gpus, b.gpus);
  EXPECT_EQ(a.meets_slo, b.meets_slo);
  EXPECT_EQ(a.violation, b.violation);
  EXPECT_EQ(a.goodput_rps, b.goodput_rps);
  EXPECT_EQ(a.goodput_tok_s_per_gpu, b.goodput_tok_s_per_gpu);
  EXPECT_EQ(a.tok_s_per_user, b.tok_s_per_user);
  EXPECT_EQ(a.ttft_p99_s, b.ttft_p99_s);
  EXPECT_EQ(a.tpot_p99_s, b.tpot_p99_s);
}

// Runs both evaluations and compares everything the outputs show; returns the exhaustive result.
search::SearchResult expect_pruned_equals_exhaustive(search::SearchInput in, const std::vector<int64_t>& tops) {
  in.keep_top = 0;
  const search::SearchResult all = search::search(in);
  EXPECT_GT(all.ranked.size(), 1u);
  EXPECT_EQ(static_cast<int64_t>(all.ranked.size()), all.ranked_total);
  for (int64_t n : tops) {
    SCOPED_TRACE("top " + std::to_string(n));
    in.keep_top = n;
    const search::SearchResult pruned = search::search(in);
    EXPECT_EQ(pruned.ranked_total, all.ranked_total);
    EXPECT_EQ(pruned.stats.candidates, all.stats.candidates);
    EXPECT_EQ(pruned.stats.pairs, all.stats.pairs);
    EXPECT_EQ(pruned.stats.layouts, all.stats.layouts);
    EXPECT_LE(pruned.stats.pairs_estimated, all.stats.pairs_estimated);
    EXPECT_EQ(pruned.ranked.size(), std::min<size_t>(static_cast<size_t>(n), all.ranked.size()));
    for (size_t i = 0; i < std::min(pruned.ranked.size(), all.ranked.size()); ++i) {
      SCOPED_TRACE("rank " + std::to_string(i + 1));
      expect_same_candidate(pruned.ranked[i], all.ranked[i]);
    }
    EXPECT_EQ(pruned.pareto.size(), all.pareto.size());
    for (size_t i = 0; i < std::min(pruned.pareto.size(), all.pareto.size()); ++i) {
      EXPECT_EQ(pruned.pareto[i].rank, all.pareto[i].rank);
      expect_same_candidate(pruned.pareto[i].candidate, all.pareto[i].candidate);
    }
    EXPECT_EQ(search::pareto_csv(pruned), search::pareto_csv(all));
    const auto jp = search::to_json(pruned, static_cast<int>(n)), ja = search::to_json(all, static_cast<int>(n));
    EXPECT_EQ(jp.at("ranked").dump(), ja.at("ranked").dump());
    EXPECT_EQ(jp.at("pareto").dump(), ja.at("pareto").dump());
    EXPECT_EQ(jp.at("ranked_total"), ja.at("ranked_total"));
  }
  return all;
}

TEST(SearchPrune, TinyDeepSeekOn32GpusEveryPp) {
  const auto cl = testing::test_cluster(testing::shipped_gpu("h100-sxm"), 4, 8);
  // Loads that every frontier point meets, that some miss, that all miss: frontier points that miss the SLOs at
  // load rank after every candidate that meets them, which the frontier ranks must count.
  for (double rate : {20.0, 2e4, 1e6}) {
    SCOPED_TRACE(rate);
    const auto all =
        expect_pruned_equals_exhaustive(input("tiny-deepseek", cl, {rate, 1024, 256}, 0.5, 0.02), {1, 5, 40});
    int meet = 0, miss = 0;
    for (const auto& pt : all.pareto) (pt.candidate.meets_slo ? meet : miss) += 1;
    if (rate == 2e4) {
      EXPECT_GT(meet, 0);
      EXPECT_GT(miss, 0);
    }
  }
}

TEST(SearchPrune, MixtralOnTwoNodes) {
  const auto cl = testing::test_cluster(testing::shipped_gpu("h100-sxm"), 2, 8);
  expect_pruned_equals_exhaustive(input("mixtral-8x7b", cl, {8, 1500, 300}, 1.0, 0.05), {1, 8});
}

TEST(SearchPrune, DeepSeekV3On32H200EveryPp) {
  const auto cl = testing::test_cluster(testing::shipped_gpu("h200-sxm"), 4, 8);
  const auto all = expect_pruned_equals_exhaustive(input("deepseek-v3", cl, {30, 2048, 512}, 2.0, 0.07), {1, 8});
  // Uneven pipelines (61 layers) are enumerated and ranked.
  bool uneven = false;
  for (const auto& c : all.ranked)
    for (const auto* pool : {&c.mixed, &c.prefill, &c.decode}) uneven = uneven || (pool->config.pp == 3);
  EXPECT_TRUE(uneven);
}

TEST(SearchPrune, ShippedPdDisaggScenario) {
  const spec::Scenario s = spec::load_scenario_file(std::string(PARASOL_DATA_DIR) + "/scenarios/pd-disagg-mooncake.yaml");
  std::string source;
  const search::SearchInput in = search::scenario_search_input(s, 1, source);
  expect_pruned_equals_exhaustive(in, {1, static_cast<int64_t>(s.search.top_n)});
}

// The bounds: goodput/GPU <= O alpha beta / (alpha + beta) is checked through the search (pairs the bound skips
// would otherwise differ above); here the collector's frontier equals the sweep on arbitrary points with ties.
TEST(SearchPrune, CollectorFrontierEqualsTheSweepWithTies) {
  std::vector<search::Candidate> cs;
  uint64_t x = 12345;
  auto next = [&] {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((x >> 33) % 7);
  };
  for (int i = 0; i < 300; ++i) {
    search::Candidate c;
    c.mixed.config.tp = 1 + i;  // distinct labels
    c.goodput_tok_s_per_gpu = next();  // many ties on both figures
    c.tok_s_per_user = next();
    c.meets_slo = next() < 4;
    c.gpus = 1 + next();
    cs.push_back(c);
  }
  for (size_t n : {1u, 3u, 50u}) {
    search::RankedCollector keep(n);
    for (const auto& c : cs) keep.offer(c);
    auto sorted = cs;
    std::sort(sorted.begin(), sorted.end(), search::ranks_before);
    const auto top = keep.top();
    ASSERT_EQ(top.size(), n);
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(top[i].label(), sorted[i].label());
    // The sweep of search.cpp's exhaustive path.
    std::vector<size_t> order;
    for (size_t i = 0; i < sorted.size(); ++i)
      if (sorted[i].goodput_tok_s_per_gpu > 0) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (sorted[a].goodput_tok_s_per_gpu != sorted[b].goodput_tok_s_per_gpu)
        return sorted[a].goodput_tok_s_per_gpu > sorted[b].goodput_tok_s_per_gpu;
      return sorted[a].tok_s_per_user > sorted[b].tok_s_per_user;
    });
    std::vector<size_t> want;
    double best = -1;
    for (size_t i : order)
      if (sorted[i].tok_s_per_user > best) want.push_back(i), best = sorted[i].tok_s_per_user;
    ASSERT_EQ(keep.frontier().size(), want.size());
    search::FrontierRanks ranks(keep.frontier());
    for (const auto& c : cs) {
      if (ranks.ties(c.meets_slo, c.goodput_tok_s_per_gpu))
        ranks.add_full(c);
      else
        ranks.add(c.meets_slo, c.goodput_tok_s_per_gpu);
    }
    const auto r = ranks.ranks();
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(keep.frontier()[i].label(), sorted[want[i]].label());
      EXPECT_EQ(r[i], static_cast<int64_t>(want[i]) + 1);
    }
  }
}

}  // namespace
}  // namespace parasol

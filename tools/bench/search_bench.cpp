// Plan search on one core: the full search for DeepSeek-V3 on the 1,024-GPU H200 leaf-spine cluster (every tp, pp,
// ep, attention-DP and dp layout, colocated and every prefill/decode split) as `parasol plan` runs it (keeping the
// top 5 and the Pareto frontier), and a small one (Llama-3.1-70B on one DGX). Counters: candidates/s (deployments
// considered per second, pruned ones included), layouts, pairs (estimated in full: pairs_estimated), steps costed
// (memoized on batch signatures; one_rank_steps of them from one representative rank). Baselines in the same run:
// the space with pp restricted to powers of two (the previous default), pruned and exhaustive (keep_top = 0: every
// pair estimated and kept, the previous evaluation).
// The same space under the fewest-GPUs objective (FewestGpus).
//   build/parasol_bench --benchmark_filter=Search
#include <benchmark/benchmark.h>

#include <string>

#include "core/search/search.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"

namespace parasol::search {
namespace {

void run_search(benchmark::State& state, const std::string& model, const std::string& cluster_file,
                spec::Disaggregation d, WorkloadLoad load, int64_t keep_top, bool pp_powers_of_two = false,
                spec::Objective objective = spec::Objective::kGoodputPerGpu) {
  const std::string data = PARASOL_DATA_DIR;
  const spec::Cluster cluster = spec::load_cluster_file(data + "/topologies/clusters/" + cluster_file);
  SearchInput in;
  in.model = spec::load_model_file(data + "/scenarios/models/" + model);
  in.cluster = &cluster;
  in.gpu_type = plan::resolve_gpu_type(cluster, "");
  in.space.weight_dtype = in.model.weight_dtype;
  in.space.kv_dtype = in.model.kv_dtype;
  in.space.disaggregation = d;
  in.slo.ttft_p99_s = 2.0;
  in.slo.tpot_p99_s = 0.05;
  in.load = load;
  in.keep_top = keep_top;
  in.space.objective = objective;
  if (pp_powers_of_two)
    for (int pp = 1; pp <= in.model.layers; pp *= 2) in.space.pp.push_back(pp);
  SearchStats stats;
  int64_t ranked = 0;
  size_t pareto = 0;
  for (auto _ : state) {
    SearchResult r = search(in);
    stats = r.stats;
    ranked = r.ranked_total;
    pareto = r.pareto.size();
    benchmark::DoNotOptimize(r.ranked.data());
  }
  state.counters["candidates"] = static_cast<double>(stats.candidates);
  state.counters["candidates/s"] =
      benchmark::Counter(static_cast<double>(stats.candidates), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["layouts"] = static_cast<double>(stats.layouts);
  state.counters["feasible"] = static_cast<double>(stats.feasible_layouts);
  state.counters["shapes"] = static_cast<double>(stats.stage_shapes);
  state.counters["steps_costed"] = static_cast<double>(stats.step_evaluations);
  state.counters["one_rank_steps"] = static_cast<double>(stats.one_rank_steps);
  state.counters["step_queries"] = static_cast<double>(stats.step_lookups);
  state.counters["ranked"] = static_cast<double>(ranked);
  state.counters["pareto"] = static_cast<double>(pareto);
  state.counters["pairs"] = static_cast<double>(stats.pairs);
  state.counters["pairs_split"] = static_cast<double>(stats.pairs_split);
  state.counters["pairs_estimated"] = static_cast<double>(stats.pairs_estimated);
  state.counters["rank_pass_splits"] = static_cast<double>(stats.rank_pass_splits);
}

void BM_SearchDeepSeekV3On1024H200(benchmark::State& state) {
  run_search(state, "deepseek-v3.yaml", "h200-128node-leafspine.yaml", spec::Disaggregation::kBoth, {400, 2048, 512},
             5);
}
BENCHMARK(BM_SearchDeepSeekV3On1024H200)->Unit(benchmark::kSecond)->Iterations(1);

// Baselines: pp in powers of two (the previous default space), pruned as above and exhaustive (the previous
// evaluation: every pair estimated, every candidate kept and sorted).
void BM_SearchDeepSeekV3On1024H200Pow2Pp(benchmark::State& state) {
  run_search(state, "deepseek-v3.yaml", "h200-128node-leafspine.yaml", spec::Disaggregation::kBoth, {400, 2048, 512},
             5, true);
}
BENCHMARK(BM_SearchDeepSeekV3On1024H200Pow2Pp)->Unit(benchmark::kSecond)->Iterations(1);

void BM_SearchDeepSeekV3On1024H200Pow2PpExhaustive(benchmark::State& state) {
  run_search(state, "deepseek-v3.yaml", "h200-128node-leafspine.yaml", spec::Disaggregation::kBoth, {400, 2048, 512},
             0, true);
}
BENCHMARK(BM_SearchDeepSeekV3On1024H200Pow2PpExhaustive)->Unit(benchmark::kSecond)->Iterations(1);

// The fewest-GPUs objective on the same space: every pool sized to the rate, every pair ranked by its O(1) key.
void BM_SearchDeepSeekV3On1024H200FewestGpus(benchmark::State& state) {
  run_search(state, "deepseek-v3.yaml", "h200-128node-leafspine.yaml", spec::Disaggregation::kBoth, {400, 2048, 512},
             5, false, spec::Objective::kFewestGpus);
}
BENCHMARK(BM_SearchDeepSeekV3On1024H200FewestGpus)->Unit(benchmark::kSecond)->Iterations(1);

void BM_SearchLlama70bOnDgx(benchmark::State& state) {
  run_search(state, "llama-3.1-70b.yaml", "dgx-h100.yaml", spec::Disaggregation::kBoth, {5.5, 1155, 211}, 5);
}
BENCHMARK(BM_SearchLlama70bOnDgx)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace parasol::search

// Planner hot paths on one core: feasibility + placement (make_plan), build_step (fresh and with a reused
// StepBuilder), and cost_step (CostModel reused, as the search and the simulator use it), for Llama-3.1-70B TP8 and
// DeepSeek-V3 with EP16 x attention-DP on two 8 x H200 nodes.
//   build/parasol_bench --benchmark_filter=Plan
#include <benchmark/benchmark.h>

#include <string>

#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"

namespace parasol::plan {
namespace {

struct Setup {
  spec::Model model;
  spec::Cluster cluster;
  ParallelConfig config;
};

Setup setup(int which) {
  const std::string data = PARASOL_DATA_DIR;
  Setup s;
  s.cluster = spec::load_cluster_file(data + "/topologies/clusters/h200-2node.yaml");
  if (which == 0) {
    s.model = spec::load_model_file(data + "/scenarios/models/llama-3.1-70b.yaml");
    s.config.tp = 8;
  } else {
    s.model = spec::load_model_file(data + "/scenarios/models/deepseek-v3.yaml");
    s.config.tp = 2, s.config.attn_dp = 8, s.config.ep = 16;
  }
  return s;
}

Batch decode(int n, int64_t ctx, int groups) {
  Batch b;
  for (int i = 0; i < n; ++i) b.seqs.push_back({i, 1, ctx + i, i % groups, true});
  return b;
}

void BM_PlanMakePlan(benchmark::State& state) {
  const Setup s = setup(static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(make_plan(s.model, s.cluster, "", s.config));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlanMakePlan)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_PlanBuildStepFresh(benchmark::State& state) {
  const Setup s = setup(static_cast<int>(state.range(0)));
  const Plan p = make_plan(s.model, s.cluster, "", s.config).plan;
  const Batch b = decode(256, 4096, s.config.attn_dp);
  for (auto _ : state) benchmark::DoNotOptimize(build_step(p, 0, b));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlanBuildStepFresh)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_PlanBuildStepReused(benchmark::State& state) {
  const Setup s = setup(static_cast<int>(state.range(0)));
  const Plan p = make_plan(s.model, s.cluster, "", s.config).plan;
  StepBuilder builder(p, 0);
  Step step;
  int i = 0;
  for (auto _ : state) {
    builder.build(decode(256, 4096 + (i++ % 2), s.config.attn_dp), step);  // batches differ: no memo shortcut
    benchmark::DoNotOptimize(step.ranks.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlanBuildStepReused)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_PlanCostStep(benchmark::State& state) {
  const Setup s = setup(static_cast<int>(state.range(0)));
  const Plan p = make_plan(s.model, s.cluster, "", s.config).plan;
  const Step step = build_step(p, 0, decode(256, 4096, s.config.attn_dp));
  cost::CostModel model(p, s.cluster);
  for (auto _ : state) benchmark::DoNotOptimize(model.step_time_s(step));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlanCostStep)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace parasol::plan

// Pipeline parallelism on the executor, wall clock: a tiny Llama in two stages (2 local ranks, at most 4 sequences per
// micro-batch) serves a burst through the serving loop with both micro-batches in flight — instance rank 0 takes the
// next micro-batch as soon as its stage is done with the previous one, and the last stage sends the sampled tokens
// back. Every request completes; micro-batches overlap (an iteration starts before the one of the other micro-batch
// ends); and the greedy tokens equal those of the same model and weights in one stage (a token taken from the wrong
// micro-batch or a stage run on the wrong activations would change them).
#include <gtest/gtest.h>

#include "core/plan/plan_io.hpp"
#include "core/serve/metrics.hpp"
#include "core/spec/scenario.hpp"
#include "exec/serve_local.hpp"

namespace parasol::exec {
namespace {

using testing::Served;

Served serve_plan(const plan::Plan& plan, const serve::WorkloadSpec& ws, int64_t max_seqs, uint64_t seed) {
  serve::SchedulerConfig sc = serve::SchedulerConfig::from_pool(plan.pools[0]);
  sc.max_batch_seqs = max_seqs;
  ServeConfig c = make_serve_config(plan, 0, 256, &sc);
  c.seed = seed;
  return testing::serve_local(plan, {c}, ws, seed);
}

TEST(ExecPp, TwoStagesRunTwoMicroBatchesAtOnceAndSampleTheOneStageTokens) {
  const std::string dir = std::string(PARASOL_DATA_DIR) + "/scenarios/exec/";
  const spec::Scenario sc = spec::load_scenario_file(dir + "tiny-llama-pp2.yaml");
  const serve::WorkloadSpec ws = serve::load_workload(*sc.workload);
  const plan::Plan pp2 = plan::load_plan_file(dir + "tiny-llama-pp2.plan.yaml");
  ASSERT_EQ(pp2.pools[0].config.pp, 2);
  plan::Plan one = pp2;  // the same model in one stage on one rank
  one.pools[0].config.pp = 1;
  one.pools[0].stage_layers = {{0, pp2.model.layers}};
  one.pools[0].placement = {{0}};

  const Served piped = serve_plan(pp2, ws, 4, 7);
  const Served single = serve_plan(one, ws, 4, 7);
  ASSERT_EQ(piped.summary.completed, piped.summary.arrived);
  ASSERT_EQ(single.summary.completed, single.summary.arrived);
  ASSERT_GT(piped.summary.arrived, 8);

  // Overlap: with two micro-batches of at most 4 sequences, the burst keeps both in flight.
  int overlapping = 0;
  for (size_t i = 0; i < piped.iterations.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (piped.iterations[i].start_s < piped.iterations[j].end_s - 1e-9 &&
          piped.iterations[j].start_s < piped.iterations[i].end_s - 1e-9)
        ++overlapping;
  EXPECT_GT(overlapping, 0) << piped.iterations.size() << " iterations, none overlapping another";
  int single_overlap = 0;  // one stage: one iteration at a time
  for (size_t i = 1; i < single.iterations.size(); ++i)
    if (single.iterations[i].start_s < single.iterations[i - 1].end_s - 1e-9) ++single_overlap;
  EXPECT_EQ(single_overlap, 0);

  ASSERT_EQ(piped.result.outputs.size(), single.result.outputs.size());
  for (const auto& [id, tokens] : single.result.outputs) {
    auto it = piped.result.outputs.find(id);
    ASSERT_NE(it, piped.result.outputs.end()) << id;
    EXPECT_EQ(it->second, tokens) << "request " << id;
    EXPECT_FALSE(tokens.empty());
  }
  EXPECT_EQ(piped.result.generated_tokens, single.result.generated_tokens);
}

}  // namespace
}  // namespace parasol::exec

// The analytic step runner under an engine profile: for random batches (decodes below and above the captured CUDA
// graph sizes, prefill chunks, repeated shapes), the compiled step time and stage times equal those of
// build_step(engine's options) + CostModel(engine) to 1e-12 relative (set_verify makes every call check), for a
// one-GPU replica, TP (one-rank shapes and the layer template), pipeline stages and an MoE with EP; with each
// shipped engine and with an eager engine whose launch floor binds. And every step pays at least the engine's
// serial per-iteration cost. No SimGrid engine is needed: the runner does not touch the clock.
#include <gtest/gtest.h>

#include <random>

#include "core/cost/step_cost.hpp"
#include "core/plan/placement.hpp"
#include "core/serve/analytic_step_runner.hpp"
#include "core/spec/engine.hpp"

namespace parasol::serve {
namespace {

const std::string kData = PARASOL_DATA_DIR;

void check(const std::string& model_file, const std::string& cluster_file, plan::ParallelConfig pc,
           const spec::Engine& engine) {
  const spec::Model model = spec::load_model_file(kData + "/scenarios/models/" + model_file);
  const spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/" + cluster_file);
  const auto made = plan::make_plan(model, cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok) << pc.label();
  AnalyticStepRunner runner(made.plan, 0, cluster, &engine);
  runner.set_verify(true);
  std::mt19937_64 rng(11);
  auto uni = [&](int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  const int groups = std::max(1, pc.attn_dp);
  std::vector<plan::Batch> seen;
  for (int i = 0; i < 200; ++i) {
    plan::Batch b;
    if (!seen.empty() && i % 3 == 0) {
      b = seen[static_cast<size_t>(uni(0, static_cast<int64_t>(seen.size()) - 1))];
      for (auto& s : b.seqs) s.context += uni(0, 500);
    } else {
      const bool decode_only = uni(0, 1) == 0;
      const int n = static_cast<int>(decode_only ? uni(1, 700) : uni(1, 12));
      for (int k = 0; k < n; ++k) {
        plan::SeqWork w;
        w.seq_id = k;
        w.attn_group = static_cast<int>(uni(0, groups - 1));
        if (!decode_only && uni(0, 3) == 0) {
          w.new_tokens = uni(1, 3000);
          w.context = uni(0, 1) ? 0 : uni(1, 4000);
          w.sample = uni(0, 4) != 0;
        } else {
          w.new_tokens = 1;
          w.context = uni(1, 30000);
        }
        b.seqs.push_back(w);
      }
      seen.push_back(b);
    }
    const StepTiming t = runner.run(0, b);  // throws when compiled and full paths differ
    EXPECT_GE(t.total_s, engine.iteration.serial_s);
    EXPECT_GT(t.total_s, 0);
  }
}

spec::Engine eager_engine() {
  spec::Engine e;
  e.name = "eager";
  e.launch_s = 30e-6;  // long enough to bind on small decode steps
  e.iteration.decode = {50e-6, 2e-6, 0.0};
  e.iteration.mixed = {80e-6, 3e-6, 0.1e-6};
  e.iteration.serial_s = 10e-6;
  e.graphs.mixed_piecewise = true;
  e.graphs.mixed_max_tokens = 256;
  return e;
}

TEST(EngineStepRunner, CompiledEqualsCostModelForEveryShippedEngine) {
  for (const auto& name : spec::shipped_engines()) {
    SCOPED_TRACE(name);
    const spec::Engine e = spec::load_engine_ref(name);
    check("llama-2-7b.yaml", "a100-1gpu.yaml", plan::ParallelConfig{}, e);
    plan::ParallelConfig tp;
    tp.tp = 4;
    check("llama-3.1-70b.yaml", "dgx-h100.yaml", tp, e);
  }
}

TEST(EngineStepRunner, CompiledEqualsCostModelWhenLaunchesBind) {
  const spec::Engine e = eager_engine();
  check("llama-2-7b.yaml", "a100-1gpu.yaml", plan::ParallelConfig{}, e);
  plan::ParallelConfig tp;
  tp.tp = 4;
  check("llama-3.1-70b.yaml", "dgx-h100.yaml", tp, e);
  plan::ParallelConfig pp;
  pp.tp = 2;
  pp.pp = 4;
  check("llama-3.1-70b.yaml", "dgx-h100.yaml", pp, e);
}

TEST(EngineStepRunner, CompiledEqualsCostModelForMoeWithExpertParallelism) {
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.attn_dp = 4;
  pc.ep = 8;
  for (const auto& name : spec::shipped_engines()) {
    SCOPED_TRACE(name);
    check("mixtral-8x7b.yaml", "dgx-h100.yaml", pc, spec::load_engine_ref(name));
  }
  check("mixtral-8x7b.yaml", "dgx-h100.yaml", pc, eager_engine());
}

}  // namespace
}  // namespace parasol::serve

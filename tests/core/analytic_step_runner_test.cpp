// The analytic step runner's compiled shapes against the cost model: for random batches (prefill chunks and decodes
// of random contexts, several attention-DP groups, repeated shapes), the compiled step time, stage times, FLOPs and
// bytes equal those of build_step + CostModel to 1e-12 relative (set_verify makes every call check), for a one-GPU
// replica, tensor parallelism, pipeline parallelism, an MoE with attention-DP and an MLA model (which is not compiled
// and goes through the exact memo). No SimGrid engine is needed: the runner does not touch the clock.
// One representative rank: a runner that compiles pure-TP shapes from rank 0 alone gives bit-identical timings to one
// that compiles every rank, for TP1, TP4, TP8 (where it is used), PP2 and MoE with EP (where it must fall back).
// Layer template: shapes built from a one-layer copy of the model give bit-identical timings to shapes built from the
// whole model (TP1, TP4), and the template is on where the one-rank path is.
#include "core/serve/analytic_step_runner.hpp"

#include <gtest/gtest.h>

#include <random>

#include "core/plan/placement.hpp"

namespace parasol::serve {
namespace {

const std::string kData = PARASOL_DATA_DIR;

void check(const std::string& model_file, const std::string& cluster_file, plan::ParallelConfig pc, bool compiled) {
  const spec::Model model = spec::load_model_file(kData + "/scenarios/models/" + model_file);
  const spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/" + cluster_file);
  const auto made = plan::make_plan(model, cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok) << pc.label();
  AnalyticStepRunner runner(made.plan, 0, cluster);
  runner.set_verify(true);
  std::mt19937_64 rng(5);
  auto uni = [&](int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  const int groups = std::max(1, pc.attn_dp);
  std::vector<plan::Batch> seen;
  for (int i = 0; i < 300; ++i) {
    plan::Batch b;
    if (!seen.empty() && i % 3 == 0) {
      // Same shape (tokens and sampled per group), other contexts: served by the compiled shape.
      b = seen[static_cast<size_t>(uni(0, static_cast<int64_t>(seen.size()) - 1))];
      for (auto& s : b.seqs) s.context += uni(0, 500);
    } else {
      const int n = static_cast<int>(uni(1, 12));
      for (int k = 0; k < n; ++k) {
        plan::SeqWork w;
        w.seq_id = k;
        w.attn_group = static_cast<int>(uni(0, groups - 1));
        if (uni(0, 3) == 0) {
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
    EXPECT_GT(t.total_s, 0);
  }
  EXPECT_EQ(runner.compiled(), compiled);
  if (compiled) {
    EXPECT_GT(runner.memo_hits(), 50);
  }
}

TEST(AnalyticStepRunner, CompiledEqualsCostModelOneGpu) {
  check("llama-2-7b.yaml", "a100-1gpu.yaml", plan::ParallelConfig{}, true);
}

TEST(AnalyticStepRunner, CompiledEqualsCostModelTensorParallel) {
  plan::ParallelConfig pc;
  pc.tp = 4;
  check("llama-3.1-70b.yaml", "dgx-h100.yaml", pc, true);
}

TEST(AnalyticStepRunner, CompiledEqualsCostModelPipelineStages) {
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.pp = 4;
  check("llama-3.1-70b.yaml", "dgx-h100.yaml", pc, true);
}

TEST(AnalyticStepRunner, CompiledEqualsCostModelMoeWithAttentionDp) {
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.attn_dp = 4;
  pc.ep = 8;
  check("mixtral-8x7b.yaml", "dgx-h100.yaml", pc, true);
}

TEST(AnalyticStepRunner, MlaModelsUseTheExactMemo) {
  plan::ParallelConfig pc;
  pc.tp = 2;
  check("tiny-deepseek.yaml", "dgx-h100.yaml", pc, false);
}

// Step times (total, stages, FLOPs, bytes) with and without the one-rank path, compared exactly, over random batches
// with repeated shapes; `one_rank`: whether the pool must take the one-rank path.
void check_one_rank(const std::string& model_file, const std::string& cluster_file, plan::ParallelConfig pc,
                    bool one_rank) {
  const spec::Model model = spec::load_model_file(kData + "/scenarios/models/" + model_file);
  const spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/" + cluster_file);
  const auto made = plan::make_plan(model, cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok) << pc.label();
  AnalyticStepRunner fast(made.plan, 0, cluster), all(made.plan, 0, cluster);
  all.set_one_rank(false);
  EXPECT_FALSE(all.one_rank());
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
      const int n = static_cast<int>(uni(1, 10));
      for (int k = 0; k < n; ++k) {
        plan::SeqWork w;
        w.seq_id = k;
        w.attn_group = static_cast<int>(uni(0, groups - 1));
        w.new_tokens = uni(0, 2) == 0 ? uni(1, 2500) : 1;
        w.context = uni(0, 1) ? 0 : uni(1, 8000);
        w.sample = uni(0, 4) != 0;
        b.seqs.push_back(w);
      }
      seen.push_back(b);
    }
    const StepTiming x = fast.run(0, b), y = all.run(0, b);
    ASSERT_EQ(x.total_s, y.total_s) << "batch " << i;
    ASSERT_EQ(x.flops, y.flops) << "batch " << i;
    ASSERT_EQ(x.bytes, y.bytes) << "batch " << i;
    ASSERT_EQ(x.stage_s, y.stage_s) << "batch " << i;
  }
  EXPECT_EQ(fast.one_rank(), one_rank);
  EXPECT_EQ(fast.memo_misses(), all.memo_misses());
  EXPECT_GT(fast.memo_hits(), 30);
}

// Step times with and without the layer template, compared exactly over random batches (new shapes and repeats).
void check_layer_template(const std::string& model_file, const std::string& cluster_file, plan::ParallelConfig pc) {
  const spec::Model model = spec::load_model_file(kData + "/scenarios/models/" + model_file);
  const spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/" + cluster_file);
  const auto made = plan::make_plan(model, cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok) << pc.label();
  AnalyticStepRunner with(made.plan, 0, cluster), without(made.plan, 0, cluster);
  without.set_layer_template(false);
  EXPECT_TRUE(with.layer_template());
  EXPECT_FALSE(without.layer_template());
  std::mt19937_64 rng(17);
  auto uni = [&](int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  for (int i = 0; i < 120; ++i) {
    plan::Batch b;
    const int n = static_cast<int>(uni(1, 40));
    for (int k = 0; k < n; ++k) {
      plan::SeqWork w;
      w.seq_id = k;
      w.new_tokens = uni(0, 3) == 0 ? uni(1, 2000) : 1;
      w.context = uni(0, 6000);
      b.seqs.push_back(w);
    }
    const StepTiming x = with.run(0, b), y = without.run(0, b);
    ASSERT_EQ(x.total_s, y.total_s) << "batch " << i;
    ASSERT_EQ(x.flops, y.flops) << "batch " << i;
    ASSERT_EQ(x.bytes, y.bytes) << "batch " << i;
  }
  EXPECT_TRUE(with.layer_template());  // its first shapes matched the full model's field by field
  EXPECT_EQ(with.memo_misses(), without.memo_misses());
}

TEST(AnalyticStepRunner, LayerTemplateEqualsFullModelTp1) {
  check_layer_template("llama-2-7b.yaml", "a100-1gpu.yaml", plan::ParallelConfig{});
}

TEST(AnalyticStepRunner, LayerTemplateEqualsFullModelTp4) {
  plan::ParallelConfig pc;
  pc.tp = 4;
  check_layer_template("llama-3.1-70b.yaml", "dgx-h100.yaml", pc);
}

TEST(AnalyticStepRunner, OneRankEqualsAllRanksTp1) {
  check_one_rank("llama-2-7b.yaml", "a100-1gpu.yaml", plan::ParallelConfig{}, true);
}

TEST(AnalyticStepRunner, OneRankEqualsAllRanksTp4) {
  plan::ParallelConfig pc;
  pc.tp = 4;
  check_one_rank("llama-3.1-70b.yaml", "dgx-h100.yaml", pc, true);
}

TEST(AnalyticStepRunner, OneRankEqualsAllRanksTp8) {
  plan::ParallelConfig pc;
  pc.tp = 8;
  check_one_rank("llama-3.1-70b.yaml", "dgx-h100.yaml", pc, true);
}

TEST(AnalyticStepRunner, OneRankFallsBackWithPipelineStages) {
  plan::ParallelConfig pc;
  pc.tp = 4;
  pc.pp = 2;
  check_one_rank("llama-3.1-70b.yaml", "dgx-h100.yaml", pc, false);
}

TEST(AnalyticStepRunner, OneRankFallsBackWithExperts) {
  plan::ParallelConfig pc;
  pc.tp = 8;
  pc.ep = 8;
  check_one_rank("mixtral-8x7b.yaml", "dgx-h100.yaml", pc, false);
}

}  // namespace
}  // namespace parasol::serve

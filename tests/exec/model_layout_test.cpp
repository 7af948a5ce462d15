// Sharded == unsharded: for each model family, every layout of up to 4 ranks (TP, PP, EP, attention-DP and mixes,
// both MoE forms) gives the logits of the single-rank run within 1e-5 relative (fp32), and the same greedy tokens.
// Ranks are threads on the local communicator (tests/mpi/ runs the same under mpirun).
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>

#include "core/plan/parallel_config.hpp"
#include "core/spec/model.hpp"
#include "exec/generate.hpp"
#include "exec/test_models.hpp"

namespace parasol::exec {
namespace {

plan::ParallelConfig layout(int tp, int pp, int ep, int adp) {
  plan::ParallelConfig c;
  c.tp = tp;
  c.pp = pp;
  c.ep = ep;
  c.attn_dp = adp;
  return c;
}

GenerateResult run(const spec::Model& m, const plan::ParallelConfig& c, const GenerateSpec& spec,
                   const RunnerOptions& opt = {}) {
  SyntheticWeights weights(7);
  GenerateResult out;
  std::mutex mu;
  run_local(c.instance_size(), 30.0, [&](int rank, Communicator& comm) {
    auto be = make_cpu_backend({0, 1});
    RankLayout l = RankLayout::make(m, c, {}, rank);
    ModelRunner runner(m, l, *be, comm, weights, opt);
    GenerateResult r = generate(runner, comm, spec, m.vocab);
    std::lock_guard<std::mutex> lk(mu);
    if (rank == 0) out = std::move(r);
  });
  return out;
}

// max |a - b| over a row, relative to the row's largest |b|
double rel_diff(const std::vector<float>& a, const std::vector<float>& b, size_t row_len) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t r = 0; r * row_len < b.size(); ++r) {
    double scale = 0, d = 0;
    for (size_t j = r * row_len; j < (r + 1) * row_len && j < b.size(); ++j) {
      scale = std::max(scale, std::fabs(static_cast<double>(b[j])));
      d = std::max(d, std::fabs(static_cast<double>(a[j]) - b[j]));
    }
    worst = std::max(worst, d / std::max(scale, 1e-30));
  }
  return worst;
}

GenerateSpec small_spec(int64_t vocab) {
  GenerateSpec s;
  s.prompts = synthetic_prompts(4, 5, 11, vocab, 3);
  s.decode_steps = 6;
  s.prompt_logits = true;
  return s;
}

// model_name: a builtin test model, or "tiny-NAME" for the model file scenarios/models/tiny-NAME.yaml.
void check_layouts(const std::string& model_name, const std::vector<plan::ParallelConfig>& layouts) {
  spec::Model m = model_name.rfind("tiny-", 0) == 0
                      ? spec::load_model_file(std::string(PARASOL_DATA_DIR) + "/scenarios/models/" + model_name + ".yaml")
                      : test_model(model_name);
  GenerateSpec spec = small_spec(m.vocab);
  RunnerOptions opt;
  opt.all_logits = true;
  GenerateResult ref = run(m, layout(1, 1, 1, 1), spec, opt);
  ASSERT_EQ(ref.tokens.size(), spec.prompts.size());
  for (const auto& c : layouts) {
    SCOPED_TRACE(model_name + " " + layout_label(c));
    GenerateResult got = run(m, c, spec, opt);
    for (size_t i = 0; i < spec.prompts.size(); ++i) {
      ASSERT_EQ(ref.prompt_logits[i].size(), spec.prompts[i].size() * m.vocab);
      ASSERT_EQ(got.last_logits[i].size(), static_cast<size_t>(m.vocab));
      EXPECT_LE(rel_diff(got.prompt_logits[i], ref.prompt_logits[i], m.vocab), 1e-5) << "prompt logits of seq " << i;
      EXPECT_LE(rel_diff(got.last_logits[i], ref.last_logits[i], m.vocab), 1e-5) << "last logits of seq " << i;
      EXPECT_EQ(got.tokens[i], ref.tokens[i]) << "greedy tokens of seq " << i;
    }
  }
}

TEST(ModelLayouts, LlamaGqaShardedLogitsEqualUnsharded) {
  check_layouts("test-llama", {layout(2, 1, 1, 1), layout(4, 1, 1, 1), layout(1, 2, 1, 1), layout(2, 2, 1, 1),
                               layout(1, 1, 1, 2), layout(2, 1, 1, 2)});
}

TEST(ModelLayouts, MixtralMoeShardedLogitsEqualUnsharded) {
  check_layouts("test-mixtral", {layout(2, 1, 1, 1), layout(4, 1, 1, 1), layout(1, 2, 1, 1), layout(2, 1, 2, 1),
                                 layout(4, 1, 4, 1), layout(2, 2, 1, 1), layout(1, 1, 2, 2), layout(4, 1, 2, 1),
                                 layout(2, 1, 2, 2), layout(1, 1, 1, 2)});
}

TEST(ModelLayouts, DeepseekMlaGroupRoutingShardedLogitsEqualUnsharded) {
  check_layouts("test-deepseek", {layout(2, 1, 1, 1), layout(4, 1, 1, 1), layout(1, 2, 1, 1), layout(2, 1, 2, 1),
                                  layout(4, 1, 4, 1), layout(2, 2, 1, 1), layout(1, 1, 2, 2), layout(2, 1, 4, 2)});
}

// The model files of scenarios/models/ (tiny-llama: GQA 2:1; tiny-mixtral: 4 experts top-2; tiny-deepseek: MLA with
// q compression, 8 experts in 4 groups, a shared expert): the same property on the done-when layouts.
TEST(ModelLayouts, TinyModelFilesShardedLogitsEqualUnsharded) {
  check_layouts("tiny-llama", {layout(2, 1, 1, 1), layout(4, 1, 1, 1), layout(1, 2, 1, 1), layout(2, 2, 1, 1)});
  check_layouts("tiny-mixtral", {layout(2, 1, 1, 1), layout(4, 1, 1, 1), layout(1, 2, 1, 1), layout(2, 1, 2, 1),
                                 layout(4, 1, 4, 1), layout(2, 2, 1, 1), layout(1, 1, 2, 2)});
  check_layouts("tiny-deepseek", {layout(2, 1, 1, 1), layout(4, 1, 1, 1), layout(1, 2, 1, 1), layout(2, 1, 2, 1),
                                  layout(4, 1, 4, 1), layout(2, 2, 1, 1), layout(1, 1, 2, 2)});
}

// Decoding with the paged KV cache equals recomputing the whole sequence from scratch.
void check_decode_vs_recompute(const std::string& model_name, const plan::ParallelConfig& c) {
  spec::Model m = test_model(model_name);
  GenerateSpec spec;
  spec.prompts = synthetic_prompts(2, 6, 9, m.vocab, 11);
  spec.decode_steps = 64;
  GenerateResult dec = run(m, c, spec);
  GenerateSpec again;
  for (size_t i = 0; i < spec.prompts.size(); ++i) {
    std::vector<int32_t> full = spec.prompts[i];
    // every generated token but the last was fed back: prompt + tokens[0 .. 63]
    full.insert(full.end(), dec.tokens[i].begin(), dec.tokens[i].end() - 1);
    again.prompts.push_back(full);
  }
  again.prefill_chunk = 0;
  GenerateResult re = run(m, c, again);
  for (size_t i = 0; i < spec.prompts.size(); ++i) {
    EXPECT_LE(rel_diff(dec.last_logits[i], re.last_logits[i], m.vocab), 1e-5) << model_name << " seq " << i;
    EXPECT_EQ(re.tokens[i][0], dec.tokens[i].back());
  }
}

TEST(ModelDecode, KvCacheDecodeOf64StepsEqualsRecompute) {
  check_decode_vs_recompute("test-llama", layout(1, 1, 1, 1));
  check_decode_vs_recompute("test-mixtral", layout(2, 1, 2, 1));
  check_decode_vs_recompute("test-deepseek", layout(2, 1, 1, 1));
}

TEST(ModelDecode, ChunkedPrefillEqualsWholePrefill) {
  spec::Model m = test_model("test-llama");
  GenerateSpec a = small_spec(m.vocab), b = a;
  b.prefill_chunk = 3;
  RunnerOptions opt;
  opt.all_logits = true;
  GenerateResult ra = run(m, layout(1, 1, 1, 1), a, opt), rb = run(m, layout(2, 1, 1, 1), b, opt);
  for (size_t i = 0; i < a.prompts.size(); ++i) {
    EXPECT_LE(rel_diff(rb.prompt_logits[i], ra.prompt_logits[i], m.vocab), 1e-5);
    EXPECT_EQ(rb.tokens[i], ra.tokens[i]);
  }
}

TEST(ModelDecode, Bf16WeightsAreTheRoundedFp32Weights) {
  // bf16 storage: sharded bf16 == unsharded bf16 (every shard is the slice of the same rounded tensor), and
  // close to fp32 (bf16 has 8 bits of mantissa).
  spec::Model m = test_model("test-llama");
  GenerateSpec s = small_spec(m.vocab);
  s.decode_steps = 0;  // prompt logits only: greedy tokens may differ between bf16 and fp32
  RunnerOptions bf;
  bf.all_logits = true;
  bf.weight_type = ElemType::kBf16;
  bf.kv_type = ElemType::kBf16;
  RunnerOptions fp = bf;
  fp.weight_type = fp.kv_type = ElemType::kF32;
  GenerateResult a = run(m, layout(1, 1, 1, 1), s, bf), b = run(m, layout(2, 2, 1, 1), s, bf),
                 f = run(m, layout(1, 1, 1, 1), s, fp);
  for (size_t i = 0; i < s.prompts.size(); ++i) {
    EXPECT_LE(rel_diff(b.prompt_logits[i], a.prompt_logits[i], m.vocab), 1e-5);
    double d = rel_diff(a.prompt_logits[i], f.prompt_logits[i], m.vocab);
    EXPECT_LE(d, 0.05);
    EXPECT_GT(d, 0.0);
  }
}

}  // namespace
}  // namespace parasol::exec

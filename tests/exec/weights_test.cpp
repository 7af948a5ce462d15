// Weight sources: synthetic shards are exact slices of the unsharded tensor; a safetensors checkpoint written here
// reads back (fp32 exactly, bf16/fp16 as rounded), slices read only their part, bad files are ConfigErrors; and a model
// run from a checkpoint equals the run from the synthetic weights it was written from.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "core/common/error.hpp"
#include "exec/generate.hpp"
#include "exec/half.hpp"
#include "exec/test_models.hpp"
#include "exec/weights.hpp"

namespace parasol::exec {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("parasol_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p;
}

TEST(SyntheticWeights, EveryShardIsTheSliceOfTheFullTensor) {
  SyntheticWeights w(42);
  const std::vector<int64_t> shape{12, 10};
  auto full = w.read_slice("model.layers.0.mlp.up_proj.weight", shape, Slice{});
  ASSERT_EQ(full.size(), 120u);
  auto rows = w.read_slice("model.layers.0.mlp.up_proj.weight", shape, Slice{0, 3, 7});
  for (int64_t r = 3; r < 7; ++r)
    for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(rows[(r - 3) * 10 + c], full[r * 10 + c]);
  auto cols = w.read_slice("model.layers.0.mlp.up_proj.weight", shape, Slice{1, 2, 5});
  for (int64_t r = 0; r < 12; ++r)
    for (int64_t c = 2; c < 5; ++c) EXPECT_EQ(cols[r * 3 + c - 2], full[r * 10 + c]);
  // different names and seeds give different tensors; norms sit around 1
  EXPECT_NE(w.read_slice("model.layers.1.mlp.up_proj.weight", shape, Slice{}), full);
  EXPECT_NE(SyntheticWeights(43).read_slice("model.layers.0.mlp.up_proj.weight", shape, Slice{}), full);
  for (float v : w.read_slice("model.norm.weight", {64}, Slice{})) EXPECT_NEAR(v, 1.0f, 0.1f);
  EXPECT_THROW(w.read_slice("x", shape, Slice{0, 5, 13}), ConfigError);
}

TEST(Safetensors, RoundTripsEachDtypeAndReadsOnlyTheSlice) {
  fs::path dir = temp_dir("st");
  SyntheticWeights w(3);
  std::map<std::string, SafetensorsTensor> ts;
  ts["a.weight"] = {{6, 5}, w.read_slice("a.weight", {6, 5}, Slice{})};
  ts["b.norm.weight"] = {{5}, w.read_slice("b.norm.weight", {5}, Slice{})};
  for (std::string dt : {"F32", "BF16", "F16"}) {
    SCOPED_TRACE(dt);
    fs::remove_all(dir);
    fs::create_directories(dir);
    write_safetensors((dir / "model.safetensors").string(), ts, dt);
    SafetensorsCheckpoint ck(dir.string());
    EXPECT_TRUE(ck.has("a.weight"));
    EXPECT_EQ(ck.entries().at("a.weight").dtype, dt);
    auto all = ck.read_slice("a.weight", {6, 5}, Slice{});
    auto part = ck.read_slice("a.weight", {6, 5}, Slice{1, 1, 4});
    const auto& ref = ts["a.weight"].values;
    for (size_t i = 0; i < ref.size(); ++i) {
      float want = dt == "F32" ? ref[i] : dt == "BF16" ? bf16_to_f32(f32_to_bf16(ref[i])) : f16_to_f32(f32_to_f16(ref[i]));
      EXPECT_EQ(all[i], want);
    }
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t c = 1; c < 4; ++c) EXPECT_EQ(part[r * 3 + c - 1], all[r * 5 + c]);
    EXPECT_THROW(ck.read_slice("a.weight", {5, 6}, Slice{}), ConfigError);  // shape mismatch
    EXPECT_THROW(ck.read_slice("missing", {1}, Slice{}), ConfigError);
  }
  // a truncated file is a ConfigError, not a crash
  std::ofstream(dir / "model.safetensors", std::ios::binary | std::ios::trunc) << "abc";
  EXPECT_THROW(SafetensorsCheckpoint(dir.string()), ConfigError);
  fs::remove_all(dir);
}

TEST(Safetensors, ModelFromACheckpointEqualsTheSyntheticModelItWasWrittenFrom) {
  spec::Model m = test_model("test-mixtral");
  SyntheticWeights synth(9);
  // Write every tensor the runner reads, in two files (as sharded HF checkpoints are).
  const int64_t H = m.hidden, D = m.head_dim, F = m.moe.expert_ffn;
  std::map<std::string, std::vector<int64_t>> shapes{{"model.embed_tokens.weight", {m.vocab, H}},
                                                      {"lm_head.weight", {m.vocab, H}},
                                                      {"model.norm.weight", {H}}};
  for (int64_t l = 0; l < m.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    shapes[p + "input_layernorm.weight"] = {H};
    shapes[p + "post_attention_layernorm.weight"] = {H};
    shapes[p + "self_attn.q_proj.weight"] = {m.heads * D, H};
    shapes[p + "self_attn.k_proj.weight"] = {m.kv_heads * D, H};
    shapes[p + "self_attn.v_proj.weight"] = {m.kv_heads * D, H};
    shapes[p + "self_attn.o_proj.weight"] = {H, m.heads * D};
    shapes[p + "block_sparse_moe.gate.weight"] = {m.moe.num_experts, H};
    for (int64_t e = 0; e < m.moe.num_experts; ++e) {
      std::string ep = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      shapes[ep + "w1.weight"] = {F, H};
      shapes[ep + "w3.weight"] = {F, H};
      shapes[ep + "w2.weight"] = {H, F};
    }
  }
  fs::path dir = temp_dir("ckpt");
  std::map<std::string, SafetensorsTensor> a, b;
  for (const auto& [name, shape] : shapes)
    (name < "model.layers.1" ? a : b)[name] = {shape, synth.read_slice(name, shape, Slice{})};
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), a, "F32");
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), b, "F32");
  SafetensorsCheckpoint ck(dir.string());

  GenerateSpec spec;
  spec.prompts = synthetic_prompts(2, 4, 8, m.vocab, 1);
  spec.decode_steps = 3;
  auto run = [&](const WeightSource& w, plan::ParallelConfig c) {
    GenerateResult out;
    std::mutex mu;
    run_local(c.instance_size(), 30, [&](int rank, Communicator& comm) {
      auto be = make_cpu_backend({0, 1});
      ModelRunner r(m, RankLayout::make(m, c, {}, rank), *be, comm, w, {});
      auto res = generate(r, comm, spec, m.vocab);
      std::lock_guard<std::mutex> lk(mu);
      if (rank == 0) out = res;
    });
    return out;
  };
  plan::ParallelConfig one, ep2;
  ep2.tp = 2;
  ep2.ep = 2;
  GenerateResult s = run(synth, one), c = run(ck, ep2), c1 = run(ck, one);
  EXPECT_EQ(c1.last_logits, s.last_logits);  // same weights, same layout: bitwise
  EXPECT_EQ(c.tokens, s.tokens);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace parasol::exec

// Model: parameter counts against the published ones, KV bytes and FLOPs against closed forms, HF config.json import
// against our YAML, and one test per class of bad input.
#include "core/spec/model.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/common/error.hpp"

namespace parasol::spec {
namespace {

const std::string kModels = std::string(PARASOL_DATA_DIR) + "/scenarios/models/";
const std::vector<std::string> kPublished{"llama-3.1-8b",    "llama-3.1-70b", "llama-3.1-405b", "mixtral-8x7b",
                                          "qwen3-235b-a22b", "deepseek-v3",   "llama-2-7b"};
const std::vector<std::string> kTiny{"tiny-llama", "tiny-mixtral", "tiny-deepseek"};

Model load(const std::string& name) {
  return load_model_file(kModels + name + ".yaml");
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Replaces the first occurrence of `from` in `text` (which must be there) by `to`.
std::string mutate(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << "test setup: '" << from << "' not in the file";
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

// Loads `text` and expects a ConfigError located in the file (line > 0) at `key_path`, whose message holds `needle`.
void expect_config_error(const std::string& text, const std::string& key_path, const std::string& needle = "") {
  try {
    load_model(yaml::load_string(text, "mutated.yaml"));
    ADD_FAILURE() << "no error; expected one at '" << key_path << "'";
  } catch (const ConfigError& e) {
    EXPECT_GT(e.line(), 0) << e.what();
    EXPECT_EQ(e.key_path(), key_path) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ModelParams, PublishedTotalsMatchWithinHalfAPercent) {
  struct Published {
    std::string name;
    double total;
  };
  // Model cards: Llama 3.1 (8.03B, 70.6B, 405.9B as listed on the HF model pages), Mixtral (46.7B), Qwen3 (235B),
  // DeepSeek-V3 (671B main model; the 14B multi-token-prediction module is excluded, as in our count), Llama 2 7B
  // (6.74B on the HF page).
  for (const auto& p : std::vector<Published>{{"llama-3.1-8b", 8.03e9},
                                              {"llama-3.1-70b", 70.6e9},
                                              {"llama-3.1-405b", 405.9e9},
                                              {"mixtral-8x7b", 46.7e9},
                                              {"qwen3-235b-a22b", 235e9},
                                              {"deepseek-v3", 671e9},
                                              {"llama-2-7b", 6.74e9}}) {
    const ParamCounts c = count_params(load(p.name));
    EXPECT_NEAR(c.total / p.total, 1.0, 0.005) << p.name << ": " << c.total;
  }
}

TEST(ModelParams, PublishedActiveCountsMatch) {
  // Mixtral's published 12.9B active counts both embedding matrices; with the same definition our count is 12.88B.
  EXPECT_NEAR(count_params(load("mixtral-8x7b")).active_per_token / 12.9e9, 1.0, 0.005);
  // DeepSeek-V3's and Qwen3's active counts are published to two significant figures only ("37B", "22B"). With the
  // definition that reproduces Mixtral's figure (both embeddings counted) they come out at 37.55B and 22.16B; within
  // the rounding of the published figure plus the embedding-lookup ambiguity (0.93B, 0.62B), i.e. within 2% and 1%.
  EXPECT_NEAR(count_params(load("deepseek-v3")).active_per_token / 37e9, 1.0, 0.02);
  EXPECT_NEAR(count_params(load("qwen3-235b-a22b")).active_per_token / 22e9, 1.0, 0.01);
}

TEST(ModelParams, ComponentsSumToTotalAndDenseModelsAreFullyActive) {
  for (const auto& name : kPublished) {
    const Model m = load(name);
    const ParamCounts c = count_params(m);
    EXPECT_DOUBLE_EQ(c.total, c.embedding + c.lm_head + c.attention + c.dense_mlp + c.routed_experts +
                                  c.shared_experts + c.router + c.norms)
        << name;
    if (!m.is_moe()) {
      EXPECT_DOUBLE_EQ(c.active_per_token, c.total) << name;
    }
    if (m.is_moe()) {
      // Active = total less the routed experts a token skips: (E - k)/E of them.
      const double e = static_cast<double>(m.moe.num_experts), k = static_cast<double>(m.moe.top_k);
      EXPECT_NEAR(c.active_per_token, c.total - c.routed_experts * (e - k) / e, c.total * 1e-12) << name;
    }
  }
}

TEST(ModelParams, LlamaClosedFormAndTiedEmbeddings) {
  Model m = load("llama-3.1-8b");
  const double h = 4096, kv = 1024, f = 14336, v = 128256, l = 32;
  const double per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h;
  EXPECT_DOUBLE_EQ(count_params(m).total, l * per_layer + 2 * v * h + h);
  m.tie_embeddings = true;
  EXPECT_DOUBLE_EQ(count_params(m).total, l * per_layer + v * h + h);
  EXPECT_DOUBLE_EQ(count_params(m).lm_head, 0.0);
}

TEST(ModelParams, DeepSeekMlaAttentionClosedForm) {
  const Model m = load("deepseek-v3");
  // q_a, q_a_norm, q_b, kv_a (with the shared rope key), kv_a_norm, kv_b, o — per layer.
  const double h = 7168, H = 128;
  const double per_layer =
      h * 1536 + 1536 + 1536 * H * (128 + 64) + h * (512 + 64) + 512 + 512 * H * (128 + 128) + H * 128 * h;
  EXPECT_DOUBLE_EQ(count_params(m).attention, 61 * per_layer);
  EXPECT_EQ(m.moe_layers(), 58);
  EXPECT_DOUBLE_EQ(count_params(m).shared_experts, 58 * 3 * h * 2048);
}

TEST(ModelBytes, KvBytesPerTokenMatchClosedFormForEveryShippedModel) {
  // Known per-token KV sizes: Llama-3.1-8B / Mixtral 128 KiB, 70B 320 KiB, Llama-2-7B 512 KiB, DeepSeek-V3 70,272 B.
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(load("llama-3.1-8b")), 128.0 * 1024);
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(load("mixtral-8x7b")), 128.0 * 1024);
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(load("llama-3.1-70b")), 320.0 * 1024);
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(load("llama-2-7b")), 512.0 * 1024);
  EXPECT_DOUBLE_EQ(kv_bytes_per_token(load("deepseek-v3")), 70272.0);
  for (const auto& name : kPublished) {
    const Model m = load(name);
    const double bytes = dtype_bytes(m.kv_dtype);
    const double expected = m.mla ? double(m.mla->kv_lora_rank + m.mla->qk_rope_head_dim) * m.layers * bytes
                                  : 2.0 * m.kv_heads * m.head_dim * m.layers * bytes;
    EXPECT_DOUBLE_EQ(kv_bytes_per_token(m), expected) << name;
  }
}

TEST(ModelBytes, WeightBytesScaleWithDtypeExceptNormsAndRouter) {
  for (const auto& name : kPublished) {
    const Model m = load(name);
    const ParamCounts c = count_params(m);
    EXPECT_DOUBLE_EQ(weight_bytes(m, DType::kBf16), 2.0 * c.total) << name;
    // With K params kept in bf16 (norms, router): fp8 = (T - K) + 2K = T + K and int4 = (T - K)/2 + 2K = T/2 + 1.5K.
    const double kept = weight_bytes(m, DType::kFp8) - c.total;
    EXPECT_GT(kept, 0.0) << name;
    EXPECT_LT(kept, c.total * 0.01) << name;
    EXPECT_NEAR(weight_bytes(m, DType::kInt4) - c.total * 0.5, (weight_bytes(m, DType::kFp8) - c.total) * 1.5,
                c.total * 1e-9)
        << name;
  }
}

TEST(ModelFlops, PrefillEqualsTheSumOfPerTokenFlops) {
  for (const auto& name : {"llama-3.1-8b", "deepseek-v3", "qwen3-235b-a22b", "tiny-mixtral"}) {
    const Model m = load(name);
    double sum = 0;
    for (int64_t c = 0; c < 300; ++c) sum += flops_per_token(m, c);
    EXPECT_NEAR(prefill_flops(m, 300) / sum, 1.0, 1e-12) << name;
  }
}

TEST(ModelFlops, DenseDecodeFollowsTwoNPlusAttention) {
  const Model m = load("llama-3.1-8b");
  const ParamCounts c = count_params(m);
  // 2 x (parameters multiplied: all but the embedding lookup and norm vectors) + q.k and p.v: 4 x layers x heads x
  // head_dim per key, over context + 1 keys.
  const double attn_per_key = 4.0 * 32 * 32 * 128;
  EXPECT_NEAR(flops_per_token(m, 0), 2.0 * (c.total - c.embedding - c.norms) + attn_per_key, 1.0);
  EXPECT_NEAR(flops_per_token(m, 8191) - flops_per_token(m, 0), attn_per_key * 8191, 1.0);
}

TEST(ModelFlops, MoeCountsOnlyVisitedExperts) {
  const Model m = load("mixtral-8x7b");
  const ParamCounts c = count_params(m);
  EXPECT_NEAR(flops_per_token(m, 0), 2.0 * (c.active_per_token - c.embedding - c.norms) + 4.0 * 32 * 32 * 128, 1.0);
}

TEST(ModelHfImport, EveryShippedConfigJsonEqualsItsYaml) {
  for (const auto& name : kPublished) {
    const Model y = load(name);
    const Model h = load_model_file(kModels + "hf/" + name + ".json");
    EXPECT_EQ(h.name, name);
    // Everything but the provenance-free fields must agree: compare the full JSON description (fields and derived).
    EXPECT_EQ(to_json(h).dump(), to_json(y).dump()) << name;
  }
}

TEST(ModelHfImport, DeepSeekFieldsAreRead) {
  const Model m = load_model_file(kModels + "hf/deepseek-v3.json");
  ASSERT_TRUE(m.mla);
  EXPECT_EQ(m.attention, AttentionKind::kMla);
  EXPECT_EQ(m.mla->q_lora_rank, 1536);
  EXPECT_EQ(m.mla->kv_lora_rank, 512);
  EXPECT_EQ(m.moe.first_k_dense, 3);
  EXPECT_EQ(m.moe.num_shared_experts, 1);
  EXPECT_EQ(m.moe.n_group, 8);
  EXPECT_EQ(m.moe.topk_group, 4);
  EXPECT_DOUBLE_EQ(m.moe.routed_scaling_factor, 2.5);
  EXPECT_EQ(m.moe.scoring, "sigmoid");
  EXPECT_EQ(m.rope_scaling.type, "yarn");
  EXPECT_EQ(m.weight_dtype, DType::kFp8);
  const Model l = load_model_file(kModels + "hf/llama-3.1-8b.json");
  EXPECT_EQ(l.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(l.rope_scaling.factor, 8.0);
  EXPECT_EQ(l.rope_scaling.original_max_position, 8192);
}

// A model read from a Hugging Face config.json is named as the checkpoint names itself, never "config".
TEST(ModelHfImport, NameComesFromNameOrPathThenTheCheckpointFolder) {
  const std::string llama = read_text(kModels + "hf/llama-3.1-8b.json");
  EXPECT_EQ(load_model(yaml::load_string(llama, "/ckpt/Llama-3.1-8B-Instruct/config.json")).name, "Llama-3.1-8B-Instruct");
  EXPECT_EQ(load_model(yaml::load_string(llama, "/somewhere/llama-3.1-8b.json")).name, "llama-3.1-8b");
  const std::string named = mutate(llama, "{", "{\"_name_or_path\": \"meta-llama/Llama-3.1-8B/\",");
  ASSERT_NE(named, llama);
  EXPECT_EQ(load_model(yaml::load_string(named, "/ckpt/whatever/config.json")).name, "Llama-3.1-8B");
}

TEST(ModelHfImport, QwenSparseStepAndMistralQwen2Architectures) {
  const std::string qwen = read_text(kModels + "hf/qwen3-235b-a22b.json");
  const Model q =
      load_model(yaml::load_string(mutate(qwen, "\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 2"), "q.json"));
  // HF: layer l is MoE when (l + 1) % decoder_sparse_step == 0.
  for (int64_t l = 0; l < q.layers; ++l) EXPECT_EQ(q.is_moe_layer(l), (l + 1) % 2 == 0) << l;
  EXPECT_EQ(q.moe_layers(), 47);

  const std::string llama = read_text(kModels + "hf/llama-3.1-8b.json");
  const Model mis = load_model(yaml::load_string(mutate(llama, "LlamaForCausalLM", "MistralForCausalLM"), "m.json"));
  EXPECT_EQ(mis.architecture, "MistralForCausalLM");
  EXPECT_DOUBLE_EQ(count_params(mis).total, count_params(load("llama-3.1-8b")).total);
  // Qwen2 has biases on q, k and v.
  const Model q2 = load_model(yaml::load_string(mutate(llama, "LlamaForCausalLM", "Qwen2ForCausalLM"), "q2.json"));
  EXPECT_TRUE(q2.qkv_bias);
  EXPECT_DOUBLE_EQ(count_params(q2).attention - count_params(mis).attention, 32.0 * (4096 + 2 * 1024));
}

TEST(ModelShipped, TinyModelsHaveTheirTestShapes) {
  const Model l = load("tiny-llama");
  EXPECT_EQ(l.attention, AttentionKind::kGqa);
  EXPECT_EQ(l.weight_dtype, DType::kFp32);
  const Model x = load("tiny-mixtral");
  EXPECT_EQ(x.moe.num_experts, 4);
  EXPECT_EQ(x.moe.top_k, 2);
  EXPECT_EQ(x.moe_layers(), x.layers);
  const Model d = load("tiny-deepseek");
  EXPECT_EQ(d.attention, AttentionKind::kMla);
  EXPECT_EQ(d.moe.n_group, 4);
  EXPECT_EQ(d.moe.topk_group, 2);
  EXPECT_EQ(d.moe_layers(), d.layers - 1);
  for (const auto& name : kTiny) EXPECT_NO_THROW(to_json(load(name)).dump()) << name;
}

// --- bad input, one test per class -------------------------------------------------------------------------------

TEST(ModelBadInput, MissingKeyNamesIt) {
  const std::string t = read_text(kModels + "llama-3.1-8b.yaml");
  expect_config_error(mutate(t, "hidden: 4096", "# no hidden"), "hidden", "required");
  const std::string hf = read_text(kModels + "hf/llama-3.1-8b.json");
  expect_config_error(mutate(hf, "\"hidden_size\": 4096,", ""), "hidden_size", "required");
  const std::string ds = read_text(kModels + "deepseek-v3.yaml");
  expect_config_error(mutate(ds, "  kv_lora_rank: 512", ""), "mla.kv_lora_rank", "required");
}

TEST(ModelBadInput, UnknownKeySuggestsTheClosest) {
  const std::string t = read_text(kModels + "llama-3.1-8b.yaml");
  expect_config_error(mutate(t, "hidden: 4096", "hiden: 4096"), "hiden", "did you mean 'hidden'");
  const std::string ds = read_text(kModels + "deepseek-v3.yaml");
  expect_config_error(mutate(ds, "  top_k: 8", "  topk: 8"), "moe.topk", "did you mean 'top_k'");
}

TEST(ModelBadInput, WrongTypeIsRejected) {
  const std::string t = read_text(kModels + "llama-3.1-8b.yaml");
  expect_config_error(mutate(t, "heads: 32", "heads: many"), "heads", "integer");
  expect_config_error(mutate(t, "layers: 32", "layers: 32.5"), "layers", "integer");
  expect_config_error(mutate(t, "tie_embeddings: false", "tie_embeddings: 3"), "tie_embeddings", "true or false");
  expect_config_error(mutate(t, "weight_dtype: bf16", "weight_dtype: bf17"), "weight_dtype", "dtype");
  const std::string hf = read_text(kModels + "hf/mixtral-8x7b.json");
  expect_config_error(mutate(hf, "\"num_local_experts\": 8", "\"num_local_experts\": \"eight\""), "num_local_experts",
                      "integer");
}

TEST(ModelBadInput, OutOfRangeAndInconsistentValues) {
  const std::string t = read_text(kModels + "llama-3.1-8b.yaml");
  expect_config_error(mutate(t, "layers: 32", "layers: 0"), "layers", "[1,");
  expect_config_error(mutate(t, "kv_heads: 8", "kv_heads: 3"), "kv_heads", "divides heads");
  const std::string x = read_text(kModels + "mixtral-8x7b.yaml");
  expect_config_error(mutate(x, "top_k: 2", "top_k: 9"), "moe.top_k", "num_experts");
  const std::string ds = read_text(kModels + "deepseek-v3.yaml");
  expect_config_error(mutate(ds, "n_group: 8", "n_group: 7"), "moe.n_group", "divisor");
  const std::string tiny = read_text(kModels + "tiny-deepseek.yaml");
  expect_config_error(mutate(mutate(tiny, "topk_group: 2", "topk_group: 1"), "top_k: 2", "top_k: 3"), "moe.top_k",
                      "topk_group");
  const std::string hf = read_text(kModels + "hf/llama-3.1-8b.json");
  expect_config_error(mutate(hf, "\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5"), "num_key_value_heads",
                      "divides heads");
}

TEST(ModelBadInput, SchemaAndArchitectureAreChecked) {
  const std::string t = read_text(kModels + "llama-3.1-8b.yaml");
  expect_config_error(mutate(t, "parasol.model/1", "parasol.model/9"), "schema", "parasol.model/1");
  expect_config_error(mutate(t, "architecture: LlamaForCausalLM", "architecture: LlamaForCausalLMM"), "architecture",
                      "did you mean 'LlamaForCausalLM'");
  const std::string hf = read_text(kModels + "hf/llama-3.1-8b.json");
  expect_config_error(mutate(hf, "LlamaForCausalLM", "GPT2LMHeadModel"), "architectures[0]", "DeepseekV3ForCausalLM");
  expect_config_error(mutate(hf, "\"silu\"", "\"gelu\""), "hidden_act", "silu");
}

TEST(ModelBadInput, MissingFileIsAConfigError) {
  EXPECT_THROW(load_model_file(kModels + "no-such-model.yaml"), ConfigError);
}

}  // namespace
}  // namespace parasol::spec

// Model: the architecture of a decoder-only LLM as the planner, the cost model and the executor need it, and the
// quantities derived from it (parameters, weight bytes, KV bytes per token, FLOPs per token). Loaded from our YAML
// schema (scenarios/models/*.yaml, `schema: parasol.model/1`) or imported from a Hugging Face config.json.
// Thread behaviour: plain value; the derived functions are pure.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "core/common/yaml_node.hpp"

#include <cstdint>
#include <optional>
#include <string>

#include "core/common/dtype.hpp"

namespace parasol::spec {

enum class AttentionKind { kMha, kGqa, kMla };

struct RopeScaling {
  std::string type = "none";  // "none" | "llama3" | "yarn" (yarn: dims only, numerics follow HF)
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
  // yarn only (DeepSeek-V3): attention-scale and ramp parameters as in HF's config.
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

// Multi-head latent attention (DeepSeek-V2/V3).
struct MlaSpec {
  int64_t q_lora_rank = 0;  // 0: q is projected directly (no q compression)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
};

struct MoeSpec {
  int64_t num_experts = 0;  // routed experts; 0 = dense model
  int64_t top_k = 0;
  int64_t num_shared_experts = 0;
  int64_t expert_ffn = 0;         // intermediate size of one routed (and shared) expert
  int64_t first_k_dense = 0;      // the first k layers use a dense MLP of Model::ffn
  int64_t layer_freq = 1;         // every n-th layer (after first_k_dense) is MoE
  std::string scoring = "softmax";  // "softmax" (Mixtral, Qwen3-MoE) | "sigmoid" (DeepSeek-V3)
  bool norm_topk_prob = true;     // renormalize the top-k weights
  int64_t n_group = 1;            // group-limited routing (DeepSeek-V3): groups of experts ...
  int64_t topk_group = 1;         // ... of which the best topk_group are eligible
  double routed_scaling_factor = 1.0;
};

struct Model {
  std::string name;
  std::string architecture;  // HF architecture, e.g. "LlamaForCausalLM"
  int64_t hidden = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn = 0;  // dense MLP intermediate size
  int64_t vocab = 0;
  int64_t max_position = 0;
  // Sliding-window attention (Mistral): each token attends the previous `sliding_window` tokens only, and engines
  // keep only the window's KV; 0: full attention.
  int64_t sliding_window = 0;
  bool tie_embeddings = false;
  bool qkv_bias = false;  // Qwen2
  bool qk_norm = false;   // Qwen3
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  AttentionKind attention = AttentionKind::kGqa;
  std::optional<MlaSpec> mla;
  MoeSpec moe;
  DType weight_dtype = DType::kBf16;
  DType kv_dtype = DType::kBf16;
  DType act_dtype = DType::kBf16;

  bool is_moe() const { return moe.num_experts > 0; }
  // True when layer `l` (0-based) has a routed-expert MLP.
  bool is_moe_layer(int64_t l) const {
    return is_moe() && l >= moe.first_k_dense && ((l - moe.first_k_dense) % moe.layer_freq == 0);
  }
  int64_t moe_layers() const;
};

struct ParamCounts {
  double embedding = 0;      // input embedding
  double lm_head = 0;        // output projection (0 when tied)
  double attention = 0;      // all layers, incl. norms inside attention (MLA norms)
  double dense_mlp = 0;      // all dense-MLP layers
  double routed_experts = 0; // all routed experts of all MoE layers
  double shared_experts = 0;
  double router = 0;         // gate weights
  double norms = 0;          // layer norms + final norm
  double total = 0;
  double active_per_token = 0;  // total minus the routed experts a token does not visit
};

ParamCounts count_params(const Model& m);
// Bytes of all weights stored in `dtype` (norms and router kept in bf16, as deployments do).
double weight_bytes(const Model& m, DType dtype);
// KV-cache bytes per token over all layers (GQA: 2 x kv_heads x head_dim; MLA: kv_lora_rank + qk_rope_head_dim).
double kv_bytes_per_token(const Model& m);
// FLOPs (multiply-add = 2) of one forward for a token at context position `context` (attention over `context`
// previous tokens + itself), excluding nothing: GEMMs with LM head plus attention score/value products.
double flops_per_token(const Model& m, int64_t context);
// FLOPs of a prefill of `tokens` tokens from empty context (causal attention).
double prefill_flops(const Model& m, int64_t tokens);

// Loading. `load_model` reads our schema (`schema: parasol.model/1`) or, when the map has `architectures` /
// `model_type`, a Hugging Face config.json. Errors are ConfigError with file:line:col and key path.
Model load_model(const yaml::Node& node);
Model load_model_file(const std::string& path);
// Machine-readable description (parameters, KV bytes, FLOPs included), for `describe --json`.
nlohmann::json to_json(const Model& m);

std::string to_string(AttentionKind k);

}  // namespace parasol::spec

// Quantities derived from a Model: parameter counts, weight and KV bytes, FLOPs per token, and the JSON description.
// Conventions (docs/schema-model.md): a SwiGLU MLP has 3 matrices (gate, up, down); biases exist only on q/k/v when
// `qkv_bias`; norm weights are one vector of `hidden` (or of the normed width); the DeepSeek-V3 multi-token-prediction
// module is not part of the model (its published 671B exclude it); MLA attention FLOPs are those of HF's
// non-absorbed form (q.k over qk_nope+qk_rope dims, p.v over v_head_dim dims per head).
#include "core/spec/model.hpp"

#include <nlohmann/json.hpp>

namespace parasol::spec {
namespace {

// Parameters of one layer's attention block, split into matrices (and biases) vs the norms inside it.
struct AttentionParams {
  double matrices = 0;
  double norms = 0;
};

AttentionParams attention_params(const Model& m) {
  const double h = static_cast<double>(m.hidden);
  const double heads = static_cast<double>(m.heads);
  AttentionParams a;
  if (m.attention == AttentionKind::kMla && m.mla) {
    const MlaSpec& s = *m.mla;
    const double qk_dim = static_cast<double>(s.qk_nope_head_dim + s.qk_rope_head_dim);
    if (s.q_lora_rank > 0) {
      const double r = static_cast<double>(s.q_lora_rank);
      a.matrices += h * r + r * heads * qk_dim;  // q_a_proj, q_b_proj
      a.norms += r;                              // q_a_layernorm
    } else {
      a.matrices += h * heads * qk_dim;  // q_proj
    }
    const double kv_r = static_cast<double>(s.kv_lora_rank);
    a.matrices += h * (kv_r + static_cast<double>(s.qk_rope_head_dim));                   // kv_a_proj_with_mqa
    a.norms += kv_r;                                                                      // kv_a_layernorm
    a.matrices += kv_r * heads * static_cast<double>(s.qk_nope_head_dim + s.v_head_dim);  // kv_b_proj
    a.matrices += heads * static_cast<double>(s.v_head_dim) * h;                          // o_proj
    return a;
  }
  const double hd = static_cast<double>(m.head_dim);
  const double kvh = static_cast<double>(m.kv_heads);
  a.matrices = h * heads * hd + 2.0 * h * kvh * hd + heads * hd * h;  // q, k, v, o
  if (m.qkv_bias) a.matrices += heads * hd + 2.0 * kvh * hd;
  if (m.qk_norm) a.norms += 2.0 * hd;
  return a;
}

double mlp_params(const Model& m, int64_t inter) {
  return 3.0 * static_cast<double>(m.hidden) * inter;
}

// Router weights plus, for sigmoid scoring (DeepSeek-V3), the per-expert score-correction bias.
double router_params_per_layer(const Model& m) {
  const double e = static_cast<double>(m.moe.num_experts);
  return e * static_cast<double>(m.hidden) + (m.moe.scoring == "sigmoid" ? e : 0.0);
}

// Widths of the per-head q.k and p.v products.
double qk_dim(const Model& m) {
  return m.mla ? static_cast<double>(m.mla->qk_nope_head_dim + m.mla->qk_rope_head_dim)
               : static_cast<double>(m.head_dim);
}
double v_dim(const Model& m) {
  return m.mla ? static_cast<double>(m.mla->v_head_dim) : static_cast<double>(m.head_dim);
}

// Parameters a token multiplies against (matmuls incl. LM head and router; excludes the embedding lookup and norms).
double matmul_params_per_token(const Model& m) {
  const ParamCounts p = count_params(m);
  const double attn_norms = attention_params(m).norms * static_cast<double>(m.layers);
  const double router_bias = m.moe.scoring == "sigmoid" ? static_cast<double>(m.moe.num_experts * m.moe_layers()) : 0.0;
  return p.active_per_token - p.embedding - p.norms - attn_norms - router_bias + (m.tie_embeddings ? p.embedding : 0.0);
}

double attention_flops_per_key(const Model& m) {
  return 2.0 * static_cast<double>(m.heads) * (qk_dim(m) + v_dim(m)) * static_cast<double>(m.layers);
}

}  // namespace

int64_t Model::moe_layers() const {
  int64_t n = 0;
  for (int64_t l = 0; l < layers; ++l)
    if (is_moe_layer(l)) ++n;
  return n;
}

ParamCounts count_params(const Model& m) {
  ParamCounts p;
  const double layers = static_cast<double>(m.layers);
  const double moe_layers = static_cast<double>(m.moe_layers());
  const double dense_layers = layers - moe_layers;
  const double vh = static_cast<double>(m.vocab) * static_cast<double>(m.hidden);
  p.embedding = vh;
  p.lm_head = m.tie_embeddings ? 0.0 : vh;
  const AttentionParams a = attention_params(m);
  p.attention = (a.matrices + a.norms) * layers;
  p.dense_mlp = dense_layers * mlp_params(m, m.ffn);
  const double expert = mlp_params(m, m.moe.expert_ffn);
  p.routed_experts = moe_layers * static_cast<double>(m.moe.num_experts) * expert;
  p.shared_experts = moe_layers * static_cast<double>(m.moe.num_shared_experts) * expert;
  p.router = m.is_moe() ? moe_layers * router_params_per_layer(m) : 0.0;
  p.norms = (2.0 * layers + 1.0) * static_cast<double>(m.hidden);
  p.total =
      p.embedding + p.lm_head + p.attention + p.dense_mlp + p.routed_experts + p.shared_experts + p.router + p.norms;
  const double unvisited = moe_layers * static_cast<double>(m.moe.num_experts - m.moe.top_k) * expert;
  p.active_per_token = p.total - (m.is_moe() ? unvisited : 0.0);
  return p;
}

double weight_bytes(const Model& m, DType dtype) {
  const ParamCounts p = count_params(m);
  const double kept_bf16 = p.norms + p.router + attention_params(m).norms * static_cast<double>(m.layers);
  return (p.total - kept_bf16) * dtype_bytes(dtype) + kept_bf16 * dtype_bytes(DType::kBf16);
}

double kv_bytes_per_token(const Model& m) {
  const double per_layer = m.attention == AttentionKind::kMla && m.mla
                               ? static_cast<double>(m.mla->kv_lora_rank + m.mla->qk_rope_head_dim)
                               : 2.0 * static_cast<double>(m.kv_heads * m.head_dim);
  return per_layer * static_cast<double>(m.layers) * dtype_bytes(m.kv_dtype);
}

double flops_per_token(const Model& m, int64_t context) {
  return 2.0 * matmul_params_per_token(m) + attention_flops_per_key(m) * static_cast<double>(context + 1);
}

double prefill_flops(const Model& m, int64_t tokens) {
  const double t = static_cast<double>(tokens);
  // Token i attends to i+1 keys: sum over i < t of (i+1) = t(t+1)/2.
  return 2.0 * matmul_params_per_token(m) * t + attention_flops_per_key(m) * t * (t + 1.0) / 2.0;
}

std::string to_string(AttentionKind k) {
  switch (k) {
    case AttentionKind::kMha:
      return "mha";
    case AttentionKind::kGqa:
      return "gqa";
    case AttentionKind::kMla:
      return "mla";
  }
  return "?";
}

nlohmann::json to_json(const Model& m) {
  using nlohmann::json;
  json j;
  j["kind"] = "model";
  j["name"] = m.name;
  j["architecture"] = m.architecture;
  j["attention"] = to_string(m.attention);
  j["hidden"] = m.hidden;
  j["layers"] = m.layers;
  j["heads"] = m.heads;
  j["kv_heads"] = m.kv_heads;
  j["head_dim"] = m.head_dim;
  j["ffn"] = m.ffn;
  j["vocab"] = m.vocab;
  j["max_position"] = m.max_position;
  if (m.sliding_window > 0) j["sliding_window"] = m.sliding_window;
  j["tie_embeddings"] = m.tie_embeddings;
  j["qkv_bias"] = m.qkv_bias;
  j["qk_norm"] = m.qk_norm;
  j["rms_eps"] = m.rms_eps;
  j["rope_theta"] = m.rope_theta;
  const RopeScaling& r = m.rope_scaling;
  j["rope_scaling"] = {{"type", r.type},
                       {"factor", r.factor},
                       {"low_freq_factor", r.low_freq_factor},
                       {"high_freq_factor", r.high_freq_factor},
                       {"original_max_position", r.original_max_position}};
  if (r.type == "yarn") {
    j["rope_scaling"]["mscale"] = r.mscale;
    j["rope_scaling"]["mscale_all_dim"] = r.mscale_all_dim;
    j["rope_scaling"]["beta_fast"] = r.beta_fast;
    j["rope_scaling"]["beta_slow"] = r.beta_slow;
  }
  if (m.mla)
    j["mla"] = {{"q_lora_rank", m.mla->q_lora_rank},
                {"kv_lora_rank", m.mla->kv_lora_rank},
                {"qk_nope_head_dim", m.mla->qk_nope_head_dim},
                {"qk_rope_head_dim", m.mla->qk_rope_head_dim},
                {"v_head_dim", m.mla->v_head_dim}};
  if (m.is_moe()) {
    const MoeSpec& e = m.moe;
    j["moe"] = {{"num_experts", e.num_experts},
                {"top_k", e.top_k},
                {"num_shared_experts", e.num_shared_experts},
                {"expert_ffn", e.expert_ffn},
                {"first_k_dense", e.first_k_dense},
                {"layer_freq", e.layer_freq},
                {"moe_layers", m.moe_layers()},
                {"scoring", e.scoring},
                {"norm_topk_prob", e.norm_topk_prob},
                {"n_group", e.n_group},
                {"topk_group", e.topk_group},
                {"routed_scaling_factor", e.routed_scaling_factor}};
  }
  j["weight_dtype"] = std::string(to_string(m.weight_dtype));
  j["kv_dtype"] = std::string(to_string(m.kv_dtype));
  j["act_dtype"] = std::string(to_string(m.act_dtype));

  const ParamCounts p = count_params(m);
  j["params"] = {{"embedding", p.embedding},
                 {"lm_head", p.lm_head},
                 {"attention", p.attention},
                 {"dense_mlp", p.dense_mlp},
                 {"routed_experts", p.routed_experts},
                 {"shared_experts", p.shared_experts},
                 {"router", p.router},
                 {"norms", p.norms},
                 {"total", p.total},
                 {"active_per_token", p.active_per_token}};
  j["weight_bytes"] = {{"bf16", weight_bytes(m, DType::kBf16)},
                       {"fp8", weight_bytes(m, DType::kFp8)},
                       {"int4", weight_bytes(m, DType::kInt4)},
                       {std::string(to_string(m.weight_dtype)), weight_bytes(m, m.weight_dtype)}};
  j["kv_bytes_per_token"] = kv_bytes_per_token(m);
  json decode = json::object();
  for (int64_t ctx : {int64_t{1024}, int64_t{8192}, int64_t{32768}})
    decode[std::to_string(ctx)] = flops_per_token(m, ctx);
  j["flops"] = {{"decode_per_token_at_context", decode},
                {"prefill_2048_tokens", prefill_flops(m, 2048)},
                {"prefill_per_token_2048", prefill_flops(m, 2048) / 2048.0}};
  return j;
}

}  // namespace parasol::spec

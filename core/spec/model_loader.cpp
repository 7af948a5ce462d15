// Loading a Model: our YAML schema (`schema: parasol.model/1`, docs/schema-model.md) and the dispatch to the Hugging
// Face config.json importer (model_hf.cpp). Every value is read through yaml::Node, so each error names the file,
// line, column and key path; the cross-field checks here apply to both sources.
#include <algorithm>

#include "core/common/error.hpp"
#include "core/spec/model.hpp"
#include "core/spec/model_detail.hpp"

namespace parasol::spec {
namespace detail {

const std::vector<std::string>& supported_architectures() {
  static const std::vector<std::string> kArchitectures{"LlamaForCausalLM",    "MistralForCausalLM",
                                                       "Qwen2ForCausalLM",    "MixtralForCausalLM",
                                                       "Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM"};
  return kArchitectures;
}

std::string supported_architectures_text() {
  std::string s;
  for (const auto& a : supported_architectures()) s += (s.empty() ? "" : ", ") + a;
  return "one of the supported architectures: " + s;
}

DType dtype_of(const yaml::Node& n) {
  auto d = parse_dtype(n.as_string());
  if (!d) n.fail("a dtype: one of fp32, bf16, fp16, fp8, int8, int4 (or float32, bfloat16, float16)");
  return *d;
}

void validate_model(const Model& m, const std::function<yaml::Node(std::string_view field)>& where) {
  auto fail = [&](std::string_view field, const std::string& expected) { where(field).fail(expected); };
  if (m.kv_heads < 1 || m.kv_heads > m.heads || m.heads % m.kv_heads != 0)
    fail("kv_heads", "an integer in [1, heads] that divides heads (" + std::to_string(m.heads) + ")");
  if (m.attention == AttentionKind::kMha && m.kv_heads != m.heads)
    fail("attention", "'gqa' (mha needs kv_heads == heads)");
  if (m.attention == AttentionKind::kMla && !m.mla) fail("attention", "an 'mla' block for attention 'mla'");
  if (m.attention != AttentionKind::kMla && m.mla) fail("attention", "'mla' (an mla block is given)");
  if (!m.mla && m.head_dim % 2 != 0) fail("head_dim", "an even head_dim (rotary embeddings rotate pairs)");
  if (m.mla) {
    if (m.mla->qk_rope_head_dim % 2 != 0) fail("mla.qk_rope_head_dim", "an even number (rotary pairs)");
  }
  if (m.layers - m.moe_layers() > 0 && m.ffn < 1) fail("ffn", "a dense MLP size >= 1 (the model has dense layers)");
  if (m.is_moe()) {
    const MoeSpec& e = m.moe;
    if (e.top_k < 1 || e.top_k > e.num_experts)
      fail("moe.top_k", "an integer in [1, num_experts = " + std::to_string(e.num_experts) + "]");
    if (e.expert_ffn < 1) fail("moe.expert_ffn", "an integer >= 1");
    if (e.n_group < 1 || e.num_experts % e.n_group != 0)
      fail("moe.n_group", "a divisor of num_experts (" + std::to_string(e.num_experts) + ")");
    if (e.topk_group < 1 || e.topk_group > e.n_group)
      fail("moe.topk_group", "an integer in [1, n_group = " + std::to_string(e.n_group) + "]");
    if (e.top_k > e.topk_group * (e.num_experts / e.n_group))
      fail("moe.top_k",
           "at most topk_group x experts per group = " + std::to_string(e.topk_group * (e.num_experts / e.n_group)));
    if (e.first_k_dense > m.layers)
      fail("moe.first_k_dense", "an integer in [0, layers = " + std::to_string(m.layers) + "]");
  }
  if (m.rope_scaling.type == "llama3" && m.rope_scaling.low_freq_factor >= m.rope_scaling.high_freq_factor)
    fail("rope_scaling.high_freq_factor", "a value above low_freq_factor");
}

}  // namespace detail

namespace {

using yaml::Node;

RopeScaling load_rope_scaling(const Node& n) {
  n.allow_keys({"type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position", "mscale",
                "mscale_all_dim", "beta_fast", "beta_slow"});
  RopeScaling r;
  r.type = n.at("type").as_enum({"none", "llama3", "yarn"});
  if (r.type == "none") return r;
  r.factor = n.number("factor", 1.0, 1e6);
  r.original_max_position = n.integer("original_max_position", 1, int64_t{1} << 40);
  if (r.type == "llama3") {
    r.low_freq_factor = n.number("low_freq_factor", 1e-6, 1e6);
    r.high_freq_factor = n.number("high_freq_factor", 1e-6, 1e6);
  } else {
    r.mscale = n.number_or("mscale", 1.0, 0.0, 1e3);
    r.mscale_all_dim = n.number_or("mscale_all_dim", 0.0, 0.0, 1e3);
    r.beta_fast = n.number_or("beta_fast", 32.0, 0.0, 1e6);
    r.beta_slow = n.number_or("beta_slow", 1.0, 0.0, 1e6);
  }
  return r;
}

MlaSpec load_mla(const Node& n) {
  n.allow_keys({"q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"});
  MlaSpec s;
  s.q_lora_rank = n.integer_or("q_lora_rank", 0, 0, 1 << 20);
  s.kv_lora_rank = n.integer("kv_lora_rank", 1, 1 << 20);
  s.qk_nope_head_dim = n.integer("qk_nope_head_dim", 0, 1 << 16);
  s.qk_rope_head_dim = n.integer("qk_rope_head_dim", 2, 1 << 16);
  s.v_head_dim = n.integer("v_head_dim", 1, 1 << 16);
  return s;
}

MoeSpec load_moe(const Node& n) {
  n.allow_keys({"num_experts", "top_k", "num_shared_experts", "expert_ffn", "first_k_dense", "layer_freq", "scoring",
                "norm_topk_prob", "n_group", "topk_group", "routed_scaling_factor"});
  MoeSpec e;
  e.num_experts = n.integer("num_experts", 1, 1 << 20);
  e.top_k = n.integer("top_k", 1, 1 << 20);
  e.num_shared_experts = n.integer_or("num_shared_experts", 0, 0, 1 << 10);
  e.expert_ffn = n.integer("expert_ffn", 1, int64_t{1} << 24);
  e.first_k_dense = n.integer_or("first_k_dense", 0, 0, 1 << 20);
  e.layer_freq = n.integer_or("layer_freq", 1, 1, 1 << 20);
  if (auto s = n.get("scoring")) e.scoring = s->as_enum({"softmax", "sigmoid"});
  e.norm_topk_prob = n.bool_or("norm_topk_prob", true);
  e.n_group = n.integer_or("n_group", 1, 1, 1 << 20);
  e.topk_group = n.integer_or("topk_group", 1, 1, 1 << 20);
  e.routed_scaling_factor = n.number_or("routed_scaling_factor", 1.0, 1e-6, 1e6);
  return e;
}

Model load_parasol_model(const Node& root) {
  root.allow_keys({"schema",   "name",     "architecture", "hidden",     "layers",       "heads",
                   "kv_heads", "head_dim", "ffn",          "vocab",      "max_position", "tie_embeddings",
                   "qkv_bias", "qk_norm",  "rms_eps",      "rope_theta", "rope_scaling", "attention",
                   "mla",      "moe",      "weight_dtype", "kv_dtype",   "act_dtype",  "sliding_window"});
  root.at("schema").as_enum({"parasol.model/1"});
  constexpr int64_t kBig = int64_t{1} << 24;
  Model m;
  m.name = root.str("name");
  if (m.name.empty()) root.at("name").fail("a non-empty name");
  const std::vector<std::string>& archs = detail::supported_architectures();
  {
    Node a = root.at("architecture");
    m.architecture = a.as_string();
    if (std::find(archs.begin(), archs.end(), m.architecture) == archs.end()) {
      std::string sug = yaml::closest(m.architecture, archs);
      a.fail(detail::supported_architectures_text() + (sug.empty() ? "" : " (did you mean '" + sug + "'?)"));
    }
  }
  m.hidden = root.integer("hidden", 1, kBig);
  m.layers = root.integer("layers", 1, 1 << 16);
  m.heads = root.integer("heads", 1, 1 << 16);
  m.kv_heads = root.integer_or("kv_heads", m.heads, 1, 1 << 16);
  if (auto mla = root.get("mla")) m.mla = load_mla(*mla);
  if (root.has("head_dim") || m.mla) {
    m.head_dim = m.mla && !root.has("head_dim") ? m.mla->qk_nope_head_dim + m.mla->qk_rope_head_dim
                                                : root.integer("head_dim", 1, 1 << 16);
  } else {
    if (m.hidden % m.heads != 0) root.at("heads").fail("a divisor of hidden (or an explicit head_dim)");
    m.head_dim = m.hidden / m.heads;
  }
  m.vocab = root.integer("vocab", 1, int64_t{1} << 32);
  m.max_position = root.integer("max_position", 1, int64_t{1} << 40);
  m.sliding_window = root.integer_or("sliding_window", 0, 0, int64_t{1} << 40);
  m.tie_embeddings = root.bool_or("tie_embeddings", false);
  m.qkv_bias = root.bool_or("qkv_bias", false);
  m.qk_norm = root.bool_or("qk_norm", false);
  m.rms_eps = root.number_or("rms_eps", 1e-6, 1e-12, 1.0);
  m.rope_theta = root.number_or("rope_theta", 10000.0, 1.0, 1e12);
  if (auto r = root.get("rope_scaling")) m.rope_scaling = load_rope_scaling(*r);
  if (auto moe = root.get("moe")) m.moe = load_moe(*moe);
  m.ffn = root.integer_or("ffn", 0, 0, kBig);
  if (auto a = root.get("attention")) {
    const std::string k = a->as_enum({"mha", "gqa", "mla"});
    m.attention = k == "mha" ? AttentionKind::kMha : k == "gqa" ? AttentionKind::kGqa : AttentionKind::kMla;
  } else {
    m.attention = m.mla ? AttentionKind::kMla : m.kv_heads == m.heads ? AttentionKind::kMha : AttentionKind::kGqa;
  }
  if (auto d = root.get("weight_dtype")) m.weight_dtype = detail::dtype_of(*d);
  if (auto d = root.get("kv_dtype")) m.kv_dtype = detail::dtype_of(*d);
  if (auto d = root.get("act_dtype")) m.act_dtype = detail::dtype_of(*d);

  detail::validate_model(m, [&](std::string_view field) -> Node {
    // Blame the most specific node that exists: "moe.top_k" -> moe.top_k, else moe, else the root.
    const auto dot = field.find('.');
    if (dot == std::string_view::npos) return root.has(field) ? root.at(field) : root;
    const std::string_view parent = field.substr(0, dot);
    if (!root.has(parent)) return root;
    Node p = root.at(parent);
    const std::string_view leaf = field.substr(dot + 1);
    return p.has(leaf) ? p.at(leaf) : p;
  });
  return m;
}

}  // namespace

Model load_model(const yaml::Node& node) {
  if (!node.is_map()) node.fail("a model description (a map)");
  if (node.has("architectures") || node.has("model_type")) return detail::load_hf_config(node);
  return load_parasol_model(node);
}

Model load_model_file(const std::string& path) {
  return load_model(yaml::load_file(path));
}

}  // namespace parasol::spec

// Import of a Hugging Face config.json into a Model. The architecture comes from `architectures[0]` (or, when absent,
// from `model_type`). HF configs carry many keys we do not need (token ids, dropout, auto_map, ...): unknown keys are
// ignored, but the keys we read are type- and range-checked and the required ones must be present. Optional keys
// default to the value transformers' config class would use, so a config that loads in transformers means the same
// model here. Not supported (ConfigError): other architectures, activations other than SiLU, Qwen3-MoE
// `mlp_only_layers`, rope scaling other than llama3 / yarn.
#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "core/common/error.hpp"
#include "core/spec/model.hpp"
#include "core/spec/model_detail.hpp"

namespace parasol::spec::detail {
namespace {

using yaml::Node;

constexpr int64_t kBig = int64_t{1} << 24;

std::string architecture_of(const Node& root) {
  static const std::map<std::string, std::string> kByModelType{
      {"llama", "LlamaForCausalLM"},        {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},        {"mixtral", "MixtralForCausalLM"},
      {"qwen3_moe", "Qwen3MoeForCausalLM"}, {"deepseek_v3", "DeepseekV3ForCausalLM"}};
  const auto& archs = supported_architectures();
  if (auto a = root.get("architectures")) {
    auto items = a->items();
    if (items.empty()) a->fail("a list with one architecture name");
    const std::string name = items[0].as_string();
    if (std::find(archs.begin(), archs.end(), name) == archs.end()) {
      const std::string sug = yaml::closest(name, archs);
      items[0].fail(supported_architectures_text() + (sug.empty() ? "" : " (did you mean '" + sug + "'?)"));
    }
    return name;
  }
  Node t = root.at("model_type");
  auto it = kByModelType.find(t.as_string());
  if (it == kByModelType.end())
    t.fail(
        "a model_type of one of the supported architectures (llama, mistral, qwen2, mixtral, qwen3_moe, "
        "deepseek_v3)");
  return it->second;
}

RopeScaling hf_rope_scaling(const Node& n) {
  RopeScaling r;
  std::optional<Node> kind = n.get("rope_type");
  if (!kind) kind = n.get("type");
  if (!kind) n.fail("a rope_scaling map with 'rope_type' (llama3 or yarn)");
  const std::string t = kind->as_enum({"default", "llama3", "yarn"});
  if (t == "default") return r;
  r.type = t;
  r.factor = n.number("factor", 1.0, 1e6);
  if (t == "llama3") {
    r.low_freq_factor = n.number_or("low_freq_factor", 1.0, 1e-6, 1e6);
    r.high_freq_factor = n.number_or("high_freq_factor", 4.0, 1e-6, 1e6);
    r.original_max_position = n.integer_or("original_max_position_embeddings", 8192, 1, int64_t{1} << 40);
  } else {
    r.original_max_position = n.integer("original_max_position_embeddings", 1, int64_t{1} << 40);
    r.mscale = n.number_or("mscale", 1.0, 0.0, 1e3);
    r.mscale_all_dim = n.number_or("mscale_all_dim", 0.0, 0.0, 1e3);
    r.beta_fast = n.number_or("beta_fast", 32.0, 0.0, 1e6);
    r.beta_slow = n.number_or("beta_slow", 1.0, 0.0, 1e6);
  }
  return r;
}

// The canonical field name -> the HF key that set it, for locating cross-field errors.
const std::map<std::string_view, std::string_view>& hf_key_of() {
  static const std::map<std::string_view, std::string_view> kKeys{
      {"hidden", "hidden_size"},
      {"layers", "num_hidden_layers"},
      {"heads", "num_attention_heads"},
      {"kv_heads", "num_key_value_heads"},
      {"head_dim", "head_dim"},
      {"ffn", "intermediate_size"},
      {"attention", "num_key_value_heads"},
      {"mla.qk_rope_head_dim", "qk_rope_head_dim"},
      {"mla.kv_lora_rank", "kv_lora_rank"},
      {"moe.top_k", "num_experts_per_tok"},
      {"moe.expert_ffn", "moe_intermediate_size"},
      {"moe.n_group", "n_group"},
      {"moe.topk_group", "topk_group"},
      {"moe.first_k_dense", "first_k_dense_replace"},
      {"rope_scaling.high_freq_factor", "rope_scaling"},
  };
  return kKeys;
}

void load_moe(const Node& root, const std::string& arch, Model& m) {
  MoeSpec& e = m.moe;
  if (arch == "MixtralForCausalLM") {
    e.num_experts = root.integer("num_local_experts", 1, 1 << 20);
    e.top_k = root.integer("num_experts_per_tok", 1, 1 << 20);
    e.expert_ffn = m.ffn;  // every Mixtral MLP is an expert of intermediate_size
    e.scoring = "softmax";
    e.norm_topk_prob = true;  // softmax over all, top-k, renormalize (same as softmax over the top-k logits)
  } else if (arch == "Qwen3MoeForCausalLM") {
    e.num_experts = root.integer("num_experts", 1, 1 << 20);
    e.top_k = root.integer("num_experts_per_tok", 1, 1 << 20);
    e.expert_ffn = root.integer("moe_intermediate_size", 1, kBig);
    e.norm_topk_prob = root.bool_or("norm_topk_prob", false);
    // HF: layer l is MoE when (l + 1) % decoder_sparse_step == 0, i.e. first_k_dense = step - 1, layer_freq = step.
    const int64_t step = root.integer_or("decoder_sparse_step", 1, 1, 1 << 20);
    e.first_k_dense = step - 1;
    e.layer_freq = step;
    if (auto only = root.get("mlp_only_layers"); only && !only->items().empty())
      only->fail("an empty mlp_only_layers (per-layer dense overrides are not supported)");
  } else if (arch == "DeepseekV3ForCausalLM") {
    e.num_experts = root.integer("n_routed_experts", 1, 1 << 20);
    e.top_k = root.integer("num_experts_per_tok", 1, 1 << 20);
    e.expert_ffn = root.integer("moe_intermediate_size", 1, kBig);
    e.num_shared_experts = root.integer_or("n_shared_experts", 1, 0, 1 << 10);
    e.first_k_dense = root.integer_or("first_k_dense_replace", 3, 0, 1 << 20);
    e.layer_freq = root.integer_or("moe_layer_freq", 1, 1, 1 << 20);
    // HF: MoE when l >= first_k_dense_replace and l % moe_layer_freq == 0; ours counts from first_k_dense.
    if (e.first_k_dense % e.layer_freq != 0)
      root.at("moe_layer_freq").fail("a moe_layer_freq dividing first_k_dense_replace");
    if (auto s = root.get("scoring_func"))
      e.scoring = s->as_enum({"softmax", "sigmoid"});
    else
      e.scoring = "sigmoid";
    e.norm_topk_prob = root.bool_or("norm_topk_prob", true);
    e.n_group = root.integer_or("n_group", 8, 1, 1 << 20);
    e.topk_group = root.integer_or("topk_group", 4, 1, 1 << 20);
    e.routed_scaling_factor = root.number_or("routed_scaling_factor", 2.5, 1e-6, 1e6);
  }
}

}  // namespace

Model load_hf_config(const Node& root) {
  const std::string arch = architecture_of(root);
  Model m;
  m.architecture = arch;
  // Named as the checkpoint names itself: `_name_or_path`'s last component ("meta-llama/Llama-3.1-8B" ->
  // "Llama-3.1-8B"); else the file's stem, except a checkpoint's `config.json`, which takes its folder's name (or the
  // architecture when the folder has none).
  const std::filesystem::path file(root.file());
  if (auto n = root.get("_name_or_path"); n && n->is_scalar() && !n->as_string().empty()) {
    std::string v = n->as_string();
    while (!v.empty() && v.back() == '/') v.pop_back();
    m.name = v.substr(v.find_last_of('/') == std::string::npos ? 0 : v.find_last_of('/') + 1);
  }
  if (m.name.empty()) {
    m.name = file.stem().string();
    if (m.name == "config") {
      const std::string dir = std::filesystem::absolute(file).parent_path().filename().string();
      m.name = !dir.empty() && dir != "." && dir != "/" ? dir : arch;
    }
  }
  if (auto act = root.get("hidden_act")) act->as_enum({"silu"});
  m.hidden = root.integer("hidden_size", 1, kBig);
  m.layers = root.integer("num_hidden_layers", 1, 1 << 16);
  m.heads = root.integer("num_attention_heads", 1, 1 << 16);
  m.kv_heads = root.integer_or("num_key_value_heads", m.heads, 1, 1 << 16);
  m.ffn = root.integer("intermediate_size", 1, kBig);
  m.vocab = root.integer("vocab_size", 1, int64_t{1} << 32);
  m.max_position = root.integer("max_position_embeddings", 1, int64_t{1} << 40);
  // `sliding_window` (null: none); Qwen2/3 configs carry one that applies only with use_sliding_window: true.
  if (auto w = root.get("sliding_window"); w && root.bool_or("use_sliding_window", true))
    m.sliding_window = w->as_int(1, int64_t{1} << 40);
  m.rms_eps = root.number_or("rms_norm_eps", 1e-6, 1e-12, 1.0);
  m.rope_theta = root.number_or("rope_theta", 10000.0, 1.0, 1e12);
  m.tie_embeddings = root.bool_or("tie_word_embeddings", false);
  if (auto r = root.get("rope_scaling")) m.rope_scaling = hf_rope_scaling(*r);

  if (arch == "DeepseekV3ForCausalLM") {
    MlaSpec s;
    s.q_lora_rank = root.integer_or("q_lora_rank", 0, 0, 1 << 20);  // null: q projected directly (V2-Lite style)
    s.kv_lora_rank = root.integer("kv_lora_rank", 1, 1 << 20);
    s.qk_nope_head_dim = root.integer("qk_nope_head_dim", 0, 1 << 16);
    s.qk_rope_head_dim = root.integer("qk_rope_head_dim", 2, 1 << 16);
    s.v_head_dim = root.integer("v_head_dim", 1, 1 << 16);
    m.mla = s;
    m.attention = AttentionKind::kMla;
    m.kv_heads = m.heads;  // every head has its own (decompressed) k and v
    m.head_dim = s.qk_nope_head_dim + s.qk_rope_head_dim;
  } else {
    if (auto hd = root.get("head_dim")) {
      m.head_dim = hd->as_int(1, 1 << 16);
    } else {
      if (m.hidden % m.heads != 0) root.at("num_attention_heads").fail("a divisor of hidden_size (or a head_dim)");
      m.head_dim = m.hidden / m.heads;
    }
    m.attention = m.kv_heads == m.heads ? AttentionKind::kMha : AttentionKind::kGqa;
  }
  m.qkv_bias = arch == "Qwen2ForCausalLM" ? true : root.bool_or("attention_bias", false);
  m.qk_norm = arch == "Qwen3MoeForCausalLM";
  load_moe(root, arch, m);

  std::optional<Node> dt = root.get("torch_dtype");
  if (!dt) dt = root.get("dtype");
  if (dt) {
    m.weight_dtype = dtype_of(*dt);
    m.kv_dtype = m.act_dtype = m.weight_dtype;
  }
  if (auto q = root.get("quantization_config")) {
    if (auto method = q->get("quant_method"); method && method->as_string() == "fp8") m.weight_dtype = DType::kFp8;
  }

  validate_model(m, [&](std::string_view field) -> Node {
    const auto& keys = hf_key_of();
    auto it = keys.find(field);
    if (it != keys.end() && root.has(it->second)) return root.at(it->second);
    return root;
  });
  return m;
}

}  // namespace parasol::spec::detail

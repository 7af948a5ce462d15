#include "exec/test_models.hpp"

#include "core/common/error.hpp"

namespace parasol::exec {

std::vector<std::string> test_model_names() { return {"test-llama", "test-mixtral", "test-deepseek", "test-llama-100m"}; }

spec::Model test_model(const std::string& name) {
  spec::Model m;
  m.name = name;
  m.weight_dtype = m.kv_dtype = m.act_dtype = DType::kFp32;
  m.vocab = 256;
  m.max_position = 4096;
  m.hidden = 64;
  if (name == "test-llama" || name == "test-llama-100m") {
    m.architecture = "LlamaForCausalLM";
    m.layers = 4;
    m.heads = 8;
    m.kv_heads = 2;
    m.head_dim = 16;
    m.ffn = 128;
    m.rms_eps = 1e-5;
    m.rope_theta = 10000.0;
    m.rope_scaling.type = "llama3";
    m.rope_scaling.factor = 8.0;
    m.rope_scaling.low_freq_factor = 1.0;
    m.rope_scaling.high_freq_factor = 4.0;
    m.rope_scaling.original_max_position = 64;
    m.attention = spec::AttentionKind::kGqa;
    if (name == "test-llama-100m") {  // 12 x 7.1M + 2 x 6.3M embeddings ~ 98M parameters
      m.hidden = 768;
      m.layers = 12;
      m.heads = 12;
      m.kv_heads = 4;
      m.head_dim = 64;
      m.ffn = 2560;
      m.vocab = 8192;
    }
    return m;
  }
  if (name == "test-mixtral") {
    m.architecture = "MixtralForCausalLM";
    m.layers = 3;
    m.heads = 8;
    m.kv_heads = 2;
    m.head_dim = 8;
    m.ffn = 96;
    m.rms_eps = 1e-5;
    m.rope_theta = 1e6;
    m.moe.num_experts = 8;
    m.moe.top_k = 2;
    m.moe.expert_ffn = 96;
    m.moe.scoring = "softmax";
    m.moe.norm_topk_prob = true;
    return m;
  }
  if (name == "test-deepseek") {
    m.architecture = "DeepseekV3ForCausalLM";
    m.layers = 3;
    m.heads = 4;
    m.kv_heads = 4;
    m.attention = spec::AttentionKind::kMla;
    m.mla = spec::MlaSpec{32, 32, 16, 8, 16};
    m.head_dim = 24;
    m.ffn = 96;
    m.rms_eps = 1e-6;
    m.rope_theta = 10000.0;
    m.moe.num_experts = 16;
    m.moe.top_k = 4;
    m.moe.num_shared_experts = 1;
    m.moe.expert_ffn = 32;
    m.moe.first_k_dense = 1;
    m.moe.scoring = "sigmoid";
    m.moe.norm_topk_prob = true;
    m.moe.n_group = 4;
    m.moe.topk_group = 2;
    m.moe.routed_scaling_factor = 2.5;
    return m;
  }
  std::string list;
  for (const auto& n : test_model_names()) list += (list.empty() ? "" : ", ") + n;
  throw ConfigError("", 0, 0, "--model", "a model file or builtin:NAME with NAME one of " + list, "'" + name + "'");
}

}  // namespace parasol::exec

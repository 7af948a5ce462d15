// Loading AttentionParams from the GPU YAML's `attention:` section (kernel_params.hpp).
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

void load_attention_params(const yaml::Node& n, AttentionParams& p) {
  n.allow_keys({"prefill_max_efficiency", "prefill_q_half", "decode_memory", "per_seq", "fixed"});
  p.prefill_max_efficiency = n.number_or("prefill_max_efficiency", p.prefill_max_efficiency, 0.01, 1.0);
  p.prefill_q_half = n.number_or("prefill_q_half", p.prefill_q_half, 0.0, 1e7);
  p.decode_memory = n.number_or("decode_memory", p.decode_memory, 0.01, 1.0);
  p.per_seq_s = n.quantity_or("per_seq", Dimension::kTime, p.per_seq_s, 0.0, 1e-3);
  p.fixed_s = n.quantity_or("fixed", Dimension::kTime, p.fixed_s, 0.0, 1e-3);
}

nlohmann::json to_json(const AttentionParams& p) {
  return {{"prefill_max_efficiency", p.prefill_max_efficiency},
          {"prefill_q_half", p.prefill_q_half},
          {"decode_memory", p.decode_memory},
          {"per_seq_s", p.per_seq_s},
          {"fixed_s", p.fixed_s}};
}

}  // namespace parasol::spec

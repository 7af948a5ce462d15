// Loading GemmParams and ElementwiseParams from the GPU YAML's `gemm:` and `elementwise:` sections (kernel_params.hpp).
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

void load_gemm_params(const yaml::Node& n, GemmParams& p) {
  n.allow_keys({"max_efficiency", "k_half", "fixed", "memory"});
  p.max_efficiency = n.number_or("max_efficiency", p.max_efficiency, 0.01, 1.0);
  p.k_half = n.number_or("k_half", p.k_half, 0.0, 1e6);
  p.fixed_s = n.quantity_or("fixed", Dimension::kTime, p.fixed_s, 0.0, 1e-3);
  p.memory = n.number_or("memory", p.memory, 0.01, 1.0);
}

void load_elementwise_params(const yaml::Node& n, ElementwiseParams& p) {
  n.allow_keys({"memory", "default_memory", "fixed"});
  if (auto m = n.get("memory")) {
    m->allow_keys({"rmsnorm", "activation", "rope", "kv_append", "embedding", "moe_gate", "moe_dispatch", "moe_combine",
                   "sample"});
    for (const auto& [k, v] : m->entries()) p.memory[k] = v.as_double(0.01, 1.0);
  }
  p.default_memory = n.number_or("default_memory", p.default_memory, 0.01, 1.0);
  p.fixed_s = n.quantity_or("fixed", Dimension::kTime, p.fixed_s, 0.0, 1e-3);
}

nlohmann::json to_json(const GemmParams& p) {
  return {{"max_efficiency", p.max_efficiency}, {"k_half", p.k_half}, {"fixed_s", p.fixed_s}, {"memory", p.memory}};
}

nlohmann::json to_json(const ElementwiseParams& p) {
  nlohmann::json m = nlohmann::json::object();
  for (const auto& [k, v] : p.memory) m[k] = v;
  return {{"memory", m}, {"default_memory", p.default_memory}, {"fixed_s", p.fixed_s}};
}

}  // namespace parasol::spec

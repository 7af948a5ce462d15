// Loading CollectiveModelParams from the GPU YAML's `collective:` section (kernel_params.hpp).
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

void load_collective_params(const yaml::Node& n, CollectiveModelParams& p) {
  n.allow_keys({"nic_efficiency", "nic_message", "hop_latency"});
  p.nic_efficiency = n.number_or("nic_efficiency", p.nic_efficiency, 0.01, 1.0);
  p.nic_message_s = n.quantity_or("nic_message", Dimension::kTime, p.nic_message_s, 0.0, 1e-3);
  p.hop_latency_s = n.quantity_or("hop_latency", Dimension::kTime, p.hop_latency_s, 0.0, 1e-3);
}

nlohmann::json to_json(const CollectiveModelParams& p) {
  return {{"nic_efficiency", p.nic_efficiency}, {"nic_message_s", p.nic_message_s}, {"hop_latency_s", p.hop_latency_s}};
}

}  // namespace parasol::spec

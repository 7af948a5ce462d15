// Loading CollectiveModelParams from the GPU YAML's `collective:` section (kernel_params.hpp, docs/schema-gpu.md).
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

namespace {

constexpr double kMaxLatency_s = 1e-3;  // no fixed collective cost is a millisecond

void load_protocol(const yaml::Node& n, ProtocolParams& p) {
  n.allow_keys({"base", "hop", "bandwidth"});
  p.base_s = n.quantity_or("base", Dimension::kTime, p.base_s, 0.0, kMaxLatency_s);
  p.hop_s = n.quantity_or("hop", Dimension::kTime, p.hop_s, 0.0, kMaxLatency_s);
  p.bandwidth = n.number_or("bandwidth", p.bandwidth, 0.0, 1.0);
}

void load_kind(const yaml::Node& n, CollectiveKindParams& k) {
  n.allow_keys({"efficiency", "ring_penalty", "ll_bandwidth", "ll128_bandwidth", "narrow_bandwidth"});
  k.efficiency = n.number_or("efficiency", k.efficiency, 0.0, 1.0);
  k.ring_penalty = n.number_or("ring_penalty", k.ring_penalty, -1.0, 3.9);
  k.ll_bandwidth = n.number_or("ll_bandwidth", k.ll_bandwidth, 0.0, 1.0);
  k.ll128_bandwidth = n.number_or("ll128_bandwidth", k.ll128_bandwidth, 0.0, 1.0);
  k.narrow_bandwidth = n.number_or("narrow_bandwidth", k.narrow_bandwidth, 0.0, 1.0);
}

void load_all_to_all(const yaml::Node& n, AllToAllParams& a) {
  n.allow_keys({"ll_base", "ll_peer", "ll_bandwidth", "ll_max_peer", "narrow_base", "narrow_peer", "narrow_bandwidth",
                "simple_base", "simple_peer", "efficiency", "ring_penalty"});
  a.ll_base_s = n.quantity_or("ll_base", Dimension::kTime, a.ll_base_s, 0.0, kMaxLatency_s);
  a.ll_peer_s = n.quantity_or("ll_peer", Dimension::kTime, a.ll_peer_s, 0.0, kMaxLatency_s);
  a.ll_bandwidth = n.number_or("ll_bandwidth", a.ll_bandwidth, 0.0, 1.0);
  a.ll_max_peer_bytes = n.quantity_or("ll_max_peer", Dimension::kBytes, a.ll_max_peer_bytes, 0.0, 1e12);
  a.narrow_base_s = n.quantity_or("narrow_base", Dimension::kTime, a.narrow_base_s, 0.0, kMaxLatency_s);
  a.narrow_peer_s = n.quantity_or("narrow_peer", Dimension::kTime, a.narrow_peer_s, 0.0, kMaxLatency_s);
  a.narrow_bandwidth = n.number_or("narrow_bandwidth", a.narrow_bandwidth, 0.0, 1.0);
  a.simple_base_s = n.quantity_or("simple_base", Dimension::kTime, a.simple_base_s, 0.0, kMaxLatency_s);
  a.simple_peer_s = n.quantity_or("simple_peer", Dimension::kTime, a.simple_peer_s, 0.0, kMaxLatency_s);
  a.efficiency = n.number_or("efficiency", a.efficiency, 0.0, 1.0);
  a.ring_penalty = n.number_or("ring_penalty", a.ring_penalty, 0.0, 3.9);
}

// `{2: "8 MiB", 4: "512 KiB"}`: a size per world size (2..kMaxGpus).
void load_sizes(const yaml::Node& n, std::array<double, CustomAllReduceParams::kMaxGpus + 1>& out) {
  if (!n.is_map()) n.fail("a map from world size to a size, like {2: \"8 MiB\", 8: \"256 KiB\"}");
  out.fill(0.0);
  for (const auto& [key, v] : n.entries()) {
    int g = 0;
    try {
      g = std::stoi(key);
    } catch (const std::exception&) {
      g = 0;
    }
    if (g < 2 || g > CustomAllReduceParams::kMaxGpus || std::to_string(g) != key)
      v.fail("a world size key from 2 to " + std::to_string(CustomAllReduceParams::kMaxGpus) + " (found '" + key + "')");
    out[static_cast<size_t>(g)] = v.as_quantity(Dimension::kBytes, 0.0, 1e12);
  }
}

void load_custom(const yaml::Node& n, CustomAllReduceParams& c) {
  n.allow_keys({"one_shot", "two_shot", "symmetric_memory", "max_bytes", "one_shot_bytes", "symm_max_bytes",
                "multimem"});
  if (auto s = n.get("one_shot")) {
    s->allow_keys({"base", "peer", "efficiency", "peer_efficiency"});
    c.one_shot_base_s = s->quantity_or("base", Dimension::kTime, c.one_shot_base_s, 0.0, kMaxLatency_s);
    c.one_shot_peer_s = s->quantity_or("peer", Dimension::kTime, c.one_shot_peer_s, 0.0, kMaxLatency_s);
    c.one_shot_efficiency = s->number_or("efficiency", c.one_shot_efficiency, 0.0, 1.0);
    c.one_shot_peer_efficiency = s->number_or("peer_efficiency", c.one_shot_peer_efficiency, 0.0, 1.0);
  }
  if (auto s = n.get("two_shot")) {
    s->allow_keys({"base", "peer", "efficiency"});
    c.two_shot_base_s = s->quantity_or("base", Dimension::kTime, c.two_shot_base_s, 0.0, kMaxLatency_s);
    c.two_shot_peer_s = s->quantity_or("peer", Dimension::kTime, c.two_shot_peer_s, 0.0, kMaxLatency_s);
    c.two_shot_efficiency = s->number_or("efficiency", c.two_shot_efficiency, 0.0, 1.0);
  }
  if (auto s = n.get("symmetric_memory")) {
    s->allow_keys({"base", "efficiency"});
    c.symm_base_s = s->quantity_or("base", Dimension::kTime, c.symm_base_s, 0.0, kMaxLatency_s);
    c.symm_efficiency = s->number_or("efficiency", c.symm_efficiency, 0.0, 1.0);
  }
  if (auto s = n.get("max_bytes")) load_sizes(*s, c.max_bytes);
  if (auto s = n.get("one_shot_bytes")) load_sizes(*s, c.one_shot_bytes);
  if (auto s = n.get("symm_max_bytes")) load_sizes(*s, c.symm_max_bytes);
  if (auto s = n.get("multimem")) {
    if (!s->is_seq()) s->fail("a list of world sizes, like [4, 6, 8]");
    c.multimem.fill(false);
    for (const auto& item : s->items())
      c.multimem[static_cast<size_t>(item.as_int(2, CustomAllReduceParams::kMaxGpus))] = true;
  }
}

nlohmann::json sizes_json(const std::array<double, CustomAllReduceParams::kMaxGpus + 1>& a) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t g = 2; g < a.size(); ++g)
    if (a[g] > 0) j[std::to_string(g)] = a[g];
  return j;
}

nlohmann::json protocol_json(const ProtocolParams& p) {
  return {{"base_s", p.base_s}, {"hop_s", p.hop_s}, {"bandwidth", p.bandwidth}};
}

nlohmann::json kind_json(const CollectiveKindParams& k) {
  return {{"efficiency", k.efficiency},
          {"ring_penalty", k.ring_penalty},
          {"ll_bandwidth", k.ll_bandwidth},
          {"ll128_bandwidth", k.ll128_bandwidth},
          {"narrow_bandwidth", k.narrow_bandwidth}};
}

}  // namespace

void load_collective_params(const yaml::Node& n, CollectiveModelParams& p) {
  n.allow_keys({"protocols", "ring_penalty", "all_gather", "reduce_scatter", "all_to_all", "nic_efficiency",
                "nic_message", "in_network_reduce", "custom_all_reduce"});
  if (auto s = n.get("protocols")) {
    s->allow_keys({"ll", "ll128", "narrow", "simple"});
    if (auto x = s->get("ll")) load_protocol(*x, p.ll);
    if (auto x = s->get("ll128")) load_protocol(*x, p.ll128);
    if (auto x = s->get("narrow")) load_protocol(*x, p.narrow);
    if (auto x = s->get("simple")) load_protocol(*x, p.simple);
    if (!(p.simple.bandwidth > 0)) s->at("simple").at("bandwidth").fail("Simple's bandwidth above 0 (it is the reference)");
  }
  p.ring_penalty = n.number_or("ring_penalty", p.ring_penalty, 0.0, 3.9);
  if (auto s = n.get("all_gather")) load_kind(*s, p.all_gather);
  if (auto s = n.get("reduce_scatter")) load_kind(*s, p.reduce_scatter);
  if (auto s = n.get("all_to_all")) load_all_to_all(*s, p.all_to_all);
  p.nic_efficiency = n.number_or("nic_efficiency", p.nic_efficiency, 0.0, 1.0);
  p.nic_message_s = n.quantity_or("nic_message", Dimension::kTime, p.nic_message_s, 0.0, kMaxLatency_s);
  p.in_network_reduce = n.bool_or("in_network_reduce", p.in_network_reduce);
  if (auto s = n.get("custom_all_reduce")) load_custom(*s, p.custom_all_reduce);
}

nlohmann::json to_json(const CollectiveModelParams& p) {
  const auto& c = p.custom_all_reduce;
  nlohmann::json mm = nlohmann::json::array();
  for (size_t g = 2; g < c.multimem.size(); ++g)
    if (c.multimem[g]) mm.push_back(g);
  const auto& a = p.all_to_all;
  return {{"protocols", {{"ll", protocol_json(p.ll)}, {"ll128", protocol_json(p.ll128)}, {"narrow", protocol_json(p.narrow)},
                         {"simple", protocol_json(p.simple)}}},
          {"ring_penalty", p.ring_penalty},
          {"all_gather", kind_json(p.all_gather)},
          {"reduce_scatter", kind_json(p.reduce_scatter)},
          {"all_to_all",
           {{"ll_base_s", a.ll_base_s}, {"ll_peer_s", a.ll_peer_s}, {"ll_bandwidth", a.ll_bandwidth},
            {"ll_max_peer_bytes", a.ll_max_peer_bytes}, {"narrow_base_s", a.narrow_base_s},
            {"narrow_peer_s", a.narrow_peer_s}, {"narrow_bandwidth", a.narrow_bandwidth},
            {"simple_base_s", a.simple_base_s}, {"simple_peer_s", a.simple_peer_s}, {"efficiency", a.efficiency},
            {"ring_penalty", a.ring_penalty}}},
          {"nic_efficiency", p.nic_efficiency},
          {"nic_message_s", p.nic_message_s},
          {"in_network_reduce", p.in_network_reduce},
          {"custom_all_reduce",
           {{"one_shot",
             {{"base_s", c.one_shot_base_s}, {"peer_s", c.one_shot_peer_s}, {"efficiency", c.one_shot_efficiency},
              {"peer_efficiency", c.one_shot_peer_efficiency}}},
            {"two_shot", {{"base_s", c.two_shot_base_s}, {"peer_s", c.two_shot_peer_s}, {"efficiency", c.two_shot_efficiency}}},
            {"symmetric_memory", {{"base_s", c.symm_base_s}, {"efficiency", c.symm_efficiency}}},
            {"max_bytes", sizes_json(c.max_bytes)},
            {"one_shot_bytes", sizes_json(c.one_shot_bytes)},
            {"symm_max_bytes", sizes_json(c.symm_max_bytes)},
            {"multimem", mm}}}};
}

}  // namespace parasol::spec

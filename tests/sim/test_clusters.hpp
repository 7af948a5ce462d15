// Small clusters built in C++ for the simulator's tests (no YAML, so the tests check the simulator alone).
// Bandwidths here are test inputs, not hardware claims.
#pragma once

#include <string>

#include "core/spec/cluster.hpp"

namespace parasol::sim::testing {

inline int add_vertex(spec::Cluster& c, spec::VertexKind kind, const std::string& name, int node = -1) {
  spec::Vertex v;
  v.kind = kind;
  v.name = name;
  v.node = node;
  v.domain = node;
  if (kind == spec::VertexKind::kGpu) {
    v.gpu = c.gpu_count();
    v.gpu_type = "test-gpu";
  }
  auto id = boost::add_vertex(v, c.graph);
  if (kind == spec::VertexKind::kGpu) {
    c.gpus.push_back(id);
    if (static_cast<int>(c.nodes.size()) <= node) c.nodes.resize(node + 1);
    c.nodes[node].push_back(v.gpu);
    if (static_cast<int>(c.scaleup_domains.size()) <= node) c.scaleup_domains.resize(node + 1);
    c.scaleup_domains[node].push_back(v.gpu);
  }
  return static_cast<int>(id);
}

inline void add_link(spec::Cluster& c, int a, int b, double bw_Bps, double latency_s,
                     spec::LinkKind kind = spec::LinkKind::kScaleOut, bool full_duplex = true) {
  spec::Link l;
  l.kind = kind;
  l.bw_Bps = bw_Bps;
  l.latency_s = latency_s;
  l.full_duplex = full_duplex;
  boost::add_edge(static_cast<spec::VertexId>(a), static_cast<spec::VertexId>(b), l, c.graph);
}

struct FabricSpec {
  int nodes = 1;
  int gpus_per_node = 8;
  double nvl_bw_Bps = 450e9;
  double nvl_latency_s = 0.5e-6;
  double nic_bw_Bps = 50e9;
  double nic_latency_s = 1e-6;
  bool rail = true;          // NIC j of every node on leaf j (else one leaf per node)
  int spines = 1;
  double uplink_bw_Bps = 400e9;  // each leaf -> each spine
  double uplink_latency_s = 0.5e-6;
  bool scaleup_reduces = false;
};

// `nodes` HGX-like nodes (one NVSwitch vertex per node, one NIC per GPU) on a leaf/spine fabric.
inline spec::Cluster fabric(const FabricSpec& f) {
  spec::Cluster c;
  c.name = "test";
  spec::Gpu gpu;
  gpu.name = "test-gpu";
  gpu.peak_flops[DType::kBf16] = 1e15;
  c.gpu_types["test-gpu"] = gpu;
  c.scaleup_reduces = f.scaleup_reduces;
  std::vector<int> nics;
  for (int n = 0; n < f.nodes; ++n) {
    const int sw = add_vertex(c, spec::VertexKind::kScaleUpSwitch, "node" + std::to_string(n) + "/nvswitch", n);
    for (int j = 0; j < f.gpus_per_node; ++j) {
      const std::string p = "node" + std::to_string(n) + "/";
      const int g = add_vertex(c, spec::VertexKind::kGpu, p + "gpu" + std::to_string(j), n);
      add_link(c, g, sw, f.nvl_bw_Bps, f.nvl_latency_s, spec::LinkKind::kScaleUp);
      if (f.nodes > 1) {
        const int nic = add_vertex(c, spec::VertexKind::kNic, p + "nic" + std::to_string(j), n);
        add_link(c, g, nic, f.nic_bw_Bps * 4, 0, spec::LinkKind::kPcie);
        nics.push_back(nic);
      }
    }
  }
  if (f.nodes > 1) {
    const int leaves = f.rail ? f.gpus_per_node : f.nodes;
    std::vector<int> leaf, spine;
    for (int l = 0; l < leaves; ++l) leaf.push_back(add_vertex(c, spec::VertexKind::kLeaf, "leaf" + std::to_string(l)));
    for (int s = 0; s < f.spines; ++s)
      spine.push_back(add_vertex(c, spec::VertexKind::kSpine, "spine" + std::to_string(s)));
    for (int n = 0; n < f.nodes; ++n)
      for (int j = 0; j < f.gpus_per_node; ++j)
        add_link(c, nics[n * f.gpus_per_node + j], leaf[f.rail ? j : n], f.nic_bw_Bps, f.nic_latency_s);
    for (int l : leaf)
      for (int s : spine) add_link(c, l, s, f.uplink_bw_Bps, f.uplink_latency_s);
  }
  return c;
}

}  // namespace parasol::sim::testing

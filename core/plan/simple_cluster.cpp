// single_type_cluster (placement.hpp): the smallest cluster graph `parasol step` and the tests need when no cluster
// file is given. Every number comes from the arguments or the Gpu spec.
#include <string>

#include "core/plan/placement.hpp"

namespace parasol::plan {

spec::Cluster single_type_cluster(const spec::Gpu& gpu, int nodes, int gpus_per_node, double nic_bw_Bps,
                                  double scaleup_latency_s, double scaleout_latency_s, bool scaleup_reduces) {
  spec::Cluster c;
  c.name = std::to_string(nodes) + "x" + std::to_string(gpus_per_node) + " " + gpu.name;
  c.gpu_types[gpu.name] = gpu;
  c.scaleup_reduces = scaleup_reduces;
  auto add = [&c](spec::VertexKind kind, std::string name, int node, int domain) {
    spec::Vertex v;
    v.kind = kind;
    v.name = std::move(name);
    v.node = node;
    v.domain = domain;
    return boost::add_vertex(v, c.graph);
  };
  auto link = [&c](spec::VertexId a, spec::VertexId b, spec::LinkKind kind, double bw, double lat) {
    spec::Link l;
    l.kind = kind;
    l.bw_Bps = bw;
    l.latency_s = lat;
    boost::add_edge(a, b, l, c.graph);
  };
  const spec::VertexId leaf = add(spec::VertexKind::kLeaf, "leaf0", -1, -1);
  for (int n = 0; n < nodes; ++n) {
    const std::string node = "node" + std::to_string(n);
    const spec::VertexId sw = add(spec::VertexKind::kScaleUpSwitch, node + "/nvswitch", n, n);
    c.nodes.emplace_back();
    c.scaleup_domains.emplace_back();
    for (int g = 0; g < gpus_per_node; ++g) {
      const int index = c.gpu_count();
      const spec::VertexId v = add(spec::VertexKind::kGpu, node + "/gpu" + std::to_string(g), n, n);
      c.graph[v].gpu = index;
      c.graph[v].gpu_type = gpu.name;
      c.gpus.push_back(v);
      c.nodes.back().push_back(index);
      c.scaleup_domains.back().push_back(index);
      link(v, sw, spec::LinkKind::kScaleUp, gpu.scaleup_bw_Bps, scaleup_latency_s / 2);
      const spec::VertexId nic = add(spec::VertexKind::kNic, node + "/nic" + std::to_string(g), n, -1);
      link(v, nic, spec::LinkKind::kPcie, nic_bw_Bps, 0.0);
      link(nic, leaf, spec::LinkKind::kScaleOut, nic_bw_Bps, scaleout_latency_s / 2);
    }
  }
  return c;
}

}  // namespace parasol::plan

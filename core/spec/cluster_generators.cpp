// Expansion of a ClusterSpec into the Boost.Graph: scale-up switches per node or per multi-node domain, NICs over
// PCIe, and the leaf-spine or rail-optimized fabric with per-leaf uplinks sized by the oversubscription ratio.
#include "core/spec/cluster_generators.hpp"

#include <algorithm>
#include <boost/graph/connected_components.hpp>
#include <stdexcept>

namespace parasol::spec {
namespace {

VertexId add_vertex(Cluster& c, VertexKind kind, std::string name, int node, int domain, int local) {
  Vertex v;
  v.kind = kind;
  v.name = std::move(name);
  v.node = node;
  v.domain = domain;
  v.local = local;
  return boost::add_vertex(v, c.graph);
}

void add_link(Cluster& c, VertexId a, VertexId b, LinkKind kind, const LinkSpec& s) {
  Link l;
  l.kind = kind;
  l.bw_Bps = s.bw_Bps;
  l.latency_s = s.latency_s;
  l.full_duplex = s.full_duplex;
  boost::add_edge(a, b, l, c.graph);
}

struct NicRef {
  VertexId v;
  int node;
  int local;
  double bw_Bps;
};

std::string node_prefix(int node) {
  return "node" + std::to_string(node) + "/";
}

// Three tiers: leaves in pods of leaves_per_pod, each pod's leaves linked to its own `spines` spines, every spine
// linked to every core. Each tier's uplinks are its downlink bandwidth divided by that tier's oversubscription.
void build_pods(Cluster& c, const Fabric& f, const std::vector<VertexId>& leaf_v, const std::vector<double>& down_Bps) {
  if (f.leaves_per_pod <= 0 || f.spines <= 0)
    throw std::invalid_argument("generate_cluster: a fat tree needs leaves_per_pod and spines");
  const LinkSpec fabric_link{0, f.latency_s, f.full_duplex};
  const int leaves = static_cast<int>(leaf_v.size());
  const int pods = (leaves + f.leaves_per_pod - 1) / f.leaves_per_pod;
  std::vector<VertexId> core_v(f.cores);
  for (int k = 0; k < f.cores; ++k) core_v[k] = add_vertex(c, VertexKind::kCore, "core" + std::to_string(k), -1, -1, k);
  for (int p = 0; p < pods; ++p) {
    std::vector<VertexId> spine_v(f.spines);
    std::vector<double> spine_down_Bps(f.spines, 0.0);
    for (int s = 0; s < f.spines; ++s)
      spine_v[s] = add_vertex(c, VertexKind::kSpine, "pod" + std::to_string(p) + "/spine" + std::to_string(s), -1, -1,
                              p * f.spines + s);
    for (int l = p * f.leaves_per_pod; l < std::min(leaves, (p + 1) * f.leaves_per_pod); ++l) {
      for (int s = 0; s < f.spines; ++s) {
        LinkSpec up = fabric_link;
        up.bw_Bps = down_Bps[l] / f.oversubscription / f.spines;
        add_link(c, leaf_v[l], spine_v[s], LinkKind::kScaleOut, up);
        spine_down_Bps[s] += up.bw_Bps;
      }
    }
    for (int s = 0; s < f.spines; ++s) {
      for (int k = 0; k < f.cores; ++k) {
        LinkSpec up = fabric_link;
        up.bw_Bps = spine_down_Bps[s] / f.core_oversubscription / f.cores;
        add_link(c, spine_v[s], core_v[k], LinkKind::kScaleOut, up);
      }
    }
  }
}

void build_fabric(Cluster& c, const Fabric& f, const std::vector<NicRef>& nics, int node_count) {
  if (f.kind == FabricKind::kNone || nics.empty()) return;
  if (f.nics_per_leaf <= 0) throw std::invalid_argument("generate_cluster: nics_per_leaf must be positive");
  const int per_leaf = f.nics_per_leaf;
  // Leaf of every NIC, in NIC order.
  std::vector<int> leaf_of(nics.size());
  int leaves = 0;
  int rails = 0;
  if (f.kind != FabricKind::kRailOptimized) {
    for (size_t i = 0; i < nics.size(); ++i) leaf_of[i] = static_cast<int>(i) / per_leaf;
    leaves = (static_cast<int>(nics.size()) + per_leaf - 1) / per_leaf;
  } else {
    for (const auto& n : nics) rails = std::max(rails, n.local + 1);
    const int groups = (node_count + per_leaf - 1) / per_leaf;
    leaves = groups * rails;
    for (size_t i = 0; i < nics.size(); ++i) leaf_of[i] = (nics[i].node / per_leaf) * rails + nics[i].local;
  }
  LinkSpec fabric_link{0, f.latency_s, f.full_duplex};
  std::vector<VertexId> leaf_v(leaves);
  for (int l = 0; l < leaves; ++l) {
    std::string name = f.kind == FabricKind::kRailOptimized
                           ? "rail" + std::to_string(l % rails) + "/leaf" + std::to_string(l / rails)
                           : "leaf" + std::to_string(l);
    leaf_v[l] = add_vertex(c, VertexKind::kLeaf, std::move(name), -1, -1, l);
  }
  std::vector<double> down_Bps(leaves, 0.0);
  for (size_t i = 0; i < nics.size(); ++i) {
    LinkSpec s = fabric_link;
    s.bw_Bps = nics[i].bw_Bps;
    add_link(c, nics[i].v, leaf_v[leaf_of[i]], LinkKind::kScaleOut, s);
    down_Bps[leaf_of[i]] += nics[i].bw_Bps;
  }
  if (f.kind == FabricKind::kFatTree) {
    build_pods(c, f, leaf_v, down_Bps);
    return;
  }
  std::vector<VertexId> spine_v(f.spines);
  for (int s = 0; s < f.spines; ++s)
    spine_v[s] = add_vertex(c, VertexKind::kSpine, "spine" + std::to_string(s), -1, -1, s);
  for (int l = 0; l < leaves; ++l) {
    if (down_Bps[l] <= 0) continue;  // a rail leaf of a group with no NIC on that rail
    for (int s = 0; s < f.spines; ++s) {
      LinkSpec up = fabric_link;
      up.bw_Bps = down_Bps[l] / f.oversubscription / f.spines;
      add_link(c, leaf_v[l], spine_v[s], LinkKind::kScaleOut, up);
    }
  }
}

}  // namespace

Cluster generate_cluster(const ClusterSpec& spec) {
  Cluster c;
  c.name = spec.name;
  c.gpu_types = spec.gpu_types;
  c.scaleup_reduces = !spec.pools.empty();
  std::vector<NicRef> nics;
  int node = 0;
  for (const Pool& pool : spec.pools) {
    const NodeType& nt = spec.node_types.at(pool.node_type);
    if (nt.gpus <= 0 || nt.nodes_per_domain <= 0 || pool.count % nt.nodes_per_domain != 0)
      throw std::invalid_argument("generate_cluster: pool '" + pool.name + "' does not fill whole scale-up domains");
    c.scaleup_reduces = c.scaleup_reduces && nt.in_network_reduce;
    VertexId sw = 0;
    for (int n = 0; n < pool.count; ++n, ++node) {
      const std::string prefix = node_prefix(node);
      if (n % nt.nodes_per_domain == 0) {
        const int domain = static_cast<int>(c.scaleup_domains.size());
        c.scaleup_domains.emplace_back();
        if (nt.nodes_per_domain == 1)
          sw = add_vertex(c, VertexKind::kScaleUpSwitch, prefix + "nvswitch", node, domain, 0);
        else
          sw =
              add_vertex(c, VertexKind::kScaleUpSwitch, "domain" + std::to_string(domain) + "/nvswitch", -1, domain, 0);
      }
      const int domain = static_cast<int>(c.scaleup_domains.size()) - 1;
      c.nodes.emplace_back();
      std::vector<VertexId> gpu_v(nt.gpus);
      for (int g = 0; g < nt.gpus; ++g) {
        const int index = static_cast<int>(c.gpus.size());
        gpu_v[g] = add_vertex(c, VertexKind::kGpu, prefix + "gpu" + std::to_string(g), node, domain, g);
        c.graph[gpu_v[g]].gpu = index;
        c.graph[gpu_v[g]].gpu_type = nt.gpu_type;
        c.gpus.push_back(gpu_v[g]);
        c.nodes.back().push_back(index);
        c.scaleup_domains.back().push_back(index);
        add_link(c, gpu_v[g], sw, LinkKind::kScaleUp, nt.scaleup);
      }
      if (nt.nics <= 0) continue;
      if (nt.attach == NicAttach::kRail && nt.nics != nt.gpus)
        throw std::invalid_argument("generate_cluster: rail NICs need one NIC per GPU in '" + nt.name + "'");
      if (nt.gpus % nt.nics != 0)
        throw std::invalid_argument("generate_cluster: NIC count must divide GPU count in '" + nt.name + "'");
      const int share = nt.gpus / nt.nics;
      std::vector<VertexId> nic_v(nt.nics);
      for (int i = 0; i < nt.nics; ++i) {
        nic_v[i] = add_vertex(c, VertexKind::kNic, prefix + "nic" + std::to_string(i), node, domain, i);
        nics.push_back({nic_v[i], node, i, nt.nic_bw_Bps});
      }
      for (int g = 0; g < nt.gpus; ++g) add_link(c, gpu_v[g], nic_v[g / share], LinkKind::kPcie, nt.pcie);
    }
  }
  build_fabric(c, spec.fabric, nics, node);
  return c;
}

std::vector<int> leaf_of_gpus(const Cluster& c) {
  const Graph& g = c.graph;
  std::vector<int> out(c.gpus.size(), -1);
  for (size_t i = 0; i < c.gpus.size(); ++i) {
    for (auto [e, end] = boost::out_edges(c.gpus[i], g); e != end; ++e) {
      VertexId nic = boost::target(*e, g);
      if (g[nic].kind != VertexKind::kNic) continue;
      for (auto [f, fend] = boost::out_edges(nic, g); f != fend; ++f) {
        VertexId leaf = boost::target(*f, g);
        if (g[leaf].kind != VertexKind::kLeaf) continue;
        if (out[i] < 0 || g[leaf].local < out[i]) out[i] = g[leaf].local;
      }
    }
  }
  return out;
}

Connectivity connectivity(const Cluster& c) {
  const size_t n = boost::num_vertices(c.graph);
  Connectivity r;
  if (n == 0) return r;
  std::vector<int> comp(n);
  r.components = boost::connected_components(c.graph, comp.data());
  if (r.components <= 1) return r;
  const VertexId root = c.gpus.empty() ? 0 : c.gpus.front();
  // Prefer naming an unreachable GPU; otherwise any unreachable vertex.
  for (VertexId v : c.gpus)
    if (comp[v] != comp[root]) {
      r.unreachable = v;
      return r;
    }
  for (VertexId v = 0; v < n; ++v)
    if (comp[v] != comp[root]) {
      r.unreachable = v;
      return r;
    }
  return r;
}

}  // namespace parasol::spec

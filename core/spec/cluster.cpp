// Derived quantities of a Cluster with Boost.Graph: hop counts (BFS), max-flow between GPU sets (push-relabel on a
// directed copy of the graph with per-direction capacities and a super source and sink), bisection bandwidth as the
// minimum max-flow over a fixed, documented list of balanced GPU bipartitions, and connectivity.
#include "core/spec/cluster.hpp"

#include <algorithm>
#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/push_relabel_max_flow.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "core/spec/cluster_generators.hpp"

namespace parasol::spec {
namespace {

// Below this many GPUs, hop statistics use every GPU as a BFS source; above it, kHopSources evenly spaced GPUs.
constexpr int kAllSourcesLimit = 512;
constexpr int kHopSources = 256;

using FlowTraits = boost::adjacency_list_traits<boost::vecS, boost::vecS, boost::directedS>;
using FlowGraph = boost::adjacency_list<
    boost::vecS, boost::vecS, boost::directedS, boost::no_property,
    boost::property<boost::edge_capacity_t, int64_t,
                    boost::property<boost::edge_residual_capacity_t, int64_t,
                                    boost::property<boost::edge_reverse_t, FlowTraits::edge_descriptor>>>>;

// Capacities are integers (whole bytes/s, or coarser units when a link is faster than 2^40 B/s so that sums stay far
// inside int64): integer arithmetic keeps push-relabel exact and free of epsilon stalls.
constexpr double kMaxCapacity = 1099511627776.0;  // 2^40

int64_t to_capacity(double bw_Bps, double unit_Bps) {
  return static_cast<int64_t>(std::llround(std::max(0.0, bw_Bps) / unit_Bps));
}

void add_arc(FlowGraph& g, size_t u, size_t v, int64_t cap) {
  auto cap_map = boost::get(boost::edge_capacity, g);
  auto rev_map = boost::get(boost::edge_reverse, g);
  auto e = boost::add_edge(u, v, g).first;
  auto r = boost::add_edge(v, u, g).first;
  cap_map[e] = cap;
  cap_map[r] = 0;
  rev_map[e] = r;
  rev_map[r] = e;
}

void check_gpu_set(const Cluster& c, const std::vector<int>& set, std::vector<char>& seen, const char* what) {
  for (int g : set) {
    if (g < 0 || g >= c.gpu_count())
      throw std::out_of_range(std::string("max_flow_Bps: GPU index out of range in ") + what);
    if (seen[g]) throw std::invalid_argument("max_flow_Bps: GPU sets overlap or repeat a GPU");
    seen[g] = 1;
  }
}

// Distances (in links) from `src` to every vertex; -1 where unreachable.
std::vector<int> bfs_distances(const Graph& g, VertexId src) {
  const size_t n = boost::num_vertices(g);
  std::vector<int> dist(n, -1);
  std::vector<boost::default_color_type> color(n);
  dist[src] = 0;
  auto dist_map = boost::make_iterator_property_map(dist.begin(), boost::get(boost::vertex_index, g));
  boost::breadth_first_search(
      g, src,
      boost::visitor(boost::make_bfs_visitor(boost::record_distances(dist_map, boost::on_tree_edge())))
          .color_map(boost::make_iterator_property_map(color.begin(), boost::get(boost::vertex_index, g))));
  for (size_t v = 0; v < n; ++v)
    if (v != src && color[v] == boost::white_color) dist[v] = -1;
  return dist;
}

double incident_bw(const Graph& g, VertexId v, LinkKind kind) {
  double sum = 0;
  for (auto [e, end] = boost::out_edges(v, g); e != end; ++e)
    if (g[*e].kind == kind) sum += g[*e].bw_Bps;
  return sum;
}

// Scale-out bandwidth a GPU can use alone when every GPU on its NICs is busy: per NIC, min(PCIe link, NIC fabric
// bandwidth / GPUs sharing the NIC), summed over its NICs.
double scaleout_bw(const Graph& g, VertexId gpu) {
  double sum = 0;
  for (auto [e, end] = boost::out_edges(gpu, g); e != end; ++e) {
    VertexId nic = boost::target(*e, g);
    if (g[nic].kind != VertexKind::kNic) continue;
    int sharers = 0;
    for (auto [f, fend] = boost::out_edges(nic, g); f != fend; ++f)
      if (g[*f].kind == LinkKind::kPcie) ++sharers;
    const double port = incident_bw(g, nic, LinkKind::kScaleOut);
    sum += std::min(g[*e].bw_Bps, port / std::max(1, sharers));
  }
  return sum;
}

struct Split {
  std::string name;
  std::vector<int> a, b;
};

// The balanced bipartitions the bisection is taken over (see docs/schema-cluster.md): GPU-index halves (which are the
// node halves, GPUs being numbered node by node), leaf halves (GPUs ordered by the leaf of their NIC), and halves
// within every node. Identical splits are kept once.
std::vector<Split> bisection_splits(const Cluster& c) {
  const int n = c.gpu_count();
  std::vector<Split> out;
  auto add = [&](std::string name, std::vector<int> order) {
    Split s{std::move(name), {}, {}};
    s.a.assign(order.begin(), order.begin() + n / 2);
    s.b.assign(order.begin() + n / 2, order.end());
    std::sort(s.a.begin(), s.a.end());
    std::sort(s.b.begin(), s.b.end());
    for (const auto& o : out)
      if (o.a == s.a || o.a == s.b) return;
    out.push_back(std::move(s));
  };
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  add("node halves", order);

  const std::vector<int> leaf = leaf_of_gpus(c);
  if (std::any_of(leaf.begin(), leaf.end(), [](int l) { return l >= 0; })) {
    std::vector<int> by_leaf = order;
    auto key = [&](int g) { return leaf[g] < 0 ? std::numeric_limits<int>::max() : leaf[g]; };
    std::stable_sort(by_leaf.begin(), by_leaf.end(), [&](int x, int y) { return key(x) < key(y); });
    add("leaf halves", by_leaf);
  }

  bool even_nodes = !c.nodes.empty();
  for (const auto& node : c.nodes) even_nodes = even_nodes && node.size() >= 2 && node.size() % 2 == 0;
  if (even_nodes) {
    std::vector<int> first, second;
    for (const auto& node : c.nodes) {
      first.insert(first.end(), node.begin(), node.begin() + node.size() / 2);
      second.insert(second.end(), node.begin() + node.size() / 2, node.end());
    }
    first.insert(first.end(), second.begin(), second.end());
    add("halves within each node", first);
  }
  return out;
}

}  // namespace

std::string to_string(VertexKind k) {
  switch (k) {
    case VertexKind::kGpu:
      return "gpu";
    case VertexKind::kScaleUpSwitch:
      return "scaleup_switch";
    case VertexKind::kNic:
      return "nic";
    case VertexKind::kLeaf:
      return "leaf";
    case VertexKind::kSpine:
      return "spine";
    case VertexKind::kCore:
      return "core";
    case VertexKind::kHost:
      return "host";
  }
  return "unknown";
}

std::string to_string(LinkKind k) {
  switch (k) {
    case LinkKind::kScaleUp:
      return "scaleup";
    case LinkKind::kPcie:
      return "pcie";
    case LinkKind::kScaleOut:
      return "scaleout";
  }
  return "unknown";
}

const Gpu& Cluster::gpu_spec(int gpu) const {
  const std::string& type = graph[gpus.at(gpu)].gpu_type;
  auto it = gpu_types.find(type);
  if (it == gpu_types.end()) throw std::out_of_range("Cluster::gpu_spec: no GPU type '" + type + "'");
  return it->second;
}

int hops(const Cluster& c, int gpu_a, int gpu_b) {
  if (gpu_a < 0 || gpu_a >= c.gpu_count() || gpu_b < 0 || gpu_b >= c.gpu_count())
    throw std::out_of_range("hops: GPU index out of range");
  if (gpu_a == gpu_b) return 0;
  return bfs_distances(c.graph, c.gpus[gpu_a])[c.gpus[gpu_b]];
}

double max_flow_Bps(const Cluster& c, const std::vector<int>& from, const std::vector<int>& to) {
  std::vector<char> seen(c.gpu_count(), 0);
  check_gpu_set(c, from, seen, "'from'");
  check_gpu_set(c, to, seen, "'to'");
  if (from.empty() || to.empty()) return 0;
  const Graph& g = c.graph;
  const size_t n = boost::num_vertices(g);
  const size_t source = n, sink = n + 1;
  double max_bw_Bps = 0;
  for (auto [e, end] = boost::edges(g); e != end; ++e) max_bw_Bps = std::max(max_bw_Bps, g[*e].bw_Bps);
  const double unit_Bps = std::max(1.0, max_bw_Bps / kMaxCapacity);
  FlowGraph fg(n + 2);
  for (auto [e, end] = boost::edges(g); e != end; ++e) {
    const size_t u = boost::source(*e, g), v = boost::target(*e, g);
    const int64_t cap = to_capacity(g[*e].bw_Bps, unit_Bps);
    add_arc(fg, u, v, cap);
    add_arc(fg, v, u, cap);
  }
  // A GPU can never send or receive more than its links carry, so that bound is as good as infinity (and exact).
  auto gpu_cap = [&](VertexId v) {
    int64_t sum = 1;
    for (auto [e, end] = boost::out_edges(v, g); e != end; ++e) sum += to_capacity(g[*e].bw_Bps, unit_Bps);
    return sum;
  };
  for (int x : from) add_arc(fg, source, c.gpus[x], gpu_cap(c.gpus[x]));
  for (int y : to) add_arc(fg, c.gpus[y], sink, gpu_cap(c.gpus[y]));
  const int64_t flow = boost::push_relabel_max_flow(fg, source, sink);
  return static_cast<double>(flow) * unit_Bps;
}

ClusterSummary summarize(const Cluster& c) {
  const Graph& g = c.graph;
  ClusterSummary s;
  s.gpus = c.gpu_count();
  s.nodes = static_cast<int>(c.nodes.size());
  s.domains = static_cast<int>(c.scaleup_domains.size());
  for (const auto& d : c.scaleup_domains) s.max_domain_size = std::max(s.max_domain_size, static_cast<int>(d.size()));
  for (auto [v, end] = boost::vertices(g); v != end; ++v) {
    VertexKind k = g[*v].kind;
    if (k != VertexKind::kGpu && k != VertexKind::kNic && k != VertexKind::kHost) ++s.switches;
  }
  s.links = static_cast<int>(boost::num_edges(g));
  s.connected = connectivity(c).components == 1;
  if (s.gpus == 0) return s;

  s.scaleup_bw_per_gpu_Bps = std::numeric_limits<double>::infinity();
  s.scaleout_bw_per_gpu_Bps = std::numeric_limits<double>::infinity();
  for (VertexId v : c.gpus) {
    s.scaleup_bw_per_gpu_Bps = std::min(s.scaleup_bw_per_gpu_Bps, incident_bw(g, v, LinkKind::kScaleUp));
    s.scaleout_bw_per_gpu_Bps = std::min(s.scaleout_bw_per_gpu_Bps, scaleout_bw(g, v));
  }

  // Hop statistics over (source, any GPU) pairs; sources are all GPUs or an evenly spaced deterministic sample.
  std::vector<int> sources;
  if (s.gpus <= kAllSourcesLimit) {
    for (int i = 0; i < s.gpus; ++i) sources.push_back(i);
  } else {
    s.hops_sampled = true;
    for (int k = 0; k < kHopSources; ++k) sources.push_back(static_cast<int>(int64_t(k) * s.gpus / kHopSources));
  }
  double hop_sum = 0;
  int64_t pairs = 0;
  for (int src : sources) {
    const std::vector<int> dist = bfs_distances(g, c.gpus[src]);
    for (int t = 0; t < s.gpus; ++t) {
      if (t == src) continue;
      const int d = dist[c.gpus[t]];
      if (d < 0) continue;
      s.max_hops_gpu_to_gpu = std::max(s.max_hops_gpu_to_gpu, d);
      hop_sum += d;
      ++pairs;
    }
  }
  s.mean_hops_gpu_to_gpu = pairs ? hop_sum / static_cast<double>(pairs) : 0;

  if (s.gpus >= 2) {
    s.bisection_bw_Bps = std::numeric_limits<double>::infinity();
    for (const Split& split : bisection_splits(c)) {
      const double f = max_flow_Bps(c, split.a, split.b);
      if (f < s.bisection_bw_Bps) {
        s.bisection_bw_Bps = f;
        s.bisection_split = split.name;
      }
    }
  }
  return s;
}

}  // namespace parasol::spec

#include "sim/collectives.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "core/common/error.hpp"

namespace parasol::sim {

using plan::CollectiveAlgo;

std::string to_string(CollKind k) {
  switch (k) {
    case CollKind::kAllReduce:
      return "all_reduce";
    case CollKind::kAllGather:
      return "all_gather";
    case CollKind::kReduceScatter:
      return "reduce_scatter";
    case CollKind::kAllToAll:
      return "all_to_all";
    case CollKind::kSendRecv:
      return "send_recv";
  }
  return "?";
}

CollKind coll_kind_of(plan::OpKind k) {
  switch (k) {
    case plan::OpKind::kAllReduce:
      return CollKind::kAllReduce;
    case plan::OpKind::kAllGather:
      return CollKind::kAllGather;
    case plan::OpKind::kReduceScatter:
      return CollKind::kReduceScatter;
    case plan::OpKind::kAllToAll:
      return CollKind::kAllToAll;
    case plan::OpKind::kSend:
    case plan::OpKind::kRecv:
      return CollKind::kSendRecv;
    default:
      break;
  }
  throw RuntimeFailure("not a communication op");
}

double bus_factor(CollKind k, int n) {
  if (n <= 1) return 1.0;
  switch (k) {
    case CollKind::kAllReduce:
      return 2.0 * (n - 1) / n;
    case CollKind::kAllGather:
    case CollKind::kReduceScatter:
    case CollKind::kAllToAll:
      return static_cast<double>(n - 1) / n;
    case CollKind::kSendRecv:
      return 1.0;
  }
  return 1.0;
}

namespace {

// The group seen as nodes: GPUs grouped by node (nodes in order of their index, GPUs ascending within a node).
struct Shape {
  std::vector<std::vector<int>> nodes;  // GPU indices per node
  int n = 0;
  int g = 0;  // GPUs per node when uniform, else 0
  bool one_domain = true;
};

Shape shape_of(const Collective& c, const spec::Cluster& cl) {
  Shape s;
  s.n = static_cast<int>(c.gpus.size());
  std::map<int, std::vector<int>> by_node;
  std::set<int> domains;
  for (int gpu : c.gpus) {
    if (gpu < 0 || gpu >= cl.gpu_count())
      throw ConfigError("collective group names GPU " + std::to_string(gpu) + ", the cluster has " +
                        std::to_string(cl.gpu_count()));
    by_node[cl.node_of(gpu)].push_back(gpu);
    domains.insert(cl.domain_of(gpu));
  }
  for (auto& [node, list] : by_node) {
    std::sort(list.begin(), list.end());
    s.nodes.push_back(list);
  }
  s.one_domain = domains.size() <= 1;
  s.g = static_cast<int>(s.nodes.front().size());
  for (const auto& l : s.nodes)
    if (static_cast<int>(l.size()) != s.g) s.g = 0;
  return s;
}

struct Params {
  double nvls_efficiency, base_latency_s, nvls_latency_s;
};

Params params_of(const Collective& c, const spec::Cluster& cl) {
  spec::Efficiency e;
  e.comm_efficiency = c.efficiency;
  if (!c.gpus.empty() && c.gpus.front() >= 0 && c.gpus.front() < cl.gpu_count()) {
    const auto& v = cl.graph[cl.gpus[static_cast<size_t>(c.gpus.front())]];
    auto it = cl.gpu_types.find(v.gpu_type);
    if (it != cl.gpu_types.end()) e = it->second.eff;
  }
  Params p;
  p.nvls_efficiency = c.nvls_efficiency >= 0 ? c.nvls_efficiency : e.nvls_efficiency;
  if (!(p.nvls_efficiency > 0)) p.nvls_efficiency = c.efficiency;
  p.base_latency_s = c.base_latency_s >= 0 ? c.base_latency_s : e.collective_latency_s;
  p.nvls_latency_s = c.nvls_latency_s >= 0 ? c.nvls_latency_s : e.nvls_latency_s;
  return p;
}

// Accumulates flows (merging equal src/dst) and the per-step latency budget.
class Builder {
 public:
  Builder(RouteTable& r, double eff) : routes_(r), eff_(eff) {}
  void gpu_flow(int a, int b, double bytes) { vertex_flow(routes_.gpu_vertex(a), routes_.gpu_vertex(b), bytes); }
  void vertex_flow(int a, int b, double bytes) {
    if (a == b || bytes <= 0) return;
    acc_[{a, b}] += bytes / eff_;
  }
  double gpu_latency(int a, int b) { return a == b ? 0.0 : routes_.gpu_route(a, b).latency_s; }
  FlowSet finish(CollectiveAlgo algo, double total_latency_s) {
    FlowSet fs;
    fs.algo = algo;
    double max_lat = 0;
    for (const auto& [k, bytes] : acc_) {
      fs.flows.push_back({k.first, k.second, bytes});
      max_lat = std::max(max_lat, routes_.route(k.first, k.second).latency_s);
    }
    fs.extra_latency_s = std::max(0.0, total_latency_s - max_lat);
    return fs;
  }

 private:
  RouteTable& routes_;
  double eff_;
  std::map<std::pair<int, int>, double> acc_;
};

// One ring over `order` carrying `bytes_per_edge`; returns the largest edge latency.
double add_ring(Builder& b, const std::vector<int>& order, double bytes_per_edge) {
  const size_t n = order.size();
  double alpha = 0;
  if (n < 2) return 0;
  for (size_t k = 0; k < n; ++k) {
    const int a = order[k], z = order[(k + 1) % n];
    b.gpu_flow(a, z, bytes_per_edge);
    alpha = std::max(alpha, b.gpu_latency(a, z));
  }
  return alpha;
}

FlowSet ring(const Collective& c, const Shape& s, RouteTable& r) {
  Builder b(r, c.efficiency);
  const int n = s.n;
  const bool ar = c.kind == CollKind::kAllReduce;
  const double steps = ar ? 2.0 * (n - 1) : (n - 1);
  const double per_edge = steps / n * c.bytes;
  const int nodes = static_cast<int>(s.nodes.size());
  const int channels = (nodes > 1 && s.g > 1) ? s.g : 1;
  double alpha = 0;
  for (int ch = 0; ch < channels; ++ch) {
    std::vector<int> order;
    if (channels == 1) {
      for (const auto& l : s.nodes) order.insert(order.end(), l.begin(), l.end());
    } else {
      // Rail-aligned: node i is entered on local index e_i and left on e_{i+1}, so every inter-node edge joins two
      // NICs of the same rail. e alternates ch, ch+1 (and ch+2 closes an odd number of nodes when g >= 3).
      const int g = s.g;
      std::vector<int> entry(nodes);
      for (int i = 0; i < nodes; ++i) entry[i] = (ch + (i % 2)) % g;
      if (nodes % 2 == 1 && nodes > 1 && g >= 3) entry[nodes - 1] = (ch + 2) % g;
      for (int i = 0; i < nodes; ++i) {
        const auto& l = s.nodes[i];
        const int e = entry[i];
        int x = entry[(i + 1) % nodes];
        if (x == e) x = (e + g - 1) % g;  // cannot align (one node, or g = 2 with an odd node count)
        order.push_back(l[e]);
        for (int j = 1; j < g; ++j) {
          const int k = (e + j) % g;
          if (k != x) order.push_back(l[k]);
        }
        order.push_back(l[x]);
      }
    }
    alpha = std::max(alpha, add_ring(b, order, per_edge / channels));
  }
  return b.finish(CollectiveAlgo::kRing, steps * alpha + params_of(c, r.cluster()).base_latency_s);
}

// Scale-up switches adjacent to every GPU of the group.
std::vector<int> common_switches(const Collective& c, RouteTable& r) {
  const auto& g = r.cluster().graph;
  std::vector<int> common;
  bool first = true;
  for (int gpu : c.gpus) {
    std::vector<int> mine;
    for (const auto& a : r.neighbours(r.gpu_vertex(gpu)))
      if (g[static_cast<spec::VertexId>(a.vertex)].kind == spec::VertexKind::kScaleUpSwitch) mine.push_back(a.vertex);
    std::sort(mine.begin(), mine.end());
    mine.erase(std::unique(mine.begin(), mine.end()), mine.end());
    if (first) {
      common = mine;
      first = false;
    } else {
      std::vector<int> out;
      std::set_intersection(common.begin(), common.end(), mine.begin(), mine.end(), std::back_inserter(out));
      common = out;
    }
  }
  return common;
}

FlowSet nvls(const Collective& c, RouteTable& r) {
  const Params p = params_of(c, r.cluster());
  Builder b(r, p.nvls_efficiency);
  const auto sw = common_switches(c, r);
  const double n = static_cast<double>(c.gpus.size());
  const double per_dir = (n + 1) / n * c.bytes / static_cast<double>(sw.size());
  double alpha = 0;
  for (int gpu : c.gpus) {
    const int v = r.gpu_vertex(gpu);
    for (int s : sw) {
      b.vertex_flow(v, s, per_dir);
      b.vertex_flow(s, v, per_dir);
      alpha = std::max(alpha, r.route(v, s).latency_s + r.route(s, v).latency_s);
    }
  }
  return b.finish(CollectiveAlgo::kNvls, 2 * alpha + p.nvls_latency_s + p.base_latency_s);
}

// Intra-node part of hierarchical / tree all-reduce: one ring per node carrying reduce-scatter + all-gather.
double add_intra(Builder& b, const Shape& s, double bytes) {
  double alpha = 0;
  for (const auto& l : s.nodes) {
    const int g = static_cast<int>(l.size());
    if (g > 1) alpha = std::max(alpha, add_ring(b, l, 2.0 * (g - 1) / g * bytes));
  }
  return s.g > 1 ? 2.0 * (s.g - 1) * alpha : 0.0;
}

FlowSet hierarchical(const Collective& c, const Shape& s, RouteTable& r) {
  Builder b(r, c.efficiency);
  double lat = add_intra(b, s, c.bytes);
  const int nodes = static_cast<int>(s.nodes.size());
  double alpha = 0;
  for (int j = 0; j < s.g; ++j) {
    std::vector<int> rail;
    for (const auto& l : s.nodes) rail.push_back(l[j]);
    alpha = std::max(alpha, add_ring(b, rail, 2.0 * (nodes - 1) / nodes * c.bytes / s.g));
  }
  lat += 2.0 * (nodes - 1) * alpha;
  return b.finish(CollectiveAlgo::kHierarchical, lat + params_of(c, r.cluster()).base_latency_s);
}

FlowSet tree(const Collective& c, const Shape& s, RouteTable& r) {
  Builder b(r, c.efficiency);
  double lat = add_intra(b, s, c.bytes);
  const int nodes = static_cast<int>(s.nodes.size());
  double alpha = 0;
  const double half = c.bytes / s.g / 2.0;
  for (int j = 0; j < s.g; ++j) {
    for (int t = 0; t < 2; ++t) {
      // Tree t: a binary heap over the nodes, the second tree shifted by one so that leaves of one are inner nodes
      // of the other (NCCL's double binary tree has the same property).
      auto node_at = [&](int pos) { return s.nodes[(pos + t) % nodes][j]; };
      for (int pos = 1; pos < nodes; ++pos) {
        const int child = node_at(pos), parent = node_at((pos - 1) / 2);
        b.gpu_flow(child, parent, half);  // reduce
        b.gpu_flow(parent, child, half);  // broadcast
        alpha = std::max(alpha, std::max(b.gpu_latency(child, parent), b.gpu_latency(parent, child)));
      }
    }
  }
  const double height = std::floor(std::log2(static_cast<double>(nodes)));
  lat += 2.0 * height * alpha;
  return b.finish(CollectiveAlgo::kTree, lat + params_of(c, r.cluster()).base_latency_s);
}

FlowSet direct(const Collective& c, RouteTable& r) {
  Builder b(r, c.efficiency);
  const int n = static_cast<int>(c.gpus.size());
  double alpha = 0;
  if (c.kind == CollKind::kSendRecv) {
    b.gpu_flow(c.gpus[0], c.gpus[1], c.bytes);
    return b.finish(CollectiveAlgo::kDirect, b.gpu_latency(c.gpus[0], c.gpus[1]));
  }
  if (!c.a2a_bytes.empty() && c.a2a_bytes.size() != static_cast<size_t>(n) * n)
    throw ConfigError("all-to-all bytes matrix has " + std::to_string(c.a2a_bytes.size()) + " entries, expected " +
                      std::to_string(n * n));
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const double bytes = c.a2a_bytes.empty() ? c.bytes / n : c.a2a_bytes[static_cast<size_t>(i) * n + j];
      b.gpu_flow(c.gpus[i], c.gpus[j], bytes);
      if (bytes > 0) alpha = std::max(alpha, b.gpu_latency(c.gpus[i], c.gpus[j]));
    }
  return b.finish(CollectiveAlgo::kDirect, alpha + params_of(c, r.cluster()).base_latency_s);
}

const CollectiveAlgo kOrder[] = {CollectiveAlgo::kRing, CollectiveAlgo::kNvls, CollectiveAlgo::kHierarchical,
                                 CollectiveAlgo::kTree, CollectiveAlgo::kDirect};

}  // namespace

std::string algo_name(CollectiveAlgo a) {
  switch (a) {
    case CollectiveAlgo::kAuto:
      return "auto";
    case CollectiveAlgo::kRing:
      return "ring";
    case CollectiveAlgo::kTree:
      return "tree";
    case CollectiveAlgo::kNvls:
      return "nvls";
    case CollectiveAlgo::kHierarchical:
      return "hierarchical";
    case CollectiveAlgo::kDirect:
      return "direct";
  }
  return "?";
}

plan::CollectiveAlgo parse_algo(const std::string& s) {
  for (CollectiveAlgo a : {CollectiveAlgo::kAuto, CollectiveAlgo::kRing, CollectiveAlgo::kTree, CollectiveAlgo::kNvls,
                           CollectiveAlgo::kHierarchical, CollectiveAlgo::kDirect})
    if (algo_name(a) == s) return a;
  throw ConfigError("", 0, 0, "algo", "one of auto, ring, tree, nvls, hierarchical, direct", s);
}

bool applicable(const Collective& c, CollectiveAlgo algo, RouteTable& r) {
  if (algo == CollectiveAlgo::kAuto) return true;
  const int n = static_cast<int>(c.gpus.size());
  if (c.kind == CollKind::kSendRecv) return algo == CollectiveAlgo::kDirect && n == 2;
  if (c.kind == CollKind::kAllToAll) return algo == CollectiveAlgo::kDirect;
  if (n < 1) return false;
  const Shape s = shape_of(c, r.cluster());
  const bool multi = s.nodes.size() > 1;
  switch (algo) {
    case CollectiveAlgo::kRing:
      return true;
    case CollectiveAlgo::kNvls:
      return c.kind == CollKind::kAllReduce && n > 1 && s.one_domain && r.cluster().scaleup_reduces &&
             !common_switches(c, r).empty();
    case CollectiveAlgo::kHierarchical:
      return c.kind == CollKind::kAllReduce && multi && !s.one_domain && s.g > 1;
    case CollectiveAlgo::kTree:
      return c.kind == CollKind::kAllReduce && multi && !s.one_domain && s.g > 0;
    default:
      return false;
  }
}

FlowSet decompose(const Collective& c, CollectiveAlgo algo, RouteTable& r) {
  if (algo == CollectiveAlgo::kAuto) {
    Collective copy = c;
    copy.algo = CollectiveAlgo::kAuto;
    return plan_collective(copy, r);
  }
  if (!applicable(c, algo, r))
    throw ConfigError("collective algorithm '" + algo_name(algo) + "' cannot run " + to_string(c.kind) +
                      " over this group of " + std::to_string(c.gpus.size()) + " GPUs");
  if (c.gpus.size() < 2 || c.bytes <= 0) {
    if (c.kind != CollKind::kAllToAll || c.a2a_bytes.empty()) {
      FlowSet fs;
      fs.algo = algo;
      return fs;
    }
  }
  switch (algo) {
    case CollectiveAlgo::kRing:
      return ring(c, shape_of(c, r.cluster()), r);
    case CollectiveAlgo::kNvls:
      return nvls(c, r);
    case CollectiveAlgo::kHierarchical:
      return hierarchical(c, shape_of(c, r.cluster()), r);
    case CollectiveAlgo::kTree:
      return tree(c, shape_of(c, r.cluster()), r);
    case CollectiveAlgo::kDirect:
      return direct(c, r);
    case CollectiveAlgo::kAuto:
      break;
  }
  return {};
}

FlowSet plan_collective(const Collective& c, RouteTable& r) {
  if (c.algo != CollectiveAlgo::kAuto) return decompose(c, c.algo, r);
  FlowSet best;
  double best_t = 0;
  bool have = false;
  for (CollectiveAlgo a : kOrder) {
    if (!applicable(c, a, r)) continue;
    FlowSet fs = decompose(c, a, r);
    const double t = estimate_s(fs, r);
    if (!have || t < best_t) {
      best = std::move(fs);
      best_t = t;
      have = true;
    }
  }
  if (!have) throw ConfigError("no collective algorithm can run " + to_string(c.kind) + " over this group");
  return best;
}

double estimate_s(const FlowSet& fs, RouteTable& r) {
  std::map<std::pair<int, bool>, double> load;
  double max_lat = 0;
  for (const Flow& f : fs.flows) {
    const Route& rt = r.route(f.src, f.dst);
    max_lat = std::max(max_lat, rt.latency_s);
    for (const Hop& h : rt.hops) load[{h.edge, h.forward || !r.edge(h.edge).link.full_duplex}] += f.bytes;
  }
  double t_bw = 0;
  for (const auto& [k, bytes] : load) t_bw = std::max(t_bw, bytes / r.edge(k.first).link.bw_Bps);
  return t_bw + max_lat + fs.extra_latency_s;
}

}  // namespace parasol::sim

// Collectives as flows per (algorithm, protocol) (collectives.hpp).
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

bool same_domain(const spec::Cluster& cl, int a, int b) {
  const int d = cl.domain_of(a);
  return d >= 0 && d == cl.domain_of(b);
}

// Accumulates flows (merging equal src/dst) and the per-step latency budget. Flows between GPUs of one scale-up
// domain carry bytes / eff_intra, flows across domains bytes / eff_nic.
class Builder {
 public:
  Builder(RouteTable& r, double eff_intra, double eff_nic) : routes_(r), intra_(eff_intra), nic_(eff_nic) {}
  void gpu_flow(int a, int b, double bytes) {
    if (a == b || bytes <= 0) return;
    const double eff = same_domain(routes_.cluster(), a, b) ? intra_ : nic_;
    vertex_flow(routes_.gpu_vertex(a), routes_.gpu_vertex(b), bytes, eff);
  }
  void vertex_flow(int a, int b, double bytes, double eff) {
    if (a == b || bytes <= 0) return;
    acc_[{a, b}] += bytes / eff;
  }
  double gpu_latency(int a, int b) { return a == b ? 0.0 : routes_.gpu_route(a, b).latency_s; }
  FlowSet finish(CollectiveAlgo algo, cost::Protocol proto, double total_latency_s) {
    FlowSet fs;
    fs.algo = algo;
    fs.proto = proto;
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
  double intra_, nic_;
  std::map<std::pair<int, int>, double> acc_;
};

// The largest edge latency of a ring, inside domains and across them (-1: no such edge).
struct RingLatency {
  double intra = -1, inter = -1;
  void add(const RingLatency& o) {
    intra = std::max(intra, o.intra);
    inter = std::max(inter, o.inter);
  }
  // One ring step: the slowest edge, with protocol p.
  double step(const cost::CollectiveParams& P, cost::Protocol p) const {
    double s = 0;
    if (intra >= 0) s = std::max(s, P.step_s(p, intra, false));
    if (inter >= 0) s = std::max(s, P.step_s(p, inter, true));
    return s;
  }
};

// One ring over `order` carrying `bytes_per_edge`.
RingLatency add_ring(Builder& b, const spec::Cluster& cl, const std::vector<int>& order, double bytes_per_edge) {
  const size_t n = order.size();
  RingLatency lat;
  if (n < 2) return lat;
  for (size_t k = 0; k < n; ++k) {
    const int a = order[k], z = order[(k + 1) % n];
    b.gpu_flow(a, z, bytes_per_edge);
    double& l = same_domain(cl, a, z) ? lat.intra : lat.inter;
    l = std::max(l, b.gpu_latency(a, z));
  }
  return lat;
}

cost::CollectiveParams params_of(const Collective& c, const spec::Cluster& cl) { return collective_params(c, cl); }

plan::OpKind op_kind(CollKind k) {
  switch (k) {
    case CollKind::kAllReduce: return plan::OpKind::kAllReduce;
    case CollKind::kAllGather: return plan::OpKind::kAllGather;
    case CollKind::kReduceScatter: return plan::OpKind::kReduceScatter;
    case CollKind::kAllToAll: return plan::OpKind::kAllToAll;
    case CollKind::kSendRecv: return plan::OpKind::kSend;
  }
  return plan::OpKind::kSend;
}

const cost::Protocol kProtocols[] = {cost::Protocol::kLL, cost::Protocol::kLL128, cost::Protocol::kNarrow,
                                     cost::Protocol::kSimple};

// Empty FlowSet with algo kAuto: "this (algorithm, protocol) pair does not apply".
FlowSet none() {
  FlowSet fs;
  fs.algo = CollectiveAlgo::kAuto;
  return fs;
}

FlowSet ring(const Collective& c, const Shape& s, RouteTable& r, cost::Protocol p) {
  const cost::CollectiveParams P = params_of(c, r.cluster());
  const plan::OpKind kind = op_kind(c.kind);
  const double f = P.proto_bw(kind, p);
  if (!(f > 0)) return none();
  const int n = s.n;
  Builder b(r, P.link_eff(kind, n) * f, P.nic_eff() * f);
  const bool ar = c.kind == CollKind::kAllReduce;
  const double steps = ar ? 2.0 * (n - 1) : (n - 1);
  const double per_edge = steps / n * c.bytes;
  const int nodes = static_cast<int>(s.nodes.size());
  const int channels = (nodes > 1 && s.g > 1) ? s.g : 1;
  RingLatency lat;
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
    lat.add(add_ring(b, r.cluster(), order, per_edge / channels));
  }
  return b.finish(CollectiveAlgo::kRing, p, steps * lat.step(P, p) + P.proto(p).base_s + P.base_latency_s);
}

// NVLS (and the engine's multimem path): every GPU sends and receives (n+1)/n x S through the switches it shares
// with the group; returns the largest GPU -> switch -> GPU latency.
double add_multimem(Builder& b, const Collective& c, RouteTable& r, double eff) {
  const auto sw = common_switches(c, r);
  const double n = static_cast<double>(c.gpus.size());
  const double per_dir = (n + 1) / n * c.bytes / static_cast<double>(sw.size());
  double alpha = 0;
  for (int gpu : c.gpus) {
    const int v = r.gpu_vertex(gpu);
    for (int s : sw) {
      b.vertex_flow(v, s, per_dir, eff);
      b.vertex_flow(s, v, per_dir, eff);
      alpha = std::max(alpha, r.route(v, s).latency_s + r.route(s, v).latency_s);
    }
  }
  return alpha;
}

FlowSet nvls(const Collective& c, RouteTable& r, cost::Protocol p) {
  if (p != cost::Protocol::kSimple) return none();
  const cost::CollectiveParams P = params_of(c, r.cluster());
  Builder b(r, P.nvls_eff(), P.nvls_eff());
  const double alpha = add_multimem(b, c, r, P.nvls_eff());
  return b.finish(CollectiveAlgo::kNvls, p,
                  2 * P.step_s(p, alpha, false) + P.model.simple.base_s + P.nvls_latency_s + P.base_latency_s);
}

// Intra-node part of hierarchical / tree all-reduce: one ring per node carrying reduce-scatter + all-gather.
RingLatency add_intra(Builder& b, const Shape& s, const spec::Cluster& cl, double bytes) {
  RingLatency lat;
  for (const auto& l : s.nodes) {
    const int g = static_cast<int>(l.size());
    if (g > 1) lat.add(add_ring(b, cl, l, 2.0 * (g - 1) / g * bytes));
  }
  return lat;
}

FlowSet multi_node(const Collective& c, const Shape& s, RouteTable& r, cost::Protocol p, CollectiveAlgo algo) {
  const cost::CollectiveParams P = params_of(c, r.cluster());
  const double f = P.proto_bw(plan::OpKind::kAllReduce, p);
  if (!(f > 0)) return none();
  Builder b(r, P.link_eff(plan::OpKind::kAllReduce, s.g) * f, P.nic_eff() * f);
  const RingLatency intra = add_intra(b, s, r.cluster(), c.bytes);
  double lat = s.g > 1 && intra.intra >= 0 ? 2.0 * (s.g - 1) * P.step_s(p, intra.intra, false) : 0.0;
  const int nodes = static_cast<int>(s.nodes.size());
  double alpha = 0;
  if (algo == CollectiveAlgo::kHierarchical) {
    for (int j = 0; j < s.g; ++j) {
      std::vector<int> rail;
      for (const auto& l : s.nodes) rail.push_back(l[j]);
      const RingLatency rl = add_ring(b, r.cluster(), rail, 2.0 * (nodes - 1) / nodes * c.bytes / s.g);
      alpha = std::max(alpha, std::max(rl.inter, rl.intra));
    }
    lat += 2.0 * (nodes - 1) * P.step_s(p, alpha, true);
  } else {
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
    lat += 2.0 * std::floor(std::log2(static_cast<double>(nodes))) * P.step_s(p, alpha, true);
  }
  return b.finish(algo, p, lat + P.proto(p).base_s + P.base_latency_s);
}

FlowSet send_recv(const Collective& c, RouteTable& r) {
  const cost::CollectiveParams P = params_of(c, r.cluster());
  Builder b(r, P.efficiency, P.nic_eff());
  const int a = c.gpus[0], z = c.gpus[1];
  b.gpu_flow(a, z, c.bytes);
  const double extra = same_domain(r.cluster(), a, z) || a == z ? 0.0 : P.model.nic_message_s;
  return b.finish(CollectiveAlgo::kDirect, cost::Protocol::kSimple, b.gpu_latency(a, z) + extra);
}

FlowSet direct(const Collective& c, RouteTable& r, cost::Protocol p) {
  if (c.kind == CollKind::kSendRecv) return p == cost::Protocol::kSimple ? send_recv(c, r) : none();
  const cost::CollectiveParams P = params_of(c, r.cluster());
  const double f = P.proto_bw(plan::OpKind::kAllToAll, p);
  if (!(f > 0)) return none();
  const int n = static_cast<int>(c.gpus.size());
  if (!c.a2a_bytes.empty() && c.a2a_bytes.size() != static_cast<size_t>(n) * n)
    throw ConfigError("all-to-all bytes matrix has " + std::to_string(c.a2a_bytes.size()) + " entries, expected " +
                      std::to_string(n * n));
  // As cost::all_to_all_time: LL only up to its largest message per peer, its bandwidth per peer (the fewest domain
  // peers of a member; the same for every member of a uniform group).
  double max_peer = c.a2a_bytes.empty() ? c.bytes / n : 0.0;
  int min_peers = n;
  for (int i = 0; i < n; ++i) {
    int peers = 0;
    for (int j = 0; j < n; ++j) {
      if (j == i) continue;
      if (!c.a2a_bytes.empty()) max_peer = std::max(max_peer, c.a2a_bytes[static_cast<size_t>(i) * n + j]);
      if (same_domain(r.cluster(), c.gpus[static_cast<size_t>(i)], c.gpus[static_cast<size_t>(j)])) ++peers;
    }
    if (peers > 0) min_peers = std::min(min_peers, peers);
  }
  if (!cost::a2a_protocol_applies(P, p, max_peer)) return none();
  Builder b(r, cost::a2a_fraction(P, p, n, min_peers), P.nic_eff() * f);
  // Member latencies as cost::a2a_member_latency_s: the group's domains and peers, from a GroupLinks of the same
  // group (only its per-member latency and peer fields are used).
  cost::GroupLinks g;
  g.n = n;
  g.gpus = c.gpus;
  for (int gpu : c.gpus) {
    const int d = r.cluster().domain_of(gpu);
    g.domain.push_back(d >= 0 ? d : -1 - gpu);
  }
  const size_t un = static_cast<size_t>(n);
  g.a2a_intra_latency_s.assign(un, 0.0);
  g.a2a_inter_latency_s.assign(un, 0.0);
  g.a2a_intra_peers.assign(un, 0);
  g.a2a_inter_peers.assign(un, 0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const double bytes = c.a2a_bytes.empty() ? c.bytes / n : c.a2a_bytes[static_cast<size_t>(i) * n + j];
      b.gpu_flow(c.gpus[i], c.gpus[j], bytes);
      const bool intra = g.same_domain(i, j);
      auto& lat = intra ? g.a2a_intra_latency_s[static_cast<size_t>(i)] : g.a2a_inter_latency_s[static_cast<size_t>(i)];
      lat = std::max(lat, b.gpu_latency(c.gpus[i], c.gpus[j]));
      ++(intra ? g.a2a_intra_peers[static_cast<size_t>(i)] : g.a2a_inter_peers[static_cast<size_t>(i)]);
    }
  double worst = 0;
  for (int i = 0; i < n; ++i) worst = std::max(worst, cost::a2a_member_latency_s(g, P, p, i));
  const auto& a = P.model.all_to_all;
  const double base = p == cost::Protocol::kLL ? a.ll_base_s : p == cost::Protocol::kNarrow ? a.narrow_base_s : a.simple_base_s;
  return b.finish(CollectiveAlgo::kDirect, p, worst + base + P.base_latency_s);
}

// The GroupLinks fields cost::custom_allreduce_choice reads.
cost::GroupLinks custom_group(const Collective& c, RouteTable& r) {
  cost::GroupLinks g;
  g.n = static_cast<int>(c.gpus.size());
  const int d0 = c.gpus.empty() ? -1 : r.cluster().domain_of(c.gpus.front());
  g.one_domain = d0 >= 0;
  for (int gpu : c.gpus) g.one_domain = g.one_domain && r.cluster().domain_of(gpu) == d0;
  g.nvls = g.one_domain && r.cluster().scaleup_reduces && g.n > 1 && !common_switches(c, r).empty();
  return g;
}

// The engine's own all-reduce (symm: its symmetric-memory path; algo kNvls there is multimem).
FlowSet custom(const Collective& c, RouteTable& r, CollectiveAlgo algo, bool symm) {
  const cost::CollectiveParams P = params_of(c, r.cluster());
  const auto& cp = P.model.custom_all_reduce;
  const int n = static_cast<int>(c.gpus.size());
  const double S = c.bytes;
  const double copy = symm && P.copy_Bps > 0 ? 4.0 * S / P.copy_Bps : 0.0;
  const double e2 = cp.two_shot_efficiency > 0 ? cp.two_shot_efficiency : P.efficiency;
  double e1 = cp.one_shot_efficiency > 0 ? cp.one_shot_efficiency : P.efficiency;
  if (cp.one_shot_peer_efficiency > 0) e1 = std::min(e1, (n - 1) * cp.one_shot_peer_efficiency);
  double alpha = 0;  // one round trip over the links: the fixed cost when unfitted (as collective_cost)
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (i != j) alpha = std::max(alpha, r.gpu_route(c.gpus[i], c.gpus[j]).latency_s);
  auto fixed = [&](double base, double peer) {
    const double f = base + (n - 1) * peer;
    return f > 0 ? f : 2.0 * alpha;
  };
  if (symm && algo == CollectiveAlgo::kNvls) {
    const double es = cp.symm_efficiency > 0 ? cp.symm_efficiency : P.nvls_eff();
    Builder b(r, es, es);
    add_multimem(b, c, r, es);
    return b.finish(CollectiveAlgo::kNvls, cost::Protocol::kAuto, fixed(cp.symm_base_s, 0) + copy);
  }
  const bool one = !symm && algo == CollectiveAlgo::kOneShot;
  const double eff = one ? e1 : e2;
  Builder b(r, eff, eff);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (i != j) b.gpu_flow(c.gpus[j], c.gpus[i], one ? S : 2.0 * S / n);  // i reads S (one-shot) or 2 S/n from j
  const double f = symm ? fixed(cp.symm_base_s, 0)
                        : one ? fixed(cp.one_shot_base_s, cp.one_shot_peer_s) : fixed(cp.two_shot_base_s, cp.two_shot_peer_s);
  return b.finish(one ? CollectiveAlgo::kOneShot : CollectiveAlgo::kTwoShot, cost::Protocol::kAuto, f + copy);
}

const CollectiveAlgo kOrder[] = {CollectiveAlgo::kRing, CollectiveAlgo::kNvls, CollectiveAlgo::kHierarchical,
                                 CollectiveAlgo::kTree, CollectiveAlgo::kDirect};

}  // namespace

cost::CollectiveParams collective_params(const Collective& c, const spec::Cluster& cl) {
  cost::CollectiveParams P;
  if (!c.gpus.empty() && c.gpus.front() >= 0 && c.gpus.front() < cl.gpu_count()) {
    const auto& v = cl.graph[cl.gpus[static_cast<size_t>(c.gpus.front())]];
    auto it = cl.gpu_types.find(v.gpu_type);
    if (it != cl.gpu_types.end()) P = cost::CollectiveParams::from(it->second);
  }
  P.efficiency = c.efficiency;
  if (c.nvls_efficiency >= 0) P.nvls_efficiency = c.nvls_efficiency;
  if (c.base_latency_s >= 0) P.base_latency_s = c.base_latency_s;
  if (c.nvls_latency_s >= 0) P.nvls_latency_s = c.nvls_latency_s;
  P.custom_allreduce_max_bytes = c.custom_allreduce_max_bytes;
  P.custom_allreduce_max_gpus = c.custom_allreduce_max_gpus;
  return P;
}

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
    case CollectiveAlgo::kOneShot:
      return "one_shot";
    case CollectiveAlgo::kTwoShot:
      return "two_shot";
  }
  return "?";
}

plan::CollectiveAlgo parse_algo(const std::string& s) {
  for (CollectiveAlgo a : {CollectiveAlgo::kAuto, CollectiveAlgo::kRing, CollectiveAlgo::kTree, CollectiveAlgo::kNvls,
                           CollectiveAlgo::kHierarchical, CollectiveAlgo::kDirect, CollectiveAlgo::kOneShot,
                           CollectiveAlgo::kTwoShot})
    if (algo_name(a) == s) return a;
  throw ConfigError("", 0, 0, "algo", "one of auto, ring, tree, nvls, hierarchical, direct, one_shot, two_shot", s);
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
             cost::nvls_reduces(c.dtype) && !common_switches(c, r).empty();
    case CollectiveAlgo::kHierarchical:
      return c.kind == CollKind::kAllReduce && multi && !s.one_domain && s.g > 1;
    case CollectiveAlgo::kTree:
      return c.kind == CollKind::kAllReduce && multi && !s.one_domain && s.g > 0;
    case CollectiveAlgo::kOneShot:
    case CollectiveAlgo::kTwoShot:
      return c.kind == CollKind::kAllReduce && n >= 2 && n <= spec::CustomAllReduceParams::kMaxGpus &&
             custom_group(c, r).one_domain;
    default:
      return false;
  }
}

FlowSet decompose(const Collective& c, CollectiveAlgo algo, cost::Protocol proto, RouteTable& r) {
  if (algo == CollectiveAlgo::kOneShot || algo == CollectiveAlgo::kTwoShot) {
    if (proto != cost::Protocol::kAuto) return none();
    if (c.gpus.size() < 2 || c.bytes <= 0) {
      FlowSet fs;
      fs.algo = algo;
      fs.proto = cost::Protocol::kAuto;
      return fs;
    }
    return custom(c, r, algo, false);
  }
  if (proto == cost::Protocol::kAuto) {
    FlowSet best = none();
    double best_t = 0;
    for (cost::Protocol p : kProtocols) {
      FlowSet fs = decompose(c, algo, p, r);
      if (fs.algo == CollectiveAlgo::kAuto) continue;
      const double t = estimate_s(fs, r);
      if (best.algo == CollectiveAlgo::kAuto || t < best_t) {
        best = std::move(fs);
        best_t = t;
      }
    }
    return best;
  }
  if (c.gpus.size() < 2 || c.bytes <= 0) {
    if (c.kind != CollKind::kAllToAll || c.a2a_bytes.empty()) {
      if (proto != cost::Protocol::kSimple) return none();
      FlowSet fs;
      fs.algo = algo;
      return fs;
    }
  }
  switch (algo) {
    case CollectiveAlgo::kRing:
      return ring(c, shape_of(c, r.cluster()), r, proto);
    case CollectiveAlgo::kNvls:
      return nvls(c, r, proto);
    case CollectiveAlgo::kHierarchical:
    case CollectiveAlgo::kTree:
      return multi_node(c, shape_of(c, r.cluster()), r, proto, algo);
    case CollectiveAlgo::kDirect:
      return direct(c, r, proto);
    default:
      break;
  }
  return none();
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
  return decompose(c, algo, cost::Protocol::kAuto, r);
}

FlowSet plan_collective(const Collective& c, RouteTable& r) {
  if (c.algo != CollectiveAlgo::kAuto) return decompose(c, c.algo, r);
  if (c.kind == CollKind::kAllReduce && c.custom_allreduce_max_bytes > 0 && c.gpus.size() >= 2 && c.bytes > 0) {
    bool symm = false;
    const CollectiveAlgo a =
        cost::custom_allreduce_choice(custom_group(c, r), params_of(c, r.cluster()), c.bytes, &symm);
    if (a != CollectiveAlgo::kAuto) return custom(c, r, a, symm);
  }
  FlowSet best;
  double best_t = 0;
  bool have = false;
  for (CollectiveAlgo a : kOrder) {
    if (!applicable(c, a, r)) continue;
    FlowSet fs = decompose(c, a, cost::Protocol::kAuto, r);
    if (fs.algo == CollectiveAlgo::kAuto) continue;
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

FlowSet p2p_flows(int src, int dst, double bytes, RouteTable& r) {
  Collective c;
  c.kind = CollKind::kSendRecv;
  c.gpus = {src, dst};
  c.bytes = bytes;
  const auto& cl = r.cluster();
  if (src >= 0 && src < cl.gpu_count()) {
    auto it = cl.gpu_types.find(cl.graph[cl.gpus[static_cast<size_t>(src)]].gpu_type);
    if (it != cl.gpu_types.end()) c.efficiency = it->second.eff.comm_efficiency;
  }
  if (src == dst || bytes <= 0) {
    FlowSet fs;
    fs.algo = CollectiveAlgo::kDirect;
    return fs;
  }
  return send_recv(c, r);
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

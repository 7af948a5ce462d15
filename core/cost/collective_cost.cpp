// Collective cost per algorithm and protocol on the cluster graph (collective_cost.hpp, docs/network.md).
#include "core/cost/collective_cost.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>

#include "core/spec/gpu.hpp"

#include "core/common/error.hpp"

namespace parasol::cost {

using plan::CollectiveAlgo;
using plan::OpKind;

const PathLinks& LinkCache::path(int gpu_a, int gpu_b) {
  auto it = from_.find(gpu_a);
  if (it == from_.end()) {
    // BFS by hops from gpu_a, not transiting other GPUs; among shortest paths keep the widest (then lowest latency).
    const spec::Graph& g = cluster_->graph;
    const size_t nv = boost::num_vertices(g);
    std::vector<int> dist(nv, -1);
    std::vector<double> bw(nv, 0), lat(nv, 0);
    const spec::VertexId src = cluster_->gpus.at(static_cast<size_t>(gpu_a));
    std::deque<spec::VertexId> queue{src};
    dist[src] = 0;
    bw[src] = std::numeric_limits<double>::infinity();
    while (!queue.empty()) {
      const spec::VertexId u = queue.front();
      queue.pop_front();
      if (u != src && g[u].kind == spec::VertexKind::kGpu) continue;
      for (auto [e, end] = boost::out_edges(u, g); e != end; ++e) {
        const spec::VertexId v = boost::target(*e, g);
        const spec::Link& l = g[*e];
        const double b = std::min(bw[u], l.bw_Bps), t = lat[u] + l.latency_s;
        if (dist[v] < 0) {
          dist[v] = dist[u] + 1, bw[v] = b, lat[v] = t;
          queue.push_back(v);
        } else if (dist[v] == dist[u] + 1 && (b > bw[v] || (b == bw[v] && t < lat[v]))) {
          bw[v] = b, lat[v] = t;
        }
      }
    }
    std::vector<PathLinks> out(cluster_->gpus.size());
    const int da = cluster_->domain_of(gpu_a);
    for (size_t i = 0; i < out.size(); ++i) {
      const spec::VertexId v = cluster_->gpus[i];
      if (static_cast<int>(i) == gpu_a) {
        out[i] = {std::numeric_limits<double>::infinity(), 0.0, 0, true};
        continue;
      }
      if (dist[v] < 0)
        throw Error("cluster '" + cluster_->name + "': no path between GPU " + std::to_string(gpu_a) + " and GPU " +
                    std::to_string(i));
      out[i] = {bw[v], lat[v], dist[v], da >= 0 && cluster_->domain_of(static_cast<int>(i)) == da};
    }
    it = from_.emplace(gpu_a, std::move(out)).first;
  }
  return it->second.at(static_cast<size_t>(gpu_b));
}

GroupLinks group_links(LinkCache& links, const std::vector<int>& gpus) {
  const spec::Cluster& c = links.cluster();
  GroupLinks gl;
  gl.n = static_cast<int>(gpus.size());
  gl.gpus = gpus;
  const double inf = std::numeric_limits<double>::infinity();
  gl.ring_bw_Bps = gl.intra_bw_Bps = gl.inter_bw_Bps = inf;
  std::map<int, std::vector<int>> by_domain;  // domain -> members in group order
  for (int i = 0; i < gl.n; ++i) {
    int d = c.domain_of(gpus[static_cast<size_t>(i)]);
    d = d >= 0 ? d : -1 - gpus[static_cast<size_t>(i)];  // no scale-up domain: alone
    by_domain[d].push_back(gpus[static_cast<size_t>(i)]);
    gl.domain.push_back(d);
  }
  gl.domains = static_cast<int>(by_domain.size());
  for (const auto& [d, members] : by_domain) gl.local_n = std::max(gl.local_n, static_cast<int>(members.size()));
  gl.uniform = true;
  for (const auto& [d, members] : by_domain) gl.uniform = gl.uniform && static_cast<int>(members.size()) == gl.local_n;
  gl.one_domain = gl.domains == 1 && c.domain_of(gpus.front()) >= 0;
  gl.nvls = gl.one_domain && c.scaleup_reduces && gl.n > 1;
  if (gl.n <= 1) return gl;
  gl.ring_intra_bw_Bps = gl.ring_inter_bw_Bps = inf;
  for (int i = 0; i < gl.n; ++i) {
    const int j = (i + 1) % gl.n;
    const auto& p = links.path(gpus[static_cast<size_t>(i)], gpus[static_cast<size_t>(j)]);
    gl.ring_bw_Bps = std::min(gl.ring_bw_Bps, p.bw_Bps);
    gl.ring_latency_s = std::max(gl.ring_latency_s, p.latency_s);
    if (gl.same_domain(i, j)) {
      gl.ring_intra_bw_Bps = std::min(gl.ring_intra_bw_Bps, p.bw_Bps);
      gl.ring_intra_latency_s = std::max(gl.ring_intra_latency_s, p.latency_s);
    } else {
      gl.ring_inter_bw_Bps = std::min(gl.ring_inter_bw_Bps, p.bw_Bps);
      gl.ring_inter_latency_s = std::max(gl.ring_inter_latency_s, p.latency_s);
    }
  }
  for (const auto& [d, members] : by_domain) {
    const size_t k = members.size();
    for (size_t i = 0; k > 1 && i < k; ++i) {
      const auto& p = links.path(members[i], members[(i + 1) % k]);
      gl.intra_bw_Bps = std::min(gl.intra_bw_Bps, p.bw_Bps);
      gl.intra_latency_s = std::max(gl.intra_latency_s, p.latency_s);
    }
  }
  if (gl.domains > 1) {  // rails: member i of each domain talks to member i of the next domain
    std::vector<const std::vector<int>*> doms;
    for (const auto& [d, members] : by_domain) doms.push_back(&members);
    for (size_t x = 0; x < doms.size(); ++x) {
      const auto& a = *doms[x];
      const auto& b = *doms[(x + 1) % doms.size()];
      for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
        const auto& p = links.path(a[i], b[i]);
        gl.inter_bw_Bps = std::min(gl.inter_bw_Bps, p.bw_Bps);
        gl.inter_latency_s = std::max(gl.inter_latency_s, p.latency_s);
      }
    }
  }
  gl.a2a_intra_bw_Bps.assign(static_cast<size_t>(gl.n), inf);
  gl.a2a_inter_bw_Bps.assign(static_cast<size_t>(gl.n), inf);
  const size_t un = static_cast<size_t>(gl.n);
  gl.a2a_latency_s.assign(un, 0.0);
  gl.a2a_intra_latency_s.assign(un, 0.0);
  gl.a2a_inter_latency_s.assign(un, 0.0);
  gl.a2a_intra_peers.assign(un, 0);
  gl.a2a_inter_peers.assign(un, 0);
  for (size_t i = 0; i < un; ++i)
    for (size_t j = 0; j < un; ++j) {
      if (i == j) continue;
      const auto& p = links.path(gpus[i], gpus[j]);
      // The peer's kind by scale-up domain (as the ring's), so that members without a domain count as remote.
      const bool intra = gl.domain[i] == gl.domain[j];
      auto& bw = intra ? gl.a2a_intra_bw_Bps[i] : gl.a2a_inter_bw_Bps[i];
      bw = std::min(bw, p.bw_Bps);
      gl.a2a_latency_s[i] = std::max(gl.a2a_latency_s[i], p.latency_s);
      auto& lat = intra ? gl.a2a_intra_latency_s[i] : gl.a2a_inter_latency_s[i];
      lat = std::max(lat, p.latency_s);
      ++(intra ? gl.a2a_intra_peers[i] : gl.a2a_inter_peers[i]);
    }
  return gl;
}

std::string to_string(Protocol p) {
  switch (p) {
    case Protocol::kAuto: return "auto";
    case Protocol::kLL: return "ll";
    case Protocol::kLL128: return "ll128";
    case Protocol::kNarrow: return "narrow";
    case Protocol::kSimple: return "simple";
  }
  return "?";
}

CollectiveParams CollectiveParams::from(const spec::Efficiency& e) {
  CollectiveParams p;
  p.efficiency = e.comm_efficiency;
  p.nvls_efficiency = e.nvls_efficiency;
  p.base_latency_s = e.collective_latency_s;
  p.nvls_latency_s = e.nvls_latency_s;
  return p;
}

CollectiveParams CollectiveParams::from(const spec::Gpu& g) {
  CollectiveParams p = from(g.eff);
  p.model = g.collective;
  p.copy_Bps = g.hbm_bw_Bps * g.gemm.memory;  // a streaming copy: the HBM rate the GEMM fit measured
  return p;
}

double CollectiveParams::link_eff(OpKind kind, int n) const {
  double e = efficiency, r = model.ring_penalty;
  auto own = [&](const spec::CollectiveKindParams& k) {
    if (k.efficiency > 0) e = k.efficiency;
    if (k.ring_penalty >= 0) r = k.ring_penalty;
  };
  switch (kind) {
    case OpKind::kAllGather: own(model.all_gather); break;
    case OpKind::kReduceScatter: own(model.reduce_scatter); break;
    case OpKind::kAllToAll:
      if (model.all_to_all.efficiency > 0) e = model.all_to_all.efficiency;
      r = model.all_to_all.ring_penalty;
      break;
    case OpKind::kAllReduce: break;
    default: r = 0; break;
  }
  const double nn = std::max(1, n);
  // Short rings lose a share of the link (fewer, larger steps; more synchronisation per byte); never below 5%.
  return e * std::max(0.05, 1.0 - r / (nn * nn));
}

double CollectiveParams::proto_bw(OpKind kind, Protocol p) const {
  const spec::CollectiveKindParams* k = kind == OpKind::kAllGather       ? &model.all_gather
                                        : kind == OpKind::kReduceScatter ? &model.reduce_scatter
                                                                         : nullptr;
  switch (p) {
    case Protocol::kSimple: return model.simple.bandwidth;
    case Protocol::kLL:
      if (kind == OpKind::kAllToAll) return model.all_to_all.ll_bandwidth;
      return k && k->ll_bandwidth > 0 ? k->ll_bandwidth : model.ll.bandwidth;
    case Protocol::kLL128:
      if (kind == OpKind::kAllToAll) return 0.0;
      return k && k->ll128_bandwidth > 0 ? k->ll128_bandwidth : model.ll128.bandwidth;
    case Protocol::kNarrow:
      if (kind == OpKind::kAllToAll) return model.all_to_all.narrow_bandwidth;
      return k && k->narrow_bandwidth > 0 ? k->narrow_bandwidth : model.narrow.bandwidth;
    case Protocol::kAuto: break;
  }
  return 0.0;
}

const spec::ProtocolParams& CollectiveParams::proto(Protocol p) const {
  return p == Protocol::kLL ? model.ll : p == Protocol::kLL128 ? model.ll128 : p == Protocol::kNarrow ? model.narrow : model.simple;
}

double CollectiveParams::step_s(Protocol p, double link_s, bool nic) const {
  if (nic) return link_s + model.nic_message_s;
  const double hop = proto(p).hop_s;
  return hop > 0 ? hop : link_s;  // a fitted hop is the whole step over NVLink (link and protocol handshake)
}

bool nvls_reduces(DType dt) { return dt == DType::kBf16 || dt == DType::kFp16 || dt == DType::kFp32; }

double bytes_sent_per_rank(OpKind kind, CollectiveAlgo algo, int n, double S) {
  if (n <= 1) return 0.0;
  const double f = static_cast<double>(n - 1) / n;
  switch (kind) {
    case OpKind::kAllReduce:
      if (algo == CollectiveAlgo::kNvls) return (n + 1.0) / n * S;
      if (algo == CollectiveAlgo::kTree) return 2.0 * S;
      if (algo == CollectiveAlgo::kOneShot) return (n - 1.0) * S;
      return 2.0 * f * S;
    case OpKind::kAllGather:
    case OpKind::kReduceScatter:
      return f * S;
    case OpKind::kAllToAll:
      return f * S;
    case OpKind::kSend:
      return S;
    default:
      return 0.0;
  }
}

int tree_max_edges(int domains) {
  // Tree t is a binary heap over the domains shifted by t (the node at heap position p is domain (p + t) mod N); a
  // node sends to its parent and to each child (reduce up, broadcast down).
  int worst = 0;
  for (int i = 0; i < domains; ++i) {
    int edges = 0;
    for (int t = 0; t < 2; ++t) {
      const int pos = ((i - t) % domains + domains) % domains;
      edges += (pos > 0 ? 1 : 0) + (2 * pos + 1 < domains ? 1 : 0) + (2 * pos + 2 < domains ? 1 : 0);
    }
    worst = std::max(worst, edges);
  }
  return worst;
}

namespace {

constexpr Protocol kProtocols[] = {Protocol::kLL, Protocol::kLL128, Protocol::kNarrow, Protocol::kSimple};
constexpr CollectiveAlgo kAlgos[] = {CollectiveAlgo::kRing, CollectiveAlgo::kNvls, CollectiveAlgo::kHierarchical,
                                     CollectiveAlgo::kTree};

double ring_time(OpKind kind, const GroupLinks& g, double S, const CollectiveParams& P, Protocol p) {
  const double f = P.proto_bw(kind, p);
  if (!(f > 0)) return -1;
  const int n = g.n;
  const double steps = kind == OpKind::kAllReduce ? 2.0 * (n - 1) : (n - 1);
  const double per_edge = steps / n * S;
  const double e_nv = P.link_eff(kind, n) * f, e_nic = P.nic_eff() * f;
  const double fixed = P.proto(p).base_s + P.base_latency_s;
  if (g.domains > 1 && g.uniform && g.local_n > 1) {  // rail-aligned channels, one per local GPU
    const double nl = g.local_n;
    const double t_bw = per_edge * std::max((nl - 1) / nl / (g.intra_bw_Bps * e_nv), 1.0 / nl / (g.inter_bw_Bps * e_nic));
    return t_bw + steps * std::max(P.step_s(p, g.intra_latency_s, false), P.step_s(p, g.inter_latency_s, true)) + fixed;
  }
  if (std::isfinite(g.ring_inter_bw_Bps)) {  // a ring that crosses NICs edge by edge
    const bool intra = std::isfinite(g.ring_intra_bw_Bps);
    const double bw = std::min(intra ? g.ring_intra_bw_Bps * e_nv : std::numeric_limits<double>::infinity(),
                               g.ring_inter_bw_Bps * e_nic);
    const double step = std::max(intra ? P.step_s(p, g.ring_intra_latency_s, false) : 0.0,
                                 P.step_s(p, g.ring_inter_latency_s, true));
    return per_edge / bw + steps * step + fixed;
  }
  return per_edge / (g.ring_bw_Bps * e_nv) + steps * P.step_s(p, g.ring_latency_s, false) + fixed;
}

double nvls_time(const GroupLinks& g, double S, const CollectiveParams& P) {
  const double n = g.n;
  return (n + 1.0) / n * S / (g.intra_bw_Bps * P.nvls_eff()) + 2.0 * P.step_s(Protocol::kSimple, g.intra_latency_s, false) +
         P.model.simple.base_s + P.nvls_latency_s + P.base_latency_s;
}

double multi_domain_time(CollectiveAlgo algo, const GroupLinks& g, double S, const CollectiveParams& P, Protocol p) {
  const double f = P.proto_bw(OpKind::kAllReduce, p);
  if (!(f > 0)) return -1;
  const double nl = g.local_n, nd = g.domains;
  const double bi = g.intra_bw_Bps * P.link_eff(OpKind::kAllReduce, g.local_n) * f, bo = g.inter_bw_Bps * P.nic_eff() * f;
  const double intra_bw = nl > 1 ? 2.0 * (nl - 1) / nl * S / bi : 0.0;
  const double intra_lat = 2.0 * (nl - 1) * P.step_s(p, g.intra_latency_s, false);
  const double inter_step = P.step_s(p, g.inter_latency_s, true);
  const double fixed = P.proto(p).base_s + P.base_latency_s;
  if (algo == CollectiveAlgo::kHierarchical)
    return std::max(intra_bw, 2.0 * (nd - 1) / nd * (S / nl) / bo) + intra_lat + 2.0 * (nd - 1) * inter_step + fixed;
  return std::max(intra_bw, tree_max_edges(g.domains) * S / (2.0 * nl) / bo) + intra_lat +
         2.0 * std::floor(std::log2(nd)) * inter_step + fixed;
}

bool algo_applies(const plan::Op& op, const GroupLinks& g, CollectiveAlgo a) {
  switch (a) {
    case CollectiveAlgo::kRing: return true;
    case CollectiveAlgo::kNvls: return op.kind == OpKind::kAllReduce && g.nvls && nvls_reduces(op.dtype);
    case CollectiveAlgo::kHierarchical:
      return op.kind == OpKind::kAllReduce && g.domains > 1 && g.uniform && g.local_n > 1;
    case CollectiveAlgo::kTree: return op.kind == OpKind::kAllReduce && g.domains > 1 && g.uniform;
    case CollectiveAlgo::kOneShot:
    case CollectiveAlgo::kTwoShot:
      return op.kind == OpKind::kAllReduce && g.one_domain && g.n >= 2 &&
             g.n <= spec::CustomAllReduceParams::kMaxGpus;
    default: return false;
  }
}

// The engine's own kernels (symm: its symmetric-memory path, which stages the buffer through HBM).
double custom_time(CollectiveAlgo a, bool symm, const GroupLinks& g, double S, const CollectiveParams& P) {
  const auto& c = P.model.custom_all_reduce;
  const double n = g.n, B = g.intra_bw_Bps;
  const double copy = symm && P.copy_Bps > 0 ? 4.0 * S / P.copy_Bps : 0.0;  // copy in and out: read + write, twice
  auto fixed = [&](double base, double peer) {
    const double f = base + (n - 1) * peer;
    return f > 0 ? f : 2.0 * g.intra_latency_s;  // unfitted: one round trip over the links
  };
  const double e2 = c.two_shot_efficiency > 0 ? c.two_shot_efficiency : P.efficiency;
  if (symm) {
    if (a == CollectiveAlgo::kNvls) {
      const double es = c.symm_efficiency > 0 ? c.symm_efficiency : P.nvls_eff();
      return fixed(c.symm_base_s, 0) + (n + 1) / n * S / (B * es) + copy;
    }
    return fixed(c.symm_base_s, 0) + 2 * (n - 1) / n * S / (B * e2) + copy;
  }
  if (a == CollectiveAlgo::kOneShot) {
    double e1 = c.one_shot_efficiency > 0 ? c.one_shot_efficiency : P.efficiency;
    if (c.one_shot_peer_efficiency > 0) e1 = std::min(e1, (n - 1) * c.one_shot_peer_efficiency);
    return fixed(c.one_shot_base_s, c.one_shot_peer_s) + (n - 1) * S / (B * e1);
  }
  return fixed(c.two_shot_base_s, c.two_shot_peer_s) + 2 * (n - 1) / n * S / (B * e2);
}

}  // namespace

CollectiveAlgo custom_allreduce_choice(const GroupLinks& g, const CollectiveParams& P, double S, bool* symm) {
  if (symm) *symm = false;
  const int n = g.n;
  if (!(P.custom_allreduce_max_bytes > 0) || !g.one_domain || n < 2 || n > spec::CustomAllReduceParams::kMaxGpus ||
      n > P.custom_allreduce_max_gpus)
    return CollectiveAlgo::kAuto;
  const auto& c = P.model.custom_all_reduce;
  const size_t k = static_cast<size_t>(n);
  const double limit = std::min(P.custom_allreduce_max_bytes, c.max_bytes[k]);
  if (c.max_bytes[k] > 0 && S < limit) return S < c.one_shot_bytes[k] ? CollectiveAlgo::kOneShot : CollectiveAlgo::kTwoShot;
  if (c.symm_max_bytes[k] > 0 && S <= c.symm_max_bytes[k]) {
    if (symm) *symm = true;
    return c.multimem[k] && g.nvls ? CollectiveAlgo::kNvls : CollectiveAlgo::kTwoShot;
  }
  return CollectiveAlgo::kAuto;
}

double collective_time_of(const plan::Op& op, const GroupLinks& g, const CollectiveParams& P, CollectiveAlgo algo,
                          Protocol proto) {
  if (g.n <= 1) return 0.0;
  if (!algo_applies(op, g, algo)) return -1;
  const double S = op.comm_bytes;
  if (algo == CollectiveAlgo::kOneShot || algo == CollectiveAlgo::kTwoShot) return custom_time(algo, false, g, S, P);
  if (algo == CollectiveAlgo::kNvls) return proto == Protocol::kAuto || proto == Protocol::kSimple ? nvls_time(g, S, P) : -1;
  double best = -1;
  for (Protocol p : kProtocols) {
    if (proto != Protocol::kAuto && p != proto) continue;
    const double t = algo == CollectiveAlgo::kRing ? ring_time(op.kind, g, S, P, p) : multi_domain_time(algo, g, S, P, p);
    if (t >= 0 && (best < 0 || t < best)) best = t;
  }
  return best;
}

CollectiveTime collective_time(const plan::Op& op, const GroupLinks& g, double eff, CollectiveAlgo algo) {
  CollectiveParams p;
  p.efficiency = eff;
  return collective_time(op, g, p, algo);
}

CollectiveTime collective_time(const plan::Op& op, const GroupLinks& g, const CollectiveParams& P, CollectiveAlgo algo) {
  CollectiveTime out;
  if (g.n <= 1) return out;
  if (op.kind == OpKind::kAllToAll) {
    out.algo = CollectiveAlgo::kDirect;
    std::vector<const plan::Op*> members(static_cast<size_t>(g.n), &op);  // symmetric: every member sends alike
    out.time_s = all_to_all_time(members, g, P);
    return out;
  }
  const double S = op.comm_bytes;
  if (op.kind == OpKind::kAllReduce && algo == CollectiveAlgo::kAuto) {
    bool symm = false;
    const CollectiveAlgo c = custom_allreduce_choice(g, P, S, &symm);
    if (c != CollectiveAlgo::kAuto) {
      out.algo = c;
      out.proto = Protocol::kAuto;
      out.time_s = custom_time(c, symm, g, S, P);
      return out;
    }
  }
  if ((algo == CollectiveAlgo::kOneShot || algo == CollectiveAlgo::kTwoShot) && algo_applies(op, g, algo)) {
    out.algo = algo;
    out.proto = Protocol::kAuto;
    out.time_s = custom_time(algo, false, g, S, P);
    return out;
  }
  // NCCL's tuner: the fastest (algorithm, protocol); a forced algorithm that cannot run falls back to the ring.
  bool have = false;
  auto consider = [&](CollectiveAlgo a) {
    if (!algo_applies(op, g, a)) return;
    for (Protocol p : kProtocols) {
      double t = -1;
      if (a == CollectiveAlgo::kNvls) {
        if (p == Protocol::kSimple) t = nvls_time(g, S, P);
      } else if (a == CollectiveAlgo::kRing) {
        t = ring_time(op.kind, g, S, P, p);
      } else {
        t = multi_domain_time(a, g, S, P, p);
      }
      if (t < 0) continue;
      if (!have || t < out.time_s) out = {t, a, p};
      have = true;
    }
  };
  if (algo != CollectiveAlgo::kAuto) consider(algo);
  if (!have)
    for (CollectiveAlgo a : kAlgos)
      if (algo == CollectiveAlgo::kAuto || a == CollectiveAlgo::kRing) consider(a);
  return out;
}

double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& g, double eff) {
  CollectiveParams p;
  p.efficiency = eff;
  return all_to_all_time(members, g, p);
}

double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& g, const CollectiveParams& P) {
  const int n = g.n;
  if (n <= 1) return 0.0;
  const auto& a = P.model.all_to_all;
  const double nic_eff = P.nic_eff();
  // Per member: the larger of its bytes out and in, inside its domain and across (the same for every protocol); and
  // the largest message to one peer (LL's limit).
  thread_local std::vector<double> intra, inter;
  intra.assign(static_cast<size_t>(n), 0.0);
  inter.assign(static_cast<size_t>(n), 0.0);
  double max_peer = 0;
  for (int i = 0; i < n; ++i) {
    const size_t ui = static_cast<size_t>(i);
    double intra_out = 0, inter_out = 0, intra_in = 0, inter_in = 0;
    const auto& out_v = members[ui]->a2a_send_bytes;
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const auto& in_v = members[static_cast<size_t>(j)]->a2a_send_bytes;
      const double out = static_cast<size_t>(j) < out_v.size() ? out_v[static_cast<size_t>(j)] : 0.0;
      const double in = ui < in_v.size() ? in_v[ui] : 0.0;
      max_peer = std::max(max_peer, std::max(out, in));
      if (g.same_domain(i, j)) {
        intra_out += out, intra_in += in;
      } else {
        inter_out += out, inter_in += in;
      }
    }
    intra[ui] = intra_out + intra_in > 0 ? std::max(intra_out, intra_in) : 0.0;
    inter[ui] = inter_out + inter_in > 0 ? std::max(inter_out, inter_in) : 0.0;
  }
  double best = -1;
  for (Protocol p : {Protocol::kLL, Protocol::kNarrow, Protocol::kSimple}) {
    const double f = P.proto_bw(OpKind::kAllToAll, p);
    if (!(f > 0) || !a2a_protocol_applies(P, p, max_peer)) continue;
    const double base = p == Protocol::kLL ? a.ll_base_s : p == Protocol::kNarrow ? a.narrow_base_s : a.simple_base_s;
    double worst = 0;
    for (int i = 0; i < n; ++i) {
      const size_t ui = static_cast<size_t>(i);
      double t = 0;
      if (intra[ui] > 0)
        t = std::max(t, intra[ui] / (g.a2a_intra_bw_Bps[ui] * a2a_fraction(P, p, n, g.a2a_intra_peers[ui])));
      if (inter[ui] > 0) t = std::max(t, inter[ui] / (g.a2a_inter_bw_Bps[ui] * nic_eff * f));
      worst = std::max(worst, t + a2a_member_latency_s(g, P, p, i));
    }
    const double total = worst + base + P.base_latency_s;
    if (best < 0 || total < best) best = total;
  }
  return best;
}

bool a2a_protocol_applies(const CollectiveParams& P, Protocol p, double max_peer_bytes) {
  const double limit = P.model.all_to_all.ll_max_peer_bytes;
  return p != Protocol::kLL || !(limit > 0) || max_peer_bytes <= limit;
}

double a2a_fraction(const CollectiveParams& P, Protocol p, int n, int peers) {
  const double e = P.link_eff(OpKind::kAllToAll, n), f = P.proto_bw(OpKind::kAllToAll, p);
  if (p != Protocol::kLL) return e * f;
  // LL: each peer's messages on their own channel at f of the link, the peers together at most the link's Simple rate.
  return std::min(e, f * std::max(peers, 1));
}

double a2a_member_latency_s(const GroupLinks& g, const CollectiveParams& P, Protocol p, int i) {
  const auto& a = P.model.all_to_all;
  const size_t ui = static_cast<size_t>(i);
  const double base = p == Protocol::kLL ? a.ll_base_s : p == Protocol::kNarrow ? a.narrow_base_s : a.simple_base_s;
  const double peer = p == Protocol::kLL ? a.ll_peer_s : p == Protocol::kNarrow ? a.narrow_peer_s : a.simple_peer_s;
  double intra = 0, inter = 0;
  if (g.a2a_intra_peers[ui] > 0)  // fitted: per peer message inside the domain; else the links' own latency
    intra = base > 0 || peer > 0 ? g.a2a_intra_peers[ui] * peer : g.a2a_intra_latency_s[ui];
  if (g.a2a_inter_peers[ui] > 0) inter = g.a2a_inter_latency_s[ui] + g.a2a_inter_peers[ui] * P.model.nic_message_s;
  return std::max(intra, inter);
}

double p2p_time(double bytes, const PathLinks& path, double eff) {
  return bytes / (path.bw_Bps * eff) + path.latency_s;
}

double p2p_time(double bytes, const PathLinks& path, const CollectiveParams& P) {
  if (path.same_domain) return bytes / (path.bw_Bps * P.efficiency) + path.latency_s;
  return bytes / (path.bw_Bps * P.nic_eff()) + path.latency_s + P.model.nic_message_s;
}

}  // namespace parasol::cost

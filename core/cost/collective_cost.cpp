// Alpha-beta collective cost on the cluster graph (collective_cost.hpp).
#include "core/cost/collective_cost.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>

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
  for (int i = 0; i < gl.n; ++i) {
    const auto& p = links.path(gpus[static_cast<size_t>(i)], gpus[static_cast<size_t>((i + 1) % gl.n)]);
    gl.ring_bw_Bps = std::min(gl.ring_bw_Bps, p.bw_Bps);
    gl.ring_latency_s = std::max(gl.ring_latency_s, p.latency_s);
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
  gl.a2a_latency_s.assign(static_cast<size_t>(gl.n), 0.0);
  for (int i = 0; i < gl.n; ++i)
    for (int j = 0; j < gl.n; ++j) {
      if (i == j) continue;
      const auto& p = links.path(gpus[static_cast<size_t>(i)], gpus[static_cast<size_t>(j)]);
      auto& bw =
          p.same_domain ? gl.a2a_intra_bw_Bps[static_cast<size_t>(i)] : gl.a2a_inter_bw_Bps[static_cast<size_t>(i)];
      bw = std::min(bw, p.bw_Bps);
      gl.a2a_latency_s[static_cast<size_t>(i)] = std::max(gl.a2a_latency_s[static_cast<size_t>(i)], p.latency_s);
    }
  return gl;
}

double bytes_sent_per_rank(OpKind kind, CollectiveAlgo algo, int n, double S) {
  if (n <= 1) return 0.0;
  const double f = static_cast<double>(n - 1) / n;
  switch (kind) {
    case OpKind::kAllReduce:
      if (algo == CollectiveAlgo::kNvls) return (n + 1.0) / n * S;
      if (algo == CollectiveAlgo::kTree) return 2.0 * S;
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

double ring_time(OpKind kind, const GroupLinks& g, double S, double eff) {
  const int n = g.n;
  const double steps = kind == OpKind::kAllReduce ? 2.0 * (n - 1) : (n - 1);
  const double per_edge = steps / n * S;
  if (g.domains > 1 && g.uniform && g.local_n > 1) {  // rail-aligned channels, one per local GPU
    const double nl = g.local_n;
    const double t_bw = per_edge * std::max((nl - 1) / nl / (g.intra_bw_Bps * eff), 1.0 / nl / (g.inter_bw_Bps * eff));
    return t_bw + steps * std::max(g.intra_latency_s, g.inter_latency_s);
  }
  return per_edge / (g.ring_bw_Bps * eff) + steps * g.ring_latency_s;
}

}  // namespace

CollectiveTime collective_time(const plan::Op& op, const GroupLinks& g, double eff, CollectiveAlgo algo) {
  CollectiveParams p;
  p.efficiency = eff;
  return collective_time(op, g, p, algo);
}

CollectiveTime collective_time(const plan::Op& op, const GroupLinks& g, const CollectiveParams& p,
                               CollectiveAlgo algo) {
  CollectiveTime out;
  const int n = g.n;
  const double S = op.comm_bytes;
  if (n <= 1) return out;
  if (op.kind == OpKind::kAllToAll) {
    out.algo = CollectiveAlgo::kDirect;
    std::vector<const plan::Op*> members(static_cast<size_t>(n), &op);  // symmetric: every member sends alike
    out.time_s = all_to_all_time(members, g, p);
    return out;
  }
  struct Candidate {
    CollectiveAlgo algo;
    double time_s;
  };
  std::vector<Candidate> c;
  const double eff = p.efficiency;
  c.push_back({CollectiveAlgo::kRing, ring_time(op.kind, g, S, eff)});
  if (op.kind == OpKind::kAllReduce) {
    if (g.nvls)
      c.push_back({CollectiveAlgo::kNvls,
                   (n + 1.0) / n * S / (g.intra_bw_Bps * p.nvls_eff()) + 2.0 * g.intra_latency_s + p.nvls_latency_s});
    if (g.domains > 1 && g.uniform) {
      const double nl = g.local_n, nd = g.domains;
      const double Bi = g.intra_bw_Bps * eff, Bo = g.inter_bw_Bps * eff;
      const double intra_bw = nl > 1 ? 2.0 * (nl - 1) / nl * S / Bi : 0.0;
      const double intra_lat = 2.0 * (nl - 1) * g.intra_latency_s;
      if (nl > 1)
        c.push_back({CollectiveAlgo::kHierarchical, std::max(intra_bw, 2.0 * (nd - 1) / nd * (S / nl) / Bo) +
                                                        intra_lat + 2.0 * (nd - 1) * g.inter_latency_s});
      c.push_back({CollectiveAlgo::kTree, std::max(intra_bw, tree_max_edges(g.domains) * S / (2.0 * nl) / Bo) +
                                              intra_lat + 2.0 * std::floor(std::log2(nd)) * g.inter_latency_s});
    }
  }
  const Candidate* best = &c.front();
  for (const auto& x : c) {
    if (algo != CollectiveAlgo::kAuto && x.algo == algo) {
      best = &x;
      break;
    }
    if (algo == CollectiveAlgo::kAuto && x.time_s < best->time_s) best = &x;
  }
  out.algo = best->algo;
  out.time_s = best->time_s + p.base_latency_s;
  return out;
}

double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& g, double eff) {
  CollectiveParams p;
  p.efficiency = eff;
  return all_to_all_time(members, g, p);
}

double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& g, const CollectiveParams& p) {
  const double eff = p.efficiency;
  const int n = g.n;
  if (n <= 1) return 0.0;
  double worst = 0;
  for (int i = 0; i < n; ++i) {
    double intra_out = 0, inter_out = 0, intra_in = 0, inter_in = 0;
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const auto& out_v = members[static_cast<size_t>(i)]->a2a_send_bytes;
      const auto& in_v = members[static_cast<size_t>(j)]->a2a_send_bytes;
      const double out = static_cast<size_t>(j) < out_v.size() ? out_v[static_cast<size_t>(j)] : 0.0;
      const double in = static_cast<size_t>(i) < in_v.size() ? in_v[static_cast<size_t>(i)] : 0.0;
      if (g.same_domain(i, j)) {
        intra_out += out, intra_in += in;
      } else {
        inter_out += out, inter_in += in;
      }
    }
    double t = 0;
    if (intra_out + intra_in > 0)
      t = std::max(t, std::max(intra_out, intra_in) / (g.a2a_intra_bw_Bps[static_cast<size_t>(i)] * eff));
    if (inter_out + inter_in > 0)
      t = std::max(t, std::max(inter_out, inter_in) / (g.a2a_inter_bw_Bps[static_cast<size_t>(i)] * eff));
    worst = std::max(worst, t + g.a2a_latency_s[static_cast<size_t>(i)]);
  }
  return worst + p.base_latency_s;
}

double p2p_time(double bytes, const PathLinks& path, double eff) {
  return bytes / (path.bw_Bps * eff) + path.latency_s;
}

}  // namespace parasol::cost

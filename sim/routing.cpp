#include "sim/routing.hpp"

#include <algorithm>
#include <deque>
#include <limits>

#include "core/common/error.hpp"

namespace parasol::sim {

RouteTable::RouteTable(const spec::Cluster& cluster) : cluster_(cluster) {
  const auto& g = cluster.graph;
  const int nv = static_cast<int>(boost::num_vertices(g));
  adj_.resize(nv);
  is_gpu_.resize(nv);
  for (int v = 0; v < nv; ++v) is_gpu_[v] = g[static_cast<spec::VertexId>(v)].kind == spec::VertexKind::kGpu;
  auto [it, end] = boost::edges(g);
  for (; it != end; ++it) {
    EdgeInfo e;
    e.u = static_cast<int>(boost::source(*it, g));
    e.v = static_cast<int>(boost::target(*it, g));
    e.link = g[*it];
    const int idx = static_cast<int>(edges_.size());
    edges_.push_back(e);
    adj_[e.u].push_back({e.v, idx});
    if (e.u != e.v) adj_[e.v].push_back({e.u, idx});
  }
  for (auto& a : adj_)
    std::sort(a.begin(), a.end(), [](const Adj& x, const Adj& y) {
      return x.vertex != y.vertex ? x.vertex < y.vertex : x.edge < y.edge;
    });
}

// BFS from `dst`. Vertices that may not forward (GPUs other than dst, unless allowed) get a distance but are not expanded.
const std::vector<int>& RouteTable::distances_to(int dst, bool allow_gpu_transit) {
  const int64_t key = static_cast<int64_t>(dst) * 2 + (allow_gpu_transit ? 1 : 0);
  auto found = dist_.find(key);
  if (found != dist_.end()) return found->second;
  std::vector<int> dist(adj_.size(), std::numeric_limits<int>::max());
  std::deque<int> queue;
  dist[dst] = 0;
  queue.push_back(dst);
  while (!queue.empty()) {
    const int x = queue.front();
    queue.pop_front();
    if (x != dst && is_gpu_[x] && !allow_gpu_transit) continue;
    for (const Adj& a : adj_[x]) {
      if (dist[a.vertex] != std::numeric_limits<int>::max()) continue;
      dist[a.vertex] = dist[x] + 1;
      queue.push_back(a.vertex);
    }
  }
  return dist_.emplace(key, std::move(dist)).first->second;
}

const Route& RouteTable::route(int src, int dst) {
  const int64_t key = static_cast<int64_t>(src) * static_cast<int64_t>(adj_.size()) + dst;
  auto found = routes_.find(key);
  if (found != routes_.end()) return found->second;
  if (src == dst) throw RuntimeFailure("route from a vertex to itself requested (" + cluster_.graph[src].name + ")");

  bool transit = false;
  const std::vector<int>* dist = &distances_to(dst, false);
  if ((*dist)[src] == std::numeric_limits<int>::max()) {
    transit = true;
    dist = &distances_to(dst, true);
    if ((*dist)[src] == std::numeric_limits<int>::max())
      throw RuntimeFailure("no path from " + cluster_.graph[src].name + " to " + cluster_.graph[dst].name);
  }
  const int dst_gpu = cluster_.graph[dst].gpu;
  const uint64_t dkey = static_cast<uint64_t>(dst_gpu >= 0 ? dst_gpu : dst);
  uint64_t stride = 1;

  Route r;
  r.min_bw_Bps = std::numeric_limits<double>::infinity();
  int x = src;
  std::vector<const Adj*> cands;
  while (x != dst) {
    cands.clear();
    for (const Adj& a : adj_[x]) {
      if ((*dist)[a.vertex] != (*dist)[x] - 1) continue;
      if (a.vertex != dst && is_gpu_[a.vertex] && !transit) continue;
      cands.push_back(&a);
    }
    if (cands.empty()) throw RuntimeFailure("routing failed at " + cluster_.graph[x].name);
    const uint64_t k = cands.size();
    const Adj& pick = *cands[(dkey / stride) % k];
    if (k > 1) stride *= k;
    const EdgeInfo& e = edges_[pick.edge];
    r.hops.push_back({pick.edge, e.u == x});
    r.latency_s += e.link.latency_s;
    r.min_bw_Bps = std::min(r.min_bw_Bps, e.link.bw_Bps);
    x = pick.vertex;
  }
  return routes_.emplace(key, std::move(r)).first->second;
}

}  // namespace parasol::sim

// RouteTable: the paths that traffic takes through the cluster graph (spec::Cluster), computed by us rather than by
// SimGrid so that routes follow the graph exactly, whatever its shape (HGX nodes, rail-optimized leaf/spine, NVL72
// domains, PCIe hops), and so that equal-cost paths are spread deterministically.
//
// Rules: shortest path in hops; GPUs never forward traffic (a GPU is only ever the first or last vertex of a route,
// unless the graph offers no other way); among equal-cost next hops the choice is D-mod-k, as InfiniBand subnet managers
// route fat-trees: at the i-th hop that offers k > 1 candidates (sorted by vertex, then edge index) the route takes
// candidate (key / stride) mod k, where key is the destination's GPU index (vertex index for non-GPU destinations) and
// stride is the product of the k of earlier multi-choice hops. So traffic to different destinations spreads evenly over
// spines, and one source-destination pair always uses one path (no packet spraying).
//
// Edges are numbered in boost::edges() order; a Hop names an edge and its direction (forward = from the edge's source
// vertex to its target vertex as stored in the graph), which is how the platform maps hops to SimGrid links.
// Thread behaviour: lazily caches distance arrays and routes; not thread-safe (one per simulation).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "core/spec/cluster.hpp"

namespace parasol::sim {

struct Hop {
  int edge = 0;
  bool forward = true;
};

struct Route {
  std::vector<Hop> hops;
  double latency_s = 0;  // sum of link latencies
  double min_bw_Bps = 0; // bottleneck bandwidth (nominal, per direction)
};

struct EdgeInfo {
  int u = 0, v = 0;  // boost source / target vertex indices
  spec::Link link;
};

class RouteTable {
 public:
  explicit RouteTable(const spec::Cluster& cluster);

  const spec::Cluster& cluster() const { return cluster_; }
  int vertex_count() const { return static_cast<int>(adj_.size()); }
  int edge_count() const { return static_cast<int>(edges_.size()); }
  const EdgeInfo& edge(int e) const { return edges_[e]; }
  // Vertex of a GPU index.
  int gpu_vertex(int gpu) const { return static_cast<int>(cluster_.gpus[gpu]); }

  // The route from vertex `src` to vertex `dst` (src != dst). Throws RuntimeFailure when dst is unreachable.
  const Route& route(int src, int dst);
  const Route& gpu_route(int src_gpu, int dst_gpu) { return route(gpu_vertex(src_gpu), gpu_vertex(dst_gpu)); }

  // Neighbouring vertices of `v` (with the edge index), sorted by vertex then edge.
  struct Adj {
    int vertex;
    int edge;
  };
  const std::vector<Adj>& neighbours(int v) const { return adj_[v]; }

 private:
  const std::vector<int>& distances_to(int dst, bool allow_gpu_transit);

  const spec::Cluster& cluster_;
  std::vector<EdgeInfo> edges_;
  std::vector<std::vector<Adj>> adj_;
  std::vector<bool> is_gpu_;
  std::unordered_map<int64_t, std::vector<int>> dist_;   // key: dst * 2 + allow_gpu_transit (lookups only)
  std::unordered_map<int64_t, Route> routes_;            // key: src * V + dst (lookups only)
};

}  // namespace parasol::sim

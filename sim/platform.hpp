// Platform: the SimGrid view of a spec::Cluster. Every vertex of the cluster graph (GPU, scale-up switch, NIC, leaf,
// spine, ...) becomes a SimGrid host (GPUs run at their bf16 peak; switches only terminate flows, e.g. NVLS
// reductions). Every edge becomes SimGrid links: a full-duplex edge gives two independent links, one per direction
// (what SimGrid calls SPLITDUPLEX), a half-duplex edge one SHARED link used by both directions.
//
// Routing is ours (sim/routing.hpp): a custom netzone answers SimGrid's route queries from the RouteTable, so routes
// follow the graph exactly and equal-cost paths are spread D-mod-k, at any scale (nothing is precomputed: a route is
// computed the first time a flow needs it and cached; 1,024 GPUs cost a few MB). SimGrid's Full/Floyd/Dijkstra zones
// were rejected: Full needs all N^2 routes up front, Floyd is O(V^3) at seal, and Dijkstra sends all traffic of a
// leaf pair through one spine; the fat-tree zone cannot express rail-optimized NICs.
//
// Network model (configured by make_engine): CM02 with network/crosstraffic:0 and network/TCP-gamma:0, so that a lone
// transfer of B bytes over a route takes exactly sum(latency) + B / min(bandwidth), and concurrent flows share links
// by max-min fairness. LV08 (SimGrid's default) would scale latency x13.01 and bandwidth x0.97; crosstraffic charges
// 5% of each flow to the reverse direction; the TCP window bound caps rate at gamma / (2 latency). None of these
// belong in a model of NVLink / InfiniBand fabrics driven by NCCL.
//
// Traffic accounting: account() records each flow as it starts (bytes per link direction, totals); the flow's
// completion (SimGrid's Activity::on_completion, connected while the Platform lives) feeds LinkUsage
// (sim/link_usage.hpp): bytes per link per time bucket and flow groups for the Chrome trace.
//
// Thread behaviour: one per process, used from SimGrid actors (single-threaded event loop).
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <simgrid/s4u.hpp>
#include <string>
#include <vector>

#include "core/spec/cluster.hpp"
#include "sim/link_usage.hpp"
#include "sim/routing.hpp"

namespace parasol::sim {

// The one SimGrid engine of this process, configured as described above. Logging is silenced unless verbose.
// Must be created before any Platform; a second engine in the same process is not supported by SimGrid.
std::unique_ptr<simgrid::s4u::Engine> make_engine(bool verbose = false);

class Platform {
 public:
  explicit Platform(const spec::Cluster& cluster, LinkUsage::Options usage = {});
  ~Platform();
  Platform(const Platform&) = delete;
  Platform& operator=(const Platform&) = delete;

  const spec::Cluster& cluster() const { return routes_.cluster(); }
  RouteTable& routes() { return routes_; }
  const RouteTable& routes() const { return routes_; }

  simgrid::s4u::Host* host(int vertex) const { return hosts_[vertex]; }
  simgrid::s4u::Host* gpu_host(int gpu) const { return hosts_[routes_.gpu_vertex(gpu)]; }

  // The SimGrid link a hop travels on.
  simgrid::s4u::Link* link(const Hop& h) const { return h.forward || !duplex_[h.edge] ? fwd_[h.edge] : bwd_[h.edge]; }

  // Traffic accounting (bytes that went over each link direction), fed by the flow runner right after it starts the
  // comm from src to dst (same simulated instant).
  void account(int src_vertex, int dst_vertex, double bytes);
  // The flows accounted next (until the next call) form one group labelled `label` (a collective) in the trace.
  void begin_flow_group(const std::string& label);
  // Link direction index of a hop, as in link_bytes() and LinkUsage.
  int link_index(const Hop& h) const { return 2 * h.edge + ((h.forward || !duplex_[h.edge]) ? 0 : 1); }
  // Per link direction and time bucket; flow groups (shared so that outputs can outlive the Platform).
  std::shared_ptr<const LinkUsage> usage() const { return usage_; }
  // Bytes carried per edge direction: [2e] forward, [2e+1] backward (half-duplex edges: all in [2e]).
  const std::vector<double>& link_bytes() const { return link_bytes_; }
  std::string link_name(int edge, bool forward) const;

  // Vertex behind a SimGrid netpoint id (for the routing zone).
  int vertex_of_netpoint(unsigned long id) const { return id < np_vertex_.size() ? np_vertex_[id] : -1; }

 private:
  RouteTable routes_;
  std::vector<simgrid::s4u::Host*> hosts_;
  std::vector<simgrid::s4u::Link*> fwd_, bwd_;
  std::vector<bool> duplex_;
  std::vector<int> np_vertex_;
  std::vector<double> link_bytes_;

  void on_completion(const simgrid::s4u::Activity& a);
  struct Pending {
    double start_s;
    double bytes;
    int group;
  };
  std::shared_ptr<LinkUsage> usage_;
  std::map<std::pair<int, int>, std::deque<Pending>> pending_;  // (src, dst) -> flows in flight (lookups only)
  static Platform* active_;  // receives SimGrid's completion signal (the most recent live Platform)
  std::string next_label_;
  bool label_pending_ = false;
  int group_ = -1;
  double group_time_s_ = -1;
  long group_actor_ = -1;
};

}  // namespace parasol::sim

#include "sim/platform.hpp"

#include <xbt/log.h>

#include <algorithm>
#include <csignal>
#include <simgrid/kernel/routing/NetPoint.hpp>
#include <simgrid/kernel/routing/NetZoneImpl.hpp>

#include "core/common/error.hpp"

namespace sg4 = simgrid::s4u;
namespace kr = simgrid::kernel::routing;

namespace parasol::sim {

std::unique_ptr<sg4::Engine> make_engine(bool verbose) {
  // SimGrid's engine installs its own SIGINT handler (print the state, exit 1); the process keeps its own (the CLI
  // stops a run cleanly on SIGINT/SIGTERM).
  struct sigaction int_before {}, term_before {};
  sigaction(SIGINT, nullptr, &int_before);
  sigaction(SIGTERM, nullptr, &term_before);
  auto engine = std::make_unique<sg4::Engine>("parasol");
  sigaction(SIGINT, &int_before, nullptr);
  sigaction(SIGTERM, &term_before, nullptr);
  if (!verbose) xbt_log_control_set("root.thres:critical");
  sg4::Engine::set_config("network/model:CM02");
  sg4::Engine::set_config("network/crosstraffic:0");
  sg4::Engine::set_config("network/TCP-gamma:0");
  return engine;
}

namespace {

// A netzone whose routes come from our RouteTable. It is the root zone and holds every host and link.
class GraphZone : public kr::NetZoneImpl {
 public:
  GraphZone(const std::string& name, Platform* p) : kr::NetZoneImpl(name), platform_(p) {}

  void get_local_route(const kr::NetPoint* src, const kr::NetPoint* dst, kr::Route* into, double* latency) override {
    const int s = platform_->vertex_of_netpoint(src->id());
    const int d = platform_->vertex_of_netpoint(dst->id());
    if (s < 0 || d < 0) throw RuntimeFailure("route requested for an unknown netpoint");
    if (s == d) return;  // loopback: no links
    const Route& r = platform_->routes().route(s, d);
    for (const Hop& h : r.hops) {
      sg4::Link* l = platform_->link(h);
      into->link_list_.push_back(l->get_impl());
      if (latency) *latency += l->get_latency();
    }
  }

 private:
  Platform* platform_;
};

double host_speed(const spec::Cluster& c, const spec::Vertex& v) {
  if (v.kind != spec::VertexKind::kGpu) return 1.0;
  auto it = c.gpu_types.find(v.gpu_type);
  if (it == c.gpu_types.end()) return 1.0;
  const auto& peaks = it->second.peak_flops;
  auto p = peaks.find(DType::kBf16);
  if (p != peaks.end() && p->second > 0) return p->second;
  double best = 1.0;
  for (const auto& [t, f] : peaks) best = std::max(best, f);
  return best;
}

}  // namespace

Platform::Platform(const spec::Cluster& cluster, LinkUsage::Options usage) : routes_(cluster) {
  const auto& g = cluster.graph;
  auto* zone = new GraphZone(cluster.name.empty() ? "cluster" : cluster.name, this);
  const int nv = routes_.vertex_count();
  hosts_.resize(nv);
  for (int v = 0; v < nv; ++v) {
    const spec::Vertex& vx = g[static_cast<spec::VertexId>(v)];
    std::string name = vx.name.empty() ? "v" + std::to_string(v) : vx.name;
    hosts_[v] = zone->create_host(name, {host_speed(cluster, vx)});
    hosts_[v]->seal();
    const unsigned long id = hosts_[v]->get_netpoint()->id();
    if (np_vertex_.size() <= id) np_vertex_.resize(id + 1, -1);
    np_vertex_[id] = v;
  }
  const int ne = routes_.edge_count();
  fwd_.resize(ne);
  bwd_.resize(ne);
  duplex_.resize(ne);
  for (int e = 0; e < ne; ++e) {
    const EdgeInfo& ei = routes_.edge(e);
    if (!(ei.link.bw_Bps > 0))
      throw ConfigError("cluster '" + cluster.name + "': link " + link_name(e, true) + " has no bandwidth");
    duplex_[e] = ei.link.full_duplex;
    fwd_[e] = zone->create_link(link_name(e, true), {ei.link.bw_Bps});
    fwd_[e]->set_latency(ei.link.latency_s);
    fwd_[e]->seal();
    if (ei.link.full_duplex) {
      bwd_[e] = zone->create_link(link_name(e, false), {ei.link.bw_Bps});
      bwd_[e]->set_latency(ei.link.latency_s);
      bwd_[e]->seal();
    } else {
      bwd_[e] = fwd_[e];
    }
  }
  zone->seal();
  link_bytes_.assign(2 * static_cast<size_t>(ne), 0.0);
  usage_ = std::make_shared<LinkUsage>(2 * static_cast<size_t>(ne), usage);
  // SimGrid 3.32 offers no way to disconnect a completion callback: connect one trampoline per process, and route it
  // to the live Platform (one per process, like the engine).
  static bool connected = false;
  active_ = this;
  if (!connected) {
    sg4::Activity::on_completion_cb([](const sg4::Activity& a) {
      if (active_) active_->on_completion(a);
    });
    connected = true;
  }
}

Platform::~Platform() {
  if (active_ == this) active_ = nullptr;
}

Platform* Platform::active_ = nullptr;

std::string Platform::link_name(int edge, bool forward) const {
  const EdgeInfo& ei = routes_.edge(edge);
  const auto& g = routes_.cluster().graph;
  const std::string& a = g[static_cast<spec::VertexId>(ei.u)].name;
  const std::string& b = g[static_cast<spec::VertexId>(ei.v)].name;
  const std::string tag = "#" + std::to_string(edge);
  if (!ei.link.full_duplex) return a + "<->" + b + tag;
  return forward ? a + "->" + b + tag : b + "->" + a + tag;
}

void Platform::account(int src_vertex, int dst_vertex, double bytes) {
  if (src_vertex == dst_vertex) return;
  const Route& r = routes_.route(src_vertex, dst_vertex);
  for (const Hop& h : r.hops) link_bytes_[static_cast<size_t>(link_index(h))] += bytes;
  const double now = sg4::Engine::get_clock();
  const sg4::Actor* self = sg4::Actor::self();
  const long actor = self ? static_cast<long>(self->get_pid()) : -1;
  if (label_pending_ || group_ < 0 || now != group_time_s_ || actor != group_actor_) {
    group_ = usage_->open_group(label_pending_ ? next_label_ : std::string("flows"), now);
    label_pending_ = false;
    group_time_s_ = now;
    group_actor_ = actor;
  }
  usage_->group_flow_started(group_, src_vertex, dst_vertex, now, bytes);
  pending_[{src_vertex, dst_vertex}].push_back({now, bytes, group_});
}

void Platform::begin_flow_group(const std::string& label) {
  next_label_ = label;
  label_pending_ = true;
}

void Platform::on_completion(const sg4::Activity& a) {
  const auto* c = dynamic_cast<const sg4::Comm*>(&a);
  if (!c || !c->get_source() || !c->get_destination()) return;
  const int s = vertex_of_netpoint(c->get_source()->get_netpoint()->id());
  const int d = vertex_of_netpoint(c->get_destination()->get_netpoint()->id());
  auto it = pending_.find({s, d});
  if (it == pending_.end() || it->second.empty()) return;  // not started through account()
  auto& q = it->second;
  const double start = a.get_start_time();
  auto p = q.begin();
  for (auto x = q.begin(); x != q.end(); ++x)
    if (x->start_s == start) {
      p = x;
      break;
    }
  const Pending done = *p;
  q.erase(p);
  if (q.empty()) pending_.erase(it);
  const double end = sg4::Engine::get_clock();
  for (const Hop& h : routes_.route(s, d).hops)
    usage_->add(static_cast<size_t>(link_index(h)), done.start_s, end, done.bytes);
  usage_->group_flow_done(done.group, s, d, done.start_s, end);
}

}  // namespace parasol::sim

// Network model of the simulator: an uncontended transfer costs latency + bytes / bandwidth, concurrent flows share
// links by max-min fairness, routes follow the graph and spread D-mod-k. One simulation per TEST (own process).
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "sim/flows.hpp"
#include "sim/platform.hpp"
#include "tests/sim/test_clusters.hpp"

namespace parasol::sim {
namespace {

namespace sg4 = simgrid::s4u;
using testing::fabric;
using testing::FabricSpec;

void run_actor(Platform& p, std::function<void()> body) {
  sg4::Actor::create("driver", p.gpu_host(0), std::move(body));
  sg4::Engine::get_instance()->run();
}

FlowSet one_flow(int src, int dst, double bytes) {
  FlowSet fs;
  fs.flows.push_back({src, dst, bytes});
  return fs;
}

TEST(Network, UncontendedTransferTakesLatencyPlusBytesOverBottleneckBandwidth) {
  FabricSpec f;
  f.nodes = 2;
  f.gpus_per_node = 4;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  // node0/gpu0 -> node1/gpu3: pcie, nic, leaf0 -> spine -> leaf3, nic, pcie: the NIC (50 GB/s) is the bottleneck.
  const int src = p.routes().gpu_vertex(0), dst = p.routes().gpu_vertex(7);
  const Route& r = p.routes().route(src, dst);
  EXPECT_EQ(r.hops.size(), 6u);
  EXPECT_DOUBLE_EQ(r.min_bw_Bps, f.nic_bw_Bps);
  EXPECT_NEAR(r.latency_s, 2 * f.nic_latency_s + 2 * f.uplink_latency_s, 1e-15);
  std::vector<std::pair<double, double>> got;  // bytes, seconds
  run_actor(p, [&] {
    for (double bytes = 1024; bytes <= 8.0 * (1 << 30); bytes *= 8) got.emplace_back(bytes, run_flows(p, one_flow(src, dst, bytes)));
  });
  ASSERT_EQ(got.size(), 8u);
  for (auto [bytes, t] : got) {
    const double expect = r.latency_s + bytes / r.min_bw_Bps;
    EXPECT_NEAR(t, expect, expect * 1e-9) << bytes;
  }
}

TEST(Network, TwoFlowsAcrossTwoToOneOversubscribedSpineShareItMaxMin) {
  FabricSpec f;
  f.nodes = 2;
  f.gpus_per_node = 2;
  f.rail = false;              // one leaf per node: 2 NICs x 50 GB/s down, one 50 GB/s uplink = 2:1
  f.uplink_bw_Bps = f.nic_bw_Bps;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  const auto& rt = p.routes();
  const int a0 = rt.gpu_vertex(0), a1 = rt.gpu_vertex(1), b0 = rt.gpu_vertex(2), b1 = rt.gpu_vertex(3);
  const double S = 1e9;
  double t_alone = 0, t_small = 0, t_big = 0;
  run_actor(p, [&] {
    t_alone = run_flows(p, one_flow(a0, b0, S));
    const double t0 = sg4::Engine::get_clock();
    sg4::ActorPtr other = sg4::Actor::create("second", p.host(a1), [&] { t_big = run_flows(p, one_flow(a1, b1, 2 * S)); });
    t_small = run_flows(p, one_flow(a0, b0, S));
    other->join();
    EXPECT_DOUBLE_EQ(sg4::Engine::get_clock() - t0, t_big);
  });
  const double lat = p.routes().route(a0, b0).latency_s;
  EXPECT_NEAR(t_alone, lat + S / f.nic_bw_Bps, 1e-12);
  // Max-min: both flows get half the uplink until the small one ends (2S/B); the big one then has it alone.
  EXPECT_NEAR(t_small, lat + 2 * S / f.uplink_bw_Bps, 1e-9);
  EXPECT_NEAR(t_big, lat + 3 * S / f.uplink_bw_Bps, 1e-9);
}

TEST(Network, RoutesNeverTransitThroughGpusAndSpreadOverSpinesDModK) {
  FabricSpec f;
  f.nodes = 8;
  f.gpus_per_node = 1;
  f.rail = false;
  f.spines = 4;
  const spec::Cluster c = fabric(f);
  RouteTable rt(c);
  std::multiset<int> spines_used;
  for (int d = 1; d < 8; ++d) {
    const Route& r = rt.gpu_route(0, d);
    ASSERT_EQ(r.hops.size(), 6u);  // gpu-nic-leaf-spine-leaf-nic-gpu
    for (size_t i = 0; i < r.hops.size(); ++i) {
      const EdgeInfo& e = rt.edge(r.hops[i].edge);
      const int to = r.hops[i].forward ? e.v : e.u;
      if (i + 1 < r.hops.size()) {
        EXPECT_NE(c.graph[static_cast<spec::VertexId>(to)].kind, spec::VertexKind::kGpu);
      }
      if (c.graph[static_cast<spec::VertexId>(to)].kind == spec::VertexKind::kSpine) spines_used.insert(to);
    }
  }
  // 7 destinations over 4 spines: D-mod-k uses every spine, none more than twice.
  std::set<int> distinct(spines_used.begin(), spines_used.end());
  EXPECT_EQ(distinct.size(), 4u);
  for (int s : distinct) {
    EXPECT_LE(spines_used.count(s), 2u);
  }
}

}  // namespace
}  // namespace parasol::sim

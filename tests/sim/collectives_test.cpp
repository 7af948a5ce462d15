// Collectives as flows: closed forms on idle links (ring, NVLS, rail-aligned multi-node rings), the all-to-all bound
// of its most loaded link, and NCCL-style algorithm choice. One simulation per TEST (own process).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "sim/flows.hpp"
#include "sim/platform.hpp"
#include "tests/sim/test_clusters.hpp"

namespace parasol::sim {
namespace {

namespace sg4 = simgrid::s4u;
using plan::CollectiveAlgo;
using testing::fabric;
using testing::FabricSpec;

void run_actor(Platform& p, std::function<void()> body) {
  sg4::Actor::create("driver", p.gpu_host(0), std::move(body));
  sg4::Engine::get_instance()->run();
}

Collective make(CollKind kind, int n, double bytes, CollectiveAlgo algo, int first = 0) {
  Collective c;
  c.kind = kind;
  for (int i = 0; i < n; ++i) c.gpus.push_back(first + i);
  c.bytes = bytes;
  c.algo = algo;
  return c;
}

// Ring all-reduce on n GPUs of one node, nothing else on the links: 2(n-1)/n S/B + 2(n-1) alpha within 1%,
// S from 1 KiB to 1 GiB. alpha is the ring edge latency (GPU -> NVSwitch -> GPU), B the NVLink bandwidth.
void check_ring_closed_form(int n) {
  FabricSpec f;
  f.gpus_per_node = 8;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  const double alpha = 2 * f.nvl_latency_s, B = f.nvl_bw_Bps;
  std::vector<std::pair<double, double>> got;
  run_actor(p, [&] {
    for (double S = 1024; S <= double(1 << 30); S *= 2) {
      const FlowSet fs = plan_collective(make(CollKind::kAllReduce, n, S, CollectiveAlgo::kRing), p.routes());
      EXPECT_EQ(fs.flows.size(), static_cast<size_t>(n == 2 ? 2 : n));
      got.emplace_back(S, run_flows(p, fs));
    }
  });
  ASSERT_EQ(got.size(), 21u);
  for (auto [S, t] : got) {
    const double expect = 2.0 * (n - 1) / n * S / B + 2.0 * (n - 1) * alpha;
    EXPECT_NEAR(t, expect, 0.01 * expect) << "n=" << n << " S=" << S;
  }
}

TEST(Collectives, RingAllReduceOnTwoGpusMatchesClosedForm) { check_ring_closed_form(2); }
TEST(Collectives, RingAllReduceOnFourGpusMatchesClosedForm) { check_ring_closed_form(4); }
TEST(Collectives, RingAllReduceOnEightGpusMatchesClosedForm) { check_ring_closed_form(8); }

TEST(Collectives, RingAllGatherAndReduceScatterMoveOneHalfOfAllReduce) {
  FabricSpec f;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  const double S = 256.0 * (1 << 20), alpha = 2 * f.nvl_latency_s, B = f.nvl_bw_Bps;
  double t_ag = 0, t_rs = 0;
  run_actor(p, [&] {
    t_ag = run_flows(p, plan_collective(make(CollKind::kAllGather, 8, S, CollectiveAlgo::kRing), p.routes()));
    t_rs = run_flows(p, plan_collective(make(CollKind::kReduceScatter, 8, S, CollectiveAlgo::kRing), p.routes()));
  });
  const double expect = 7.0 / 8 * S / B + 7 * alpha;
  EXPECT_NEAR(t_ag, expect, 1e-6 * expect);
  EXPECT_NEAR(t_rs, expect, 1e-6 * expect);
}

// NVLS as NCCL runs it: multimem reduce-scatter (S up, S/n down) + multicast all-gather (S/n up, S down), so
// (n+1)/n S per direction on each GPU's NVLink, and two GPU -> switch -> GPU round trips.
TEST(Collectives, NvlsAllReduceMovesSUpAndDownThroughTheReducingSwitch) {
  FabricSpec f;
  f.scaleup_reduces = true;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  const double S = 1024.0 * (1 << 20);
  double t = 0;
  FlowSet fs;
  run_actor(p, [&] {
    fs = plan_collective(make(CollKind::kAllReduce, 8, S, CollectiveAlgo::kAuto), p.routes());
    t = run_flows(p, fs);
  });
  EXPECT_EQ(fs.algo, CollectiveAlgo::kNvls);  // large message, reducing switch: NVLS beats the ring
  const double expect = 9.0 / 8 * S / f.nvl_bw_Bps + 4 * f.nvl_latency_s;
  EXPECT_NEAR(t, expect, 1e-6 * expect);
  EXPECT_NEAR(t, estimate_s(fs, p.routes()), 1e-6 * expect);
}

TEST(Collectives, MultiNodeRingUsesOneRailAlignedChannelPerNic) {
  FabricSpec f;
  f.nodes = 2;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  const double S = 1024.0 * (1 << 20);
  double t_ring = 0, t_hier = 0;
  run_actor(p, [&] {
    t_ring = run_flows(p, plan_collective(make(CollKind::kAllReduce, 16, S, CollectiveAlgo::kRing), p.routes()));
    t_hier = run_flows(p, plan_collective(make(CollKind::kAllReduce, 16, S, CollectiveAlgo::kHierarchical), p.routes()));
  });
  // 8 channels, one per NIC: busbw = 8 NICs x 50 GB/s, the NVLink edges being faster.
  // Latency: 2(n-1) steps of the slowest edge, the rail hop gpu-nic-leaf-nic-gpu.
  const double alpha_inter = 2 * f.nic_latency_s, alpha_intra = 2 * f.nvl_latency_s;
  const double ring_bw = 2.0 * 15 / 16 * S / (8 * f.nic_bw_Bps) + 30 * alpha_inter;
  EXPECT_NEAR(t_ring, ring_bw, 0.01 * ring_bw);
  // Hierarchical: the inter-node ring of 2 nodes moves S/8 per rail, 2(N-1)/N = 1 of it.
  const double hier_bw =
      std::max(2.0 * 7 / 8 * S / f.nvl_bw_Bps, S / 8 / f.nic_bw_Bps) + 14 * alpha_intra + 2 * alpha_inter;
  EXPECT_NEAR(t_hier, hier_bw, 0.01 * hier_bw);
  // Rails are disjoint: no inter-node flow touches a spine.
  for (int e = 0; e < p.routes().edge_count(); ++e) {
    const auto& ei = p.routes().edge(e);
    if (c.graph[static_cast<spec::VertexId>(ei.v)].kind == spec::VertexKind::kSpine ||
        c.graph[static_cast<spec::VertexId>(ei.u)].kind == spec::VertexKind::kSpine) {
      EXPECT_EQ(p.link_bytes()[2 * e], 0.0);
      EXPECT_EQ(p.link_bytes()[2 * e + 1], 0.0);
    }
  }
}

TEST(Collectives, SkewedAllToAllIsBoundedByItsMostLoadedLink) {
  FabricSpec f;
  const spec::Cluster c = fabric(f);
  auto engine = make_engine();
  Platform p(c);
  const int n = 8;
  const double unit = 8.0 * (1 << 20);
  Collective a2a = make(CollKind::kAllToAll, n, 0, CollectiveAlgo::kAuto);
  a2a.a2a_bytes.assign(n * n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (i != j) a2a.a2a_bytes[i * n + j] = j == 0 ? 4 * unit : unit;  // expert on GPU 0 is hot
  double t = 0, t_uniform = 0;
  FlowSet fs;
  run_actor(p, [&] {
    fs = plan_collective(a2a, p.routes());
    t = run_flows(p, fs);
    t_uniform = run_flows(p, plan_collective(make(CollKind::kAllToAll, n, n * unit, CollectiveAlgo::kAuto), p.routes()));
  });
  EXPECT_EQ(fs.flows.size(), static_cast<size_t>(n * (n - 1)));
  // The hot link is GPU 0's NVLink downlink: 7 senders x 4 units.
  const double bound = 7 * 4 * unit / f.nvl_bw_Bps;
  const double lat = 2 * f.nvl_latency_s;
  EXPECT_GE(t, bound);
  EXPECT_NEAR(t, bound + lat, 0.01 * bound);
  EXPECT_NEAR(t, estimate_s(fs, p.routes()), 0.01 * bound);
  EXPECT_NEAR(t_uniform, 7 * unit / f.nvl_bw_Bps + lat, 0.01 * t_uniform);
}

TEST(Collectives, AutoPicksTheFastestApplicableAlgorithm) {
  FabricSpec f;
  f.nodes = 4;
  f.scaleup_reduces = true;
  const spec::Cluster c = fabric(f);
  RouteTable rt(c);
  for (int n : {8, 32}) {
    for (double S = 1024; S <= double(1 << 30); S *= 32) {
      const Collective coll = make(CollKind::kAllReduce, n, S, CollectiveAlgo::kAuto);
      const FlowSet best = plan_collective(coll, rt);
      const double t_best = estimate_s(best, rt);
      int tried = 0;
      for (auto a : {CollectiveAlgo::kRing, CollectiveAlgo::kNvls, CollectiveAlgo::kHierarchical, CollectiveAlgo::kTree}) {
        if (!applicable(coll, a, rt)) continue;
        ++tried;
        EXPECT_LE(t_best, estimate_s(decompose(coll, a, rt), rt)) << algo_name(a) << " n=" << n << " S=" << S;
      }
      EXPECT_EQ(tried, n == 8 ? 2 : 3);  // one node: ring, nvls; four nodes: ring, hierarchical, tree
    }
  }
  // Small multi-node all-reduce: the tree's log-depth latency wins over the ring's 2(n-1) steps.
  EXPECT_EQ(plan_collective(make(CollKind::kAllReduce, 32, 1024, CollectiveAlgo::kAuto), rt).algo, CollectiveAlgo::kTree);
}

}  // namespace
}  // namespace parasol::sim

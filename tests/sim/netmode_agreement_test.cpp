// Network mode vs analytic mode at the step level: a lone replica, nothing else on the links, takes the same
// step time in both modes (within 5 %) for prefill and decode; two replicas whose collectives cross a 2:1
// oversubscribed spine are slower in network mode by exactly what max-min sharing implies (each gets half the spine
// uplink: the analytic time on a cluster whose uplink is halved). One simulation per TEST (own process).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "core/plan/placement.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/gpu.hpp"
#include "core/spec/model.hpp"
#include "sim/platform.hpp"
#include "sim/step_runners.hpp"
#include "tests/sim/test_clusters.hpp"

namespace parasol::sim {
namespace {

namespace sg4 = simgrid::s4u;

std::string data(const std::string& rel) {
  return std::string(PARASOL_DATA_DIR) + "/" + rel;
}

plan::Batch prefill(int n, int64_t len) {
  plan::Batch b;
  for (int i = 0; i < n; ++i) {
    plan::SeqWork w;
    w.seq_id = i;
    w.new_tokens = len;
    w.context = 0;
    b.seqs.push_back(w);
  }
  return b;
}

plan::Batch decode(int n, int64_t context) {
  plan::Batch b;
  for (int i = 0; i < n; ++i) {
    plan::SeqWork w;
    w.seq_id = i;
    w.new_tokens = 1;
    w.context = context;
    b.seqs.push_back(w);
  }
  return b;
}

plan::Plan make(const spec::Model& m, const spec::Cluster& c, const plan::ParallelConfig& pc,
                const plan::PlanOptions& o = {}) {
  auto made = plan::make_plan(m, c, "", pc, o);
  EXPECT_TRUE(made.feasibility.ok);
  return made.plan;
}

// Step times of replica 0 in both modes, for each batch.
void check_lone_replica(const std::string& model, const std::string& cluster, const plan::ParallelConfig& pc) {
  const spec::Model m = spec::load_model_file(data("scenarios/models/" + model + ".yaml"));
  const spec::Cluster c = spec::load_cluster_file(data("topologies/clusters/" + cluster + ".yaml"));
  const plan::Plan p = make(m, c, pc);
  plan::Batch mixed = decode(16, 1000);  // chunked prefill: a prompt chunk over cached tokens rides with decodes
  plan::SeqWork chunk;
  chunk.seq_id = 99;
  chunk.new_tokens = 384;
  chunk.context = 512;
  mixed.seqs.push_back(chunk);
  const std::vector<plan::Batch> batches = {prefill(1, 512), prefill(4, 2048), decode(1, 1024), decode(64, 2048),
                                            mixed,           prefill(3, 77),   prefill(1, 4096)};
  serve::AnalyticStepRunner analytic(p, 0, c);
  std::vector<double> want;
  for (const auto& b : batches) want.push_back(analytic.run(0, b).total_s);
  auto engine = make_engine();
  Platform platform(c);
  NetworkStepRunner network(p, 0, platform);
  std::vector<double> got;
  sg4::Actor::create("driver", platform.gpu_host(0), [&] {
    for (const auto& b : batches) got.push_back(network.run(0, b).total_s);
  });
  engine->run();
  ASSERT_EQ(got.size(), batches.size());
  for (size_t i = 0; i < batches.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 0.01 * want[i]) << model << " on " << cluster << ", batch " << i;
    std::printf("%s %s batch %zu: analytic %.6g s, network %.6g s (%+.3f %%)\n", model.c_str(), cluster.c_str(), i,
                want[i], got[i], 100 * (got[i] / want[i] - 1));
  }
  EXPECT_GT(network.stats().flows.flows, 0);
}

TEST(NetmodeAgreement, LoneTp8ReplicaOnADgxTakesTheAnalyticStepTime) {
  plan::ParallelConfig pc;
  pc.tp = 8;
  check_lone_replica("llama-3.1-8b", "dgx-h100", pc);
}

TEST(NetmodeAgreement, LoneTp2ReplicaOnADgxTakesTheAnalyticStepTime) {
  plan::ParallelConfig pc;
  pc.tp = 2;
  check_lone_replica("llama-3.1-8b", "dgx-h100", pc);
}

TEST(NetmodeAgreement, LoneTp8Pp2ReplicaAcrossTwoNodesTakesTheAnalyticStepTime) {
  plan::ParallelConfig pc;
  pc.tp = 8;
  pc.pp = 2;
  check_lone_replica("llama-3.1-70b", "h100-4node-leafspine", pc);
}

TEST(NetmodeAgreement, LoneTp2Pp2ReplicaOnADgxTakesTheAnalyticStepTime) {
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.pp = 2;
  check_lone_replica("llama-3.1-8b", "dgx-h100", pc);
}

// A serving-like sequence of batches (random mixes of decodes and prompt chunks, shapes repeating so that the
// analytic runner's memo and the network runner's flow cache are exercised): both modes agree on every step.
TEST(NetmodeAgreement, RandomBatchSequencesTakeTheAnalyticStepTime) {
  const spec::Model m = spec::load_model_file(data("scenarios/models/llama-3.1-8b.yaml"));
  const spec::Cluster c = spec::load_cluster_file(data("topologies/clusters/dgx-h100.yaml"));
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.dp = 4;
  const plan::Plan p = make(m, c, pc);
  std::mt19937_64 rng(5);
  std::vector<plan::Batch> batches;
  for (int i = 0; i < 300; ++i) {
    if (i >= 100 && rng() % 3 == 0) {  // a repeated shape
      batches.push_back(batches[rng() % batches.size()]);
      continue;
    }
    plan::Batch b;
    const int decodes = static_cast<int>(rng() % 40);
    for (int k = 0; k < decodes; ++k) {
      plan::SeqWork w;
      w.seq_id = k;
      w.new_tokens = 1;
      w.context = 16 + static_cast<int64_t>(rng() % 3000);
      b.seqs.push_back(w);
    }
    if (decodes == 0 || rng() % 2 == 0) {
      plan::SeqWork w;
      w.seq_id = 1000;
      w.new_tokens = 1 + static_cast<int64_t>(rng() % 2048);
      w.context = static_cast<int64_t>(rng() % 1024);
      b.seqs.push_back(w);
    }
    batches.push_back(b);
  }
  serve::AnalyticStepRunner analytic(p, 0, c);
  std::vector<double> want;
  for (size_t i = 0; i < batches.size(); ++i) want.push_back(analytic.run(static_cast<int>(i % 4), batches[i]).total_s);
  auto engine = make_engine();
  Platform platform(c);
  NetworkStepRunner network(p, 0, platform);
  std::vector<double> got;
  sg4::Actor::create("driver", platform.gpu_host(0), [&] {
    for (size_t i = 0; i < batches.size(); ++i) got.push_back(network.run(static_cast<int>(i % 4), batches[i]).total_s);
  });
  engine->run();
  ASSERT_EQ(got.size(), batches.size());
  for (size_t i = 0; i < batches.size(); ++i) EXPECT_NEAR(got[i], want[i], 0.01 * want[i]) << "batch " << i;
}

// Serving shares one NetworkStepRunner per pool between the replicas' actors, and run() waits on flows: replicas
// whose steps overlap in time (on disjoint GPUs, so nothing is shared) must each still take the analytic time.
TEST(NetmodeAgreement, ReplicasSharingOneNetworkRunnerKeepTheirOwnSteps) {
  const spec::Model m = spec::load_model_file(data("scenarios/models/llama-3.1-8b.yaml"));
  const spec::Cluster c = spec::load_cluster_file(data("topologies/clusters/dgx-h100.yaml"));
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.dp = 4;
  const plan::Plan p = make(m, c, pc);
  const std::vector<plan::Batch> batches = {prefill(1, 4096), decode(8, 500), prefill(2, 300), decode(40, 2000)};
  serve::AnalyticStepRunner analytic(p, 0, c);
  auto engine = make_engine();
  Platform platform(c);
  NetworkStepRunner shared(p, 0, platform);
  std::vector<std::vector<double>> got(4);
  for (int r = 0; r < 4; ++r)
    sg4::Actor::create("replica" + std::to_string(r), platform.gpu_host(2 * r), [&, r] {
      sg4::this_actor::sleep_for(1e-3 * r);  // overlapping, staggered steps
      for (size_t k = 0; k < batches.size(); ++k)
        got[r].push_back(shared.run(r, batches[(k + r) % batches.size()]).total_s);
    });
  engine->run();
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(got[r].size(), batches.size());
    for (size_t k = 0; k < batches.size(); ++k) {
      const double want = analytic.run(r, batches[(k + r) % batches.size()]).total_s;
      EXPECT_NEAR(got[r][k], want, 0.01 * want) << "replica " << r << " step " << k;
    }
  }
}

// 2 nodes x 2 GPUs, one leaf per node, one spine; NIC 50 GB/s and leaf -> spine `uplink` GB/s (50: 2:1 oversubscribed).
spec::Cluster spine_cluster(double uplink_Bps) {
  testing::FabricSpec f;
  f.nodes = 2;
  f.gpus_per_node = 2;
  f.rail = false;
  f.spines = 1;
  f.nic_bw_Bps = 50e9;
  f.uplink_bw_Bps = uplink_Bps;
  spec::Cluster c = testing::fabric(f);
  spec::Gpu gpu = spec::load_gpu_file(data("topologies/gpus/h100-sxm.yaml"));
  gpu.name = "test-gpu";
  // Simple protocol only: NCCL picks the protocol by size for the nominal links, so under contention the network mode
  // keeps the alone pick where the analytic model on a half-speed uplink could pick another one. With one protocol
  // both take the same algorithm and the max-min share is the only difference.
  gpu.collective.ll.bandwidth = gpu.collective.ll128.bandwidth = gpu.collective.narrow.bandwidth = 0;
  c.gpu_types["test-gpu"] = gpu;
  return c;
}

TEST(NetmodeAgreement, TwoReplicasAcrossAnOversubscribedSpineShareItMaxMin) {
  const spec::Model m = spec::load_model_file(data("scenarios/models/llama-3.1-8b.yaml"));
  const spec::Cluster c = spine_cluster(50e9);
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.dp = 2;
  plan::PlanOptions o;
  o.allow_cross_domain_tp = true;
  plan::Plan p = make(m, c, pc, o);
  // Each replica's TP pair spans the two leaves: replica 0 on GPUs 0 (node 0) and 2 (node 1), replica 1 on 1 and 3.
  // Both replicas' all-reduce flows node 0 -> node 1 meet on leaf 0's single uplink (and back on leaf 1's).
  p.pools[0].placement = {{0, 2}, {1, 3}};
  const std::vector<plan::Batch> batches = {prefill(2, 2048), decode(32, 1024)};

  // Expected: alone, the analytic time on this cluster; sharing, each flow gets 25 GB/s of the 50 GB/s uplink, i.e.
  // the analytic time on the same cluster with a 25 GB/s uplink.
  const spec::Cluster half = spine_cluster(25e9);
  plan::Plan p_half = p;
  serve::AnalyticStepRunner alone_an(p, 0, c), shared_an(p_half, 0, half);
  std::vector<double> want_alone, want_shared;
  for (const auto& b : batches) {
    want_alone.push_back(alone_an.run(0, b).total_s);
    want_shared.push_back(shared_an.run(0, b).total_s);
  }

  auto engine = make_engine();
  Platform platform(c);
  NetworkStepRunner r0(p, 0, platform), r1(p, 0, platform);
  std::vector<double> alone, shared0, shared1;
  // Phase 1 (t = 0): replica 0 alone. Phase 2 (t = 100 s, long after): both replicas run the same batches in lockstep.
  const double t_shared = 100.0;
  sg4::Actor::create("replica0", platform.gpu_host(0), [&] {
    for (const auto& b : batches) alone.push_back(r0.run(0, b).total_s);
    sg4::this_actor::sleep_until(t_shared);
    for (const auto& b : batches) shared0.push_back(r0.run(0, b).total_s);
  });
  sg4::Actor::create("replica1", platform.gpu_host(1), [&] {
    sg4::this_actor::sleep_until(t_shared);
    for (const auto& b : batches) shared1.push_back(r1.run(1, b).total_s);
  });
  engine->run();
  ASSERT_EQ(alone.size(), batches.size());
  ASSERT_EQ(shared0.size(), batches.size());
  ASSERT_EQ(shared1.size(), batches.size());
  for (size_t i = 0; i < batches.size(); ++i) {
    EXPECT_NEAR(alone[i], want_alone[i], 0.05 * want_alone[i]) << "batch " << i;
    EXPECT_NEAR(shared0[i], want_shared[i], 0.01 * want_shared[i]) << "batch " << i;
    EXPECT_NEAR(shared1[i], want_shared[i], 0.01 * want_shared[i]) << "batch " << i;
    EXPECT_GT(shared0[i], alone[i] * 1.05) << "sharing the spine must cost something, batch " << i;
    std::printf("batch %zu: alone %.6g s (analytic %.6g), shared %.6g / %.6g s (max-min %.6g)\n", i, alone[i],
                want_alone[i], shared0[i], shared1[i], want_shared[i]);
  }
}

}  // namespace
}  // namespace parasol::sim

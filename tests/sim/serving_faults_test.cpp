// Replica failures in both fidelities: on a TP2 x 4-replica deployment (network mode runs each step's collectives as
// flows, in actors that outlive a failure of their replica), random and explicit failures with retries lose no
// request: every request ends exactly once, and every KV block is free at the end. One SimGrid engine per process:
// each fidelity is its own test.
#include <gtest/gtest.h>

#include <map>

#include "core/plan/placement.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

void check(spec::Fidelity fidelity) {
  const std::string dir = PARASOL_DATA_DIR;
  const spec::Model m = spec::load_model_file(dir + "/scenarios/models/llama-3.1-8b.yaml");
  const spec::Cluster c = spec::load_cluster_file(dir + "/topologies/clusters/dgx-h100.yaml");
  plan::ParallelConfig pc;
  pc.tp = 2;
  pc.dp = 4;
  auto made = plan::make_plan(m, c, "", pc);
  ASSERT_TRUE(made.feasibility.ok);
  serve::WorkloadSpec w;
  w.arrival.rate_per_s = 60;
  w.input.kind = serve::LengthKind::kLognormal;
  w.input.mean = 800;
  w.input.max = 4000;
  w.output.kind = serve::LengthKind::kLognormal;
  w.output.mean = 120;
  w.output.max = 600;
  w.max_requests = 400;
  auto src = serve::make_source(w, 3);
  serve::MetricsCollector metrics(serve::MetricsConfig{});
  ServeOptions o;
  o.fidelity = fidelity;
  o.faults.mtbf_s = 2.0;
  o.faults.mttr_s = 0.5;
  o.faults.detect_s = 0.1;
  o.faults.retries = 1;
  o.faults.seed = 11;
  o.faults.events.push_back({1.0, 2, 0.3});
  std::map<int64_t, int> seen;
  int64_t failed = 0;
  o.on_record = [&](const serve::RequestRecord& r) {
    ++seen[r.id];
    if (r.outcome == serve::Outcome::kFailed) {
      ++failed;
      EXPECT_FALSE(r.reason.empty());
    }
  };
  const ServeResult r = simulate_serving(made.plan, c, *src, metrics, o);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), w.max_requests);
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << "request " << id;
  for (const auto& e : r.replica_end) EXPECT_EQ(e.kv_used_blocks, 0);
  EXPECT_GT(r.failures, 1);
  EXPECT_GT(r.retried, 0);
  EXPECT_EQ(r.failed_requests, failed);
}

TEST(ServingFaults, AnalyticFidelityLosesNoRequest) { check(spec::Fidelity::kAnalytic); }
TEST(ServingFaults, NetworkFidelityLosesNoRequest) { check(spec::Fidelity::kNetwork); }

}  // namespace
}  // namespace parasol::sim

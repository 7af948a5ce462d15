// Pipeline parallelism as engines run it: at saturation a pp-stage replica keeps pp micro-batches in flight, each
// holding its share of the running sequences, and its decode throughput reaches the steady-state bound pp x B / C,
// where B is the sequences per micro-batch (max_batch_seqs) and C = max(T, pp x slowest stage) the cycle of one
// micro-batch (T its latency, the sum of its stage times: the cost model's own figures for that batch). Measured over
// the saturated middle of the run (every micro-batch full), on llama-3.1-8b over tp1 x pp2 and tp1 x pp4 (analytic
// fidelity). Consecutive micro-batches overlap in time there, and each micro-batch keeps the same sequences.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "core/plan/placement.hpp"
#include "core/serve/analytic_step_runner.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

struct It {
  double start_s, end_s;
  int64_t tokens;  // tokens produced: decodes + prefills that completed their prompt
  int32_t lane;
  size_t seqs;
};

void check_saturated_pipeline(int pp) {
  const std::string dir = PARASOL_DATA_DIR;
  const spec::Model m = spec::load_model_file(dir + "/scenarios/models/llama-3.1-8b.yaml");
  const spec::Cluster c = spec::load_cluster_file(dir + "/topologies/clusters/dgx-h100.yaml");
  plan::ParallelConfig pc;
  pc.tp = 1;
  pc.pp = pp;
  auto made = plan::make_plan(m, c, "", pc);
  ASSERT_TRUE(made.feasibility.ok);
  const plan::Plan p = made.plan;
  const int64_t B = p.pools[0].max_batch_seqs;
  const int64_t in = 16, out = 256;

  // The bound, from the cost model: B sequences decoding at the mean context of the run.
  double bound = 0;
  {
    serve::AnalyticStepRunner runner(p, 0, c);
    plan::Batch batch;
    for (int64_t i = 0; i < B; ++i) batch.seqs.push_back({i, 1, in + out / 2, 0, true});
    const serve::StepTiming t = runner.run(0, batch);
    ASSERT_EQ(static_cast<int>(t.stage_s.size()), pp);
    const double slowest = *std::max_element(t.stage_s.begin(), t.stage_s.end());
    bound = static_cast<double>(pp * B) / std::max(t.total_s, pp * slowest);
  }

  serve::WorkloadSpec w;
  w.arrival.rate_per_s = 1e6;  // everything at once: a queue far longer than pp x B
  w.input = serve::fixed_length(in);
  w.output = serve::fixed_length(out);
  w.max_requests = 6 * pp * B;
  auto src = serve::make_source(w, 1);
  serve::MetricsCollector metrics(serve::MetricsConfig{});
  std::vector<It> its;
  std::map<int64_t, int32_t> lane_of;  // a sequence's micro-batch while it runs
  int64_t moved = 0;
  ServeOptions o;
  o.on_iteration = [&](const serve::IterationView& v) {
    int64_t tokens = 0;
    for (const plan::SeqWork& s : v.it->batch.seqs) {
      tokens += s.sample ? 1 : 0;
      auto [at, fresh] = lane_of.emplace(s.seq_id, v.it->lane);
      if (!fresh && at->second != v.it->lane) ++moved;
    }
    its.push_back({v.start_s, v.end_s, tokens, v.it->lane, v.it->batch.seqs.size()});
  };
  const ServeResult r = simulate_serving(p, c, *src, metrics, o);
  ASSERT_EQ(r.requests, w.max_requests);
  EXPECT_EQ(moved, 0) << "a running sequence changed micro-batch";

  // The saturated middle: from 25% to 75% of the run.
  const double t1 = 0.25 * r.end_s, t2 = 0.75 * r.end_s;
  int64_t tokens = 0, pairs = 0, overlapping = 0, full = 0, window = 0;
  for (size_t i = 0; i < its.size(); ++i) {
    if (its[i].end_s <= t1 || its[i].end_s > t2) continue;
    tokens += its[i].tokens;
    ++window;
    if (static_cast<int64_t>(its[i].seqs) >= B) ++full;
    if (i + 1 < its.size()) {
      ++pairs;
      if (its[i + 1].start_s < its[i].end_s) ++overlapping;
    }
  }
  const double measured = static_cast<double>(tokens) / (t2 - t1);
  EXPECT_NEAR(measured / bound, 1.0, 0.10) << "pp " << pp << ": " << measured << " tok/s simulated, bound " << bound;
  EXPECT_GT(static_cast<double>(full), 0.9 * static_cast<double>(window)) << "micro-batches not full";
  EXPECT_GT(static_cast<double>(overlapping), 0.9 * static_cast<double>(pairs)) << "micro-batches do not overlap";
  std::printf("pp %d: simulated %.0f tok/s, bound %.0f tok/s (%.3f); %lld of %lld consecutive iterations overlap\n", pp,
              measured, bound, measured / bound, static_cast<long long>(overlapping), static_cast<long long>(pairs));
}

TEST(ServingPipeline, Pp2AtSaturationReachesTheSteadyStateBound) { check_saturated_pipeline(2); }
TEST(ServingPipeline, Pp4AtSaturationReachesTheSteadyStateBound) { check_saturated_pipeline(4); }

}  // namespace
}  // namespace parasol::sim

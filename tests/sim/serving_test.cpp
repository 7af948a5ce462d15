// The serving simulation against closed forms: a lone request's TTFT and E2E are sums of its cost-model step times;
// with batch size 1 and Poisson arrivals the mean wait matches Pollaczek-Khinchine (M/D/1 and M/G/1); two runs give
// identical bytes. One simulation per TEST (own process).
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "core/common/error.hpp"
#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "core/serve/metrics.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/gpu.hpp"
#include "core/spec/model.hpp"
#include "sim/serving.hpp"
#include "tests/sim/list_source.hpp"

namespace parasol::sim {
namespace {

struct Deployment {
  spec::Model model = spec::load_model_file(std::string(PARASOL_DATA_DIR) + "/scenarios/models/llama-3.1-8b.yaml");
  spec::Cluster cluster = spec::load_cluster_file(std::string(PARASOL_DATA_DIR) + "/topologies/clusters/dgx-h100.yaml");
  plan::Plan plan;
  explicit Deployment(int dp = 1) {
    plan::ParallelConfig pc;
    pc.dp = dp;
    auto made = plan::make_plan(model, cluster, "", pc);
    EXPECT_TRUE(made.feasibility.ok);
    plan = made.plan;
  }
  double step_time(const plan::Batch& b) {
    cost::CostModel cm(plan, cluster);
    return cm.step_time_s(plan::build_step(plan, 0, b));
  }
};

plan::Batch one(int64_t new_tokens, int64_t context) {
  plan::Batch b;
  plan::SeqWork w;
  w.seq_id = 0;
  w.new_tokens = new_tokens;
  w.context = context;
  b.seqs.push_back(w);
  return b;
}

using testing::ListSource;

TEST(Serving, LoneRequestTtftIsPrefillStepAndE2eAddsEachDecodeStep) {
  Deployment s;
  const int64_t in = 700, out = 20;
  const double prefill = s.step_time(one(in, 0));
  double decode_sum = 0;
  for (int64_t k = 1; k < out; ++k) decode_sum += s.step_time(one(1, in + k - 1));
  serve::Request r;
  r.arrival_s = 0.25;
  r.input_tokens = in;
  r.output_tokens = out;
  ListSource src({r});
  std::ostringstream csv;
  serve::MetricsConfig mc;
  mc.requests_csv = &csv;
  serve::MetricsCollector metrics(mc);
  const ServeResult res = simulate_serving(s.plan, s.cluster, src, metrics, {});
  const serve::Summary sum = metrics.finish(res.end_s);
  ASSERT_EQ(sum.completed, 1);
  EXPECT_NEAR(sum.ttft_s.mean, prefill, 1e-12);
  EXPECT_NEAR(sum.e2e_s.mean, prefill + decode_sum, 1e-12);
  EXPECT_NEAR(res.end_s, 0.25 + prefill + decode_sum, 1e-12);
  EXPECT_EQ(res.iterations, out);
}

// A source that fails on its third request, as a trace row might mid-run: the error leaves simulate_serving as the
// same exception (the CLI's exit 2), not an abort inside the simulation engine.
class FailingSource final : public serve::RequestSource {
 public:
  std::optional<serve::Request> next() override {
    if (++calls_ == 3) throw ConfigError("bad.csv", 4, 1, "input_tokens", "a non-negative integer", "'x'");
    serve::Request r;
    r.id = calls_;
    r.arrival_s = 0.01 * calls_;
    r.input_tokens = 100;
    r.output_tokens = 50;
    return r;
  }
  std::string describe() const override { return "failing"; }

 private:
  int calls_ = 0;
};

TEST(Serving, AnErrorInsideTheSimulationLeavesAsItsException) {
  Deployment s(2);
  FailingSource src;
  serve::MetricsConfig mc;
  serve::MetricsCollector metrics(mc);
  try {
    simulate_serving(s.plan, s.cluster, src, metrics, {});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 4);
    EXPECT_EQ(e.key_path(), "input_tokens");
  }
}

// A request past the model's context window is rejected when it arrives, with the reason; the others complete.
TEST(Serving, RequestsPastTheContextWindowAreRejectedWithTheReason) {
  Deployment s;
  const int64_t window = s.plan.model.max_position;
  ASSERT_GT(window, 0);
  std::vector<serve::Request> reqs(3);
  for (int i = 0; i < 3; ++i) reqs[i].id = i, reqs[i].arrival_s = 0.1 * i, reqs[i].output_tokens = 10;
  reqs[0].input_tokens = 100;
  reqs[1].input_tokens = window - 10;  // prompt + answer = the window: fits
  reqs[2].input_tokens = window - 9;   // one token past it
  ListSource src(reqs);
  serve::MetricsConfig mc;
  serve::MetricsCollector metrics(mc);
  const ServeResult res = simulate_serving(s.plan, s.cluster, src, metrics, {});
  const serve::Summary sum = metrics.finish(res.end_s);
  EXPECT_EQ(sum.arrived, 3);
  EXPECT_EQ(sum.rejected + sum.completed, 3);
  ASSERT_EQ(sum.reasons.size(), 1u);
  EXPECT_NE(sum.reasons[0].first.find("context window of " + std::to_string(window)), std::string::npos)
      << sum.reasons[0].first;
  EXPECT_EQ(sum.reasons[0].second, 1);
}

// Poisson arrivals at rate rho / E[S], batch size 1: mean wait vs Pollaczek-Khinchine lambda E[S^2] / (2 (1 - rho)).
void check_pk(double rho, int64_t n, bool deterministic) {
  Deployment s;
  serve::WorkloadSpec w;
  w.input = deterministic ? serve::fixed_length(1024) : serve::LengthSpec{};
  if (!deterministic) {
    w.input.kind = serve::LengthKind::kLognormal;
    w.input.mean = 1024;
    w.input.cv = 1.0;
    w.input.min = 1;
    w.input.max = 1 << 16;
  }
  w.output = serve::fixed_length(1);  // the request ends with its prefill: service = one step
  w.max_requests = n;
  // E[S] and E[S^2] of the service time, from the cost model over the input length distribution (estimated on a
  // separate draw of the same distribution for the general case).
  double m1 = 0, m2 = 0;
  {
    serve::WorkloadSpec probe = w;
    probe.arrival.rate_per_s = 1.0;
    probe.max_requests = deterministic ? 1 : 200000;
    auto src = serve::make_source(probe, 99);
    cost::CostModel cm(s.plan, s.cluster);
    std::map<int64_t, double> memo;
    int64_t k = 0;
    while (auto r = src->next()) {
      auto it = memo.find(r->input_tokens);
      if (it == memo.end()) it = memo.emplace(r->input_tokens, cm.step_time_s(plan::build_step(s.plan, 0, one(r->input_tokens, 0)))).first;
      m1 += it->second;
      m2 += it->second * it->second;
      ++k;
    }
    m1 /= k;
    m2 /= k;
  }
  const double lambda = rho / m1;
  w.arrival.rate_per_s = lambda;
  auto src = serve::make_source(w, 7);
  serve::MetricsConfig mc;
  serve::MetricsCollector metrics(mc);
  ServeOptions o;
  o.schedulers.push_back(serve::SchedulerConfig::from_pool(s.plan.pools[0]));
  o.schedulers[0].max_batch_seqs = 1;
  o.schedulers[0].policy = serve::BatchPolicy::kPrefillFirst;
  const ServeResult res = simulate_serving(s.plan, s.cluster, *src, metrics, o);
  const serve::Summary sum = metrics.finish(res.end_s);
  ASSERT_EQ(sum.completed, n);
  const double pk = lambda * m2 / (2 * (1 - rho));
  EXPECT_NEAR(sum.queueing_s.mean, pk, 0.03 * pk) << "rho=" << rho << " E[S]=" << m1;
}

TEST(Serving, MD1MeanWaitMatchesPollaczekKhinchineAtHalfLoad) { check_pk(0.5, 100000, true); }
TEST(Serving, MD1MeanWaitMatchesPollaczekKhinchineAtEightyPercentLoad) { check_pk(0.8, 400000, true); }
TEST(Serving, MG1MeanWaitMatchesPollaczekKhinchineAtHalfLoad) { check_pk(0.5, 100000, false); }
TEST(Serving, MG1MeanWaitMatchesPollaczekKhinchineAtEightyPercentLoad) { check_pk(0.8, 400000, false); }

}  // namespace
}  // namespace parasol::sim

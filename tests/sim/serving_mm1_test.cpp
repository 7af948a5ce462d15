// M/M/1 through the SimGrid-driven serving engine: Poisson arrivals, one sequence per iteration (max_batch_seqs = 1),
// one output token (each request is one iteration) and a test StepRunner whose step times are exponential, drawn from
// a seeded mt19937_64 by inversion. Two checks: (1) the engine is exactly a FIFO single server: its mean wait equals
// Lindley's recursion W_k = max(0, W_{k-1} + S_{k-1} - A_k) over the same arrival and service draws (relative 1e-9);
// (2) the mean wait is within 3% of Pollaczek-Khinchine, lambda E[S^2] / (2 (1 - rho)) = rho / (mu - lambda), at
// rho = 0.5 (400k requests) and 0.8 (2M requests: the sample mean's standard error there is ~1.1%, measured over
// seeds on a plain Lindley recursion, so 3% is ~2.7 standard errors). One simulation per TEST.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/plan/placement.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/step_runner.hpp"
#include "core/serve/workload.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

const std::string kData = PARASOL_DATA_DIR;

// Exponential by inversion of the top 53 bits (the same bytes with any standard library).
class Exponential {
 public:
  Exponential(uint64_t seed, double mean_s) : rng_(seed), mean_s_(mean_s) {}
  double operator()() {
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // [0, 1)
    return -mean_s_ * std::log1p(-u);
  }

 private:
  std::mt19937_64 rng_;
  double mean_s_;
};

// Each step takes an exponential time, whatever the batch (one sequence here).
class ExponentialStepRunner final : public serve::StepRunner {
 public:
  ExponentialStepRunner(uint64_t seed, double mean_s) : draw_(seed, mean_s) {}
  serve::StepTiming run(int, const plan::Batch&) override {
    serve::StepTiming t;
    t.total_s = draw_();
    return t;
  }
  std::string name() const override { return "exponential"; }

 private:
  Exponential draw_;
};

void check_mm1(double rho, int64_t n) {
  const spec::Model model = spec::load_model_file(kData + "/scenarios/models/llama-3.1-8b.yaml");
  const spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/dgx-h100.yaml");
  const auto made = plan::make_plan(model, cluster, "", plan::ParallelConfig{});
  ASSERT_TRUE(made.feasibility.ok);
  const double mean_s = 0.02, lambda = rho / mean_s;
  const uint64_t service_seed = 11, arrival_seed = 7;

  serve::WorkloadSpec w;
  w.arrival.rate_per_s = lambda;
  w.input = serve::fixed_length(100);
  w.output = serve::fixed_length(1);  // one iteration per request
  w.max_requests = n;

  // Reference: Lindley's recursion over the same draws (arrival k gets service draw k: FIFO, one per iteration).
  double lindley = 0;
  {
    auto src = serve::make_source(w, arrival_seed);
    Exponential service(service_seed, mean_s);
    double wait = 0, prev_arrival = 0, prev_service = 0;
    int64_t k = 0;
    while (auto r = src->next()) {
      if (k > 0) wait = std::max(0.0, wait + prev_service - (r->arrival_s - prev_arrival));
      lindley += wait;
      prev_arrival = r->arrival_s;
      prev_service = service();
      ++k;
    }
    ASSERT_EQ(k, n);
    lindley /= static_cast<double>(n);
  }

  auto src = serve::make_source(w, arrival_seed);
  serve::MetricsConfig mc;
  serve::MetricsCollector metrics(mc);
  ExponentialStepRunner runner(service_seed, mean_s);
  ServeOptions o;
  o.schedulers.push_back(serve::SchedulerConfig::from_pool(made.plan.pools[0]));
  o.schedulers[0].max_batch_seqs = 1;
  o.schedulers[0].policy = serve::BatchPolicy::kPrefillFirst;
  o.runners.push_back(&runner);
  const ServeResult res = simulate_serving(made.plan, cluster, *src, metrics, o);
  const serve::Summary sum = metrics.finish(res.end_s);
  ASSERT_EQ(sum.completed, n);
  EXPECT_EQ(res.iterations, n);
  EXPECT_NEAR(sum.queueing_s.mean, lindley, 1e-9 * lindley);
  const double pk = rho / (1.0 / mean_s - lambda);  // = lambda E[S^2] / (2 (1 - rho)) with E[S^2] = 2 mean^2
  EXPECT_NEAR(sum.queueing_s.mean, pk, 0.03 * pk) << "rho=" << rho;
}

TEST(ServingMM1, MeanWaitMatchesPollaczekKhinchineAtHalfLoad) { check_mm1(0.5, 400000); }
TEST(ServingMM1, MeanWaitMatchesPollaczekKhinchineAtEightyPercentLoad) { check_mm1(0.8, 2000000); }

}  // namespace
}  // namespace parasol::sim

// Queueing closed forms through the reference event loop: one replica serving one request at a time (batch of 1,
// one output token, so the service time is the step time) under Poisson arrivals is an M/D/1 queue with a constant
// step time and an M/M/1 queue with exponential step times; the mean waiting time must match Pollaczek-Khinchine.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/serve/event_loop.hpp"

namespace parasol::serve {
namespace {

class ExponentialRunner final : public StepRunner {
 public:
  ExponentialRunner(double mean_s, uint64_t seed) : mean_s_(mean_s), gen_(seed) {}
  StepTiming run(int, const plan::Batch&) override {
    StepTiming t;
    t.total_s = -mean_s_ * std::log1p(-double(gen_() >> 11) * 0x1.0p-53);
    return t;
  }
  std::string name() const override { return "exponential"; }

 private:
  double mean_s_;
  std::mt19937_64 gen_;
};

double mean_wait(StepRunner& runner, double rate, int64_t n, uint64_t seed) {
  WorkloadSpec w;
  w.arrival.rate_per_s = rate;
  w.input = fixed_length(64);
  w.output = fixed_length(1);
  w.max_requests = n;
  auto src = make_source(w, seed);
  SchedulerConfig c;
  c.policy = BatchPolicy::kPrefillFirst;
  c.max_batch_seqs = 1;
  c.kv_blocks = 16;
  std::vector<Scheduler> one;
  one.emplace_back(c, 0);
  RoundRobinRouter router;
  MetricsCollector metrics(MetricsConfig{});
  const EventLoopResult res = run_event_loop(*src, router, one, runner, metrics);
  const Summary s = metrics.finish(res.end_s);
  EXPECT_EQ(s.completed, n);
  return s.queueing_s.mean;
}

TEST(ServeQueue, MD1MeanWaitMatchesPollaczekKhinchine) {
  const double service_s = 0.01;
  for (double rho : {0.5, 0.8}) {
    LinearStepRunner runner(service_s, 0, 0);
    const double want = rho * service_s / (2 * (1 - rho));
    EXPECT_NEAR(mean_wait(runner, rho / service_s, 400000, 1), want, 0.03 * want) << "rho " << rho;
  }
}

TEST(ServeQueue, MM1MeanWaitMatchesPollaczekKhinchine) {
  const double service_s = 0.01;
  for (double rho : {0.5, 0.8}) {
    ExponentialRunner runner(service_s, 99);
    const double want = rho * service_s / (1 - rho);  // ρ / (μ - λ)
    EXPECT_NEAR(mean_wait(runner, rho / service_s, 400000, 1), want, 0.03 * want) << "rho " << rho;
  }
}

}  // namespace
}  // namespace parasol::serve

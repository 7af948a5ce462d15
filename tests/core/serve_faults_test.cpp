// Replica failures in the serving loop: nothing is lost. Over 120 random seeded failure schedules on small fleets
// (random MTBF / MTTR, detection delays, retry budgets, explicit failures): every request ends exactly once —
// completed, rejected, or failed with the reason — and every KV block is free at the end. Closed forms: one replica of
// four fails at t with no retries and no detection delay: exactly the requests it held at t fail (the fault-free run
// says which: those it served that arrived by t and had not finished); with retries every request completes and the
// prefill the retries redo equals the prefill lost with the replica.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "core/serve/serving_loop.hpp"
#include "tests/sim/list_source.hpp"

namespace parasol::serve {
namespace {

struct Served {
  std::vector<RequestRecord> records;
  LoopResult result;
  int64_t kv_used = 0;
  int64_t prefill_tokens = 0;  // computed, over all replicas
};

std::vector<Request> workload(int n, double rate, uint64_t seed, int64_t max_out = 60) {
  std::vector<Request> out;
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + 1;
  auto next = [&] {
    z ^= z << 13, z ^= z >> 7, z ^= z << 17;
    return double(z >> 11) / 9007199254740992.0;
  };
  double t = 0;
  for (int i = 0; i < n; ++i) {
    t += -std::log(1 - next()) / rate;
    out.push_back(testing::make_request(i, t, 50 + int64_t(next() * 400), 1 + int64_t(next() * double(max_out))));
  }
  return out;
}

Served serve(const std::vector<Request>& reqs, int replicas, const FaultPolicy& faults, const std::string& router_name,
          int64_t kv_blocks = 400) {
  SchedulerConfig cfg;
  cfg.kv_blocks = kv_blocks;
  cfg.max_batch_tokens = 512;
  std::vector<Scheduler> scheds;
  for (int r = 0; r < replicas; ++r) scheds.emplace_back(cfg, r);
  auto router = make_router(router_name);
  LinearStepRunner runner(2e-3, 2e-5, 1e-4);
  testing::ListSource src(reqs);
  MetricsCollector metrics(MetricsConfig{});
  Served run;
  LoopPool pool;
  for (auto& s : scheds) pool.schedulers.push_back(&s);
  pool.router = router.get();
  pool.runner = &runner;
  LoopOptions o;
  o.faults = faults;
  o.on_record = [&](const RequestRecord& r) { run.records.push_back(r); };
  ServingLoop loop({pool}, src, metrics, o);
  ManualHost host;
  run.result = loop.run(host);
  for (auto& s : scheds) {
    run.kv_used += s.kv_used_blocks();
    run.prefill_tokens += s.stats().prefill_tokens;
  }
  return run;
}

TEST(ServeFaults, RandomFailureSchedulesLoseNoRequestAndFreeEveryBlock) {
  int64_t failures = 0, failed = 0, retried = 0;
  for (uint64_t seed = 1; seed <= 120; ++seed) {
    const int replicas = 2 + int(seed % 4);
    const std::vector<Request> reqs = workload(150, 40.0 * replicas / 4, seed);
    FaultPolicy f;
    f.mtbf_s = 0.5 + double(seed % 7);
    f.mttr_s = 0.2 + 0.1 * double(seed % 5);
    f.detect_s = 0.05 * double(seed % 3);
    f.retries = int(seed % 3);
    f.backoff_s = 0.01 * double(seed % 4);
    f.seed = seed;
    if (seed % 5 == 0) f.events.push_back({1.0, 0, seed % 2 ? 0.5 : std::numeric_limits<double>::infinity()});
    const Served run = serve(reqs, replicas, f, seed % 2 ? "round_robin" : "least_outstanding_tokens");
    std::map<int64_t, int> seen;
    for (const RequestRecord& r : run.records) {
      ++seen[r.id];
      if (r.outcome == Outcome::kFailed) {
        EXPECT_FALSE(r.reason.empty()) << "seed " << seed;
      }
      if (r.outcome == Outcome::kCompleted) {
        EXPECT_EQ(r.generated_tokens, r.output_tokens) << "seed " << seed;
      }
      EXPECT_LE(r.retries, f.retries) << "seed " << seed;
    }
    ASSERT_EQ(seen.size(), reqs.size()) << "seed " << seed;
    for (const auto& [id, n] : seen) ASSERT_EQ(n, 1) << "seed " << seed << " request " << id;
    EXPECT_EQ(run.kv_used, 0) << "seed " << seed;
    failures += run.result.failures;
    failed += run.result.failed_requests;
    retried += run.result.retried;
  }
  EXPECT_GT(failures, 100);  // the schedules really failed replicas
  EXPECT_GT(failed, 0);
  EXPECT_GT(retried, 0);
}

TEST(ServeFaults, WithoutRetriesExactlyTheRequestsTheReplicaHeldFail) {
  const std::vector<Request> reqs = workload(600, 100, 42, 400);
  const Served clean = serve(reqs, 4, FaultPolicy{}, "round_robin");
  const double t = 1.5;
  const int victim = 1;
  std::set<int64_t> held;  // served by the victim, arrived by t, not finished by t
  for (const RequestRecord& r : clean.records)
    if (r.replica == victim && r.arrival_s <= t && r.finish_s > t) held.insert(r.id);
  ASSERT_GT(held.size(), 3u);
  FaultPolicy f;
  f.events.push_back({t, victim});
  const Served faulty = serve(reqs, 4, f, "round_robin");
  std::set<int64_t> failed;
  for (const RequestRecord& r : faulty.records)
    if (r.outcome == Outcome::kFailed) failed.insert(r.id);
  EXPECT_EQ(failed, held);
  EXPECT_EQ(faulty.result.failed_requests, static_cast<int64_t>(held.size()));
  EXPECT_EQ(faulty.kv_used, 0);
}

TEST(ServeFaults, WithRetriesEveryRequestCompletesAndTheLostPrefillIsRedone) {
  const std::vector<Request> reqs = workload(400, 60, 7);
  int64_t inputs = 0;
  for (const Request& r : reqs) inputs += r.input_tokens;
  FaultPolicy f;
  f.events.push_back({2.0, 1, 1.0});
  f.events.push_back({3.5, 2, 0.5});
  f.detect_s = 0.1;
  f.retries = 2;
  f.backoff_s = 0.05;
  const Served run = serve(reqs, 4, f, "least_outstanding_tokens", 100000);
  int64_t completed = 0, retried = 0;
  for (const RequestRecord& r : run.records) {
    completed += r.outcome == Outcome::kCompleted ? 1 : 0;
    retried += r.retries > 0 ? 1 : 0;
  }
  EXPECT_EQ(completed, static_cast<int64_t>(reqs.size()));
  EXPECT_EQ(retried, run.result.retried);
  EXPECT_GT(run.result.lost_prefill_tokens, 0);
  // No preemption (a large KV cache) and no prefix cache: every prompt once, plus what the failures lost.
  EXPECT_EQ(run.prefill_tokens, inputs + run.result.lost_prefill_tokens);
  EXPECT_EQ(run.kv_used, 0);
}

}  // namespace
}  // namespace parasol::serve

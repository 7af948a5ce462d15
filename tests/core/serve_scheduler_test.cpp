// Scheduler properties: closed-form latencies of a lone request, token budget and batch limits, preemption under KV
// pressure, swap, rejection, prefix caching, disaggregated handoff, pipeline micro-batches and failures.
#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <set>

#include "core/common/error.hpp"
#include "core/serve/event_loop.hpp"
#include "core/serve/scheduler.hpp"
#include "tests/sim/list_source.hpp"

namespace parasol::serve {
namespace {

using parasol::testing::make_request;

SchedulerConfig config(BatchPolicy p, int64_t kv_blocks, int64_t budget = 8192, int64_t seqs = 256) {
  SchedulerConfig c;
  c.policy = p;
  c.kv_blocks = kv_blocks;
  c.kv_block_tokens = 16;
  c.max_batch_tokens = budget;
  c.max_batch_seqs = seqs;
  return c;
}

// Drives one scheduler alone with a runner, on a manual clock, until it is idle; returns the finished records.
std::vector<RequestRecord> drain(Scheduler& s, StepRunner& runner, double& now, int64_t* iterations = nullptr) {
  std::vector<RequestRecord> out;
  StepEvents ev;
  while (auto it = s.schedule(now)) {
    now += runner.run(0, it->batch).total_s;
    ev.clear();
    s.complete(*it, now, ev);
    for (auto& r : ev.finished) out.push_back(r);
    if (iterations) ++*iterations;
  }
  return out;
}

class RecordingRunner final : public StepRunner {
 public:
  RecordingRunner(int64_t budget, int64_t seqs) : budget_(budget), seqs_(seqs) {}
  StepTiming run(int, const plan::Batch& b) override {
    max_tokens = std::max(max_tokens, b.tokens());
    max_seqs = std::max<int64_t>(max_seqs, int64_t(b.seqs.size()));
    over_budget += b.tokens() > budget_;
    over_seqs += int64_t(b.seqs.size()) > seqs_;
    StepTiming t;
    t.total_s = 1e-3 + 1e-6 * double(b.tokens());
    return t;
  }
  std::string name() const override { return "recording"; }
  int64_t budget_, seqs_;
  int64_t max_tokens = 0, max_seqs = 0, over_budget = 0, over_seqs = 0;
};

TEST(ServeScheduler, LoneRequestTtftIsPrefillStepAndE2eAddsDecodeSteps) {
  for (BatchPolicy p : {BatchPolicy::kChunked, BatchPolicy::kPrefillFirst}) {
    const double base = 0.01, per_token = 1e-4, per_seq = 2e-3;
    LinearStepRunner runner(base, per_token, per_seq);
    Scheduler s(config(p, 1000), 0);
    const double t0 = 5.0;
    ASSERT_FALSE(s.add(make_request(7, t0, 1000, 50), t0));
    double now = t0;
    auto recs = drain(s, runner, now);
    ASSERT_EQ(recs.size(), 1u);
    const RequestRecord& r = recs[0];
    const double prefill = base + 1000 * per_token;
    const double decode = base + per_seq;
    EXPECT_NEAR(r.ttft_s(), prefill, 1e-12);
    EXPECT_NEAR(r.e2e_s(), prefill + 49 * decode, 1e-9);
    EXPECT_NEAR(r.tpot_s(), decode, 1e-12);
    EXPECT_EQ(r.itl_count, 49);
    EXPECT_NEAR(r.itl_max_s, decode, 1e-12);
    EXPECT_EQ(r.queueing_s(), 0.0);
    EXPECT_EQ(r.generated_tokens, 50);
    EXPECT_EQ(s.kv().used_blocks(), 0);
    EXPECT_TRUE(s.idle());
    EXPECT_EQ(s.outstanding_tokens(), 0);
  }
}

TEST(ServeScheduler, ChunkedPrefillOfALoneRequestTakesCeilInputOverBudgetSteps) {
  const double base = 0.01, per_token = 1e-4, per_seq = 2e-3;
  LinearStepRunner runner(base, per_token, per_seq);
  Scheduler s(config(BatchPolicy::kChunked, 1000, /*budget=*/256), 0);
  ASSERT_FALSE(s.add(make_request(0, 0, 1000, 3), 0));
  double now = 0;
  int64_t iterations = 0;
  auto recs = drain(s, runner, now, &iterations);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(iterations, 4 + 2);  // ceil(1000/256) prefill chunks, then 2 decodes
  EXPECT_NEAR(recs[0].ttft_s(), 4 * base + 1000 * per_token, 1e-12);
}

TEST(ServeScheduler, EveryBatchRespectsTokenBudgetAndSeqLimit) {
  const int64_t budget = 512, seqs = 16;
  RecordingRunner runner(budget, seqs);
  Scheduler s(config(BatchPolicy::kChunked, 4000, budget, seqs), 0);
  for (int i = 0; i < 200; ++i) ASSERT_FALSE(s.add(make_request(i, 0, 50 + 37 * (i % 29), 1 + (i * 7) % 40), 0));
  double now = 0;
  auto recs = drain(s, runner, now);
  EXPECT_EQ(recs.size(), 200u);
  EXPECT_EQ(runner.over_budget, 0);
  EXPECT_EQ(runner.over_seqs, 0);
  EXPECT_EQ(runner.max_tokens, budget);  // the budget is actually filled
  EXPECT_EQ(runner.max_seqs, seqs);
}

TEST(ServeScheduler, PrefillFirstRunsWholePromptsAndALoneOversizedOne) {
  RecordingRunner runner(1000, 256);
  Scheduler s(config(BatchPolicy::kPrefillFirst, 4000, 1000), 0);
  ASSERT_FALSE(s.add(make_request(0, 0, 600, 2), 0));
  ASSERT_FALSE(s.add(make_request(1, 0, 600, 2), 0));
  ASSERT_FALSE(s.add(make_request(2, 0, 3000, 2), 0));  // over the budget: runs alone
  double now = 0;
  StepEvents ev;
  std::vector<int64_t> prefill_batches;
  while (auto it = s.schedule(now)) {
    if (it->prefill_tokens) {
      EXPECT_EQ(it->decode_tokens, 0);  // prefill-first never mixes
      prefill_batches.push_back(it->prefill_tokens);
    }
    now += runner.run(0, it->batch).total_s;
    ev.clear();
    s.complete(*it, now, ev);
  }
  EXPECT_EQ(prefill_batches, (std::vector<int64_t>{600, 600, 3000}));
}

TEST(ServeScheduler, PreemptionUnderKvPressureStillCompletesEveryRequest) {
  for (PreemptionMode mode : {PreemptionMode::kRecompute, PreemptionMode::kSwap}) {
    SchedulerConfig c = config(BatchPolicy::kChunked, /*kv_blocks=*/200, 2048, 64);
    c.preemption = mode;
    c.swap_blocks = 1000;
    Scheduler s(c, 0);
    LinearStepRunner runner(1e-3, 1e-6, 1e-5);
    int64_t expected_tokens = 0;
    for (int i = 0; i < 60; ++i) {
      const int64_t out = 100 + (i * 13) % 300;  // long decodes: KV grows after admission
      expected_tokens += out;
      ASSERT_FALSE(s.add(make_request(i, 0, 200 + (i * 31) % 400, out), 0));
    }
    double now = 0;
    auto recs = drain(s, runner, now);
    ASSERT_EQ(recs.size(), 60u);
    int64_t generated = 0, preemptions = 0;
    std::set<int64_t> ids;
    for (const auto& r : recs) {
      EXPECT_EQ(r.generated_tokens, r.output_tokens);
      EXPECT_EQ(r.outcome, Outcome::kCompleted);
      generated += r.generated_tokens;
      preemptions += r.preemptions;
      ids.insert(r.id);
    }
    EXPECT_EQ(ids.size(), 60u);
    EXPECT_EQ(generated, expected_tokens);
    EXPECT_GT(preemptions, 0) << to_string(mode);
    EXPECT_EQ(preemptions, s.stats().preemptions);
    EXPECT_EQ(s.kv().used_blocks(), 0);
    EXPECT_EQ(s.stats().swapped_in_blocks, s.stats().swapped_out_blocks);
    if (mode == PreemptionMode::kSwap) EXPECT_GT(s.stats().swapped_out_blocks, 0);
    else EXPECT_EQ(s.stats().swapped_out_blocks, 0);
  }
}

TEST(ServeScheduler, RequestThatCanNeverFitIsRejectedWithReason) {
  Scheduler s(config(BatchPolicy::kChunked, 10), 0);  // 160 tokens of KV
  auto rej = s.add(make_request(1, 0, 150, 20), 0);   // needs 169 tokens at the end
  ASSERT_TRUE(rej);
  EXPECT_EQ(rej->outcome, Outcome::kRejected);
  EXPECT_NE(rej->reason.find("KV blocks"), std::string::npos);
  EXPECT_FALSE(s.add(make_request(2, 0, 150, 11), 0));  // exactly 160 tokens: fits
  EXPECT_TRUE(s.add(make_request(3, 0, 0, 5), 0));      // empty prompt
  LinearStepRunner runner(1e-3, 0, 0);
  double now = 0;
  EXPECT_EQ(drain(s, runner, now).size(), 1u);
}

TEST(ServeScheduler, PrefixCacheHitsSharedPromptBlocks) {
  SchedulerConfig c = config(BatchPolicy::kChunked, 10000);
  c.prefix_caching = true;
  Scheduler s(c, 0);
  LinearStepRunner runner(1e-3, 1e-6, 1e-5);
  double now = 0;
  // 3 full units + a partial one; the second request shares the first two units, then diverges.
  ASSERT_FALSE(s.add(make_request(0, 0, 1800, 4, {1, 2, 3, 4}), 0));
  drain(s, runner, now);
  ASSERT_FALSE(s.add(make_request(1, now, 1700, 4, {1, 2, 9, 10}), now));
  auto recs = drain(s, runner, now);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].prefix_hit_tokens, 2 * kPrefixHashTokens);
  // A prompt of exactly 3 units whose units are all cached recomputes its last unit (one token must be computed).
  ASSERT_FALSE(s.add(make_request(2, now, 3 * kPrefixHashTokens, 2, {1, 2, 3}), now));
  recs = drain(s, runner, now);
  EXPECT_EQ(recs[0].prefix_hit_tokens, 2 * kPrefixHashTokens);
  EXPECT_EQ(s.kv().used_blocks(), 0);
  EXPECT_GT(s.kv().cached_blocks(), 0);
  EXPECT_EQ(s.kv().free_blocks(), s.kv().total_blocks());
  EXPECT_EQ(s.stats().prefix_hit_tokens, 4 * kPrefixHashTokens);
}

TEST(ServeScheduler, CachedBlocksAreEvictedWhenKvIsNeeded) {
  SchedulerConfig c = config(BatchPolicy::kChunked, 200);  // 3200 tokens
  c.prefix_caching = true;
  Scheduler s(c, 0);
  LinearStepRunner runner(1e-3, 1e-6, 1e-5);
  double now = 0;
  ASSERT_FALSE(s.add(make_request(0, 0, 2048, 2, {1, 2, 3, 4}), 0));
  drain(s, runner, now);
  EXPECT_EQ(s.kv().cached_blocks(), 4 * 32);
  ASSERT_FALSE(s.add(make_request(1, now, 3000, 2, {5, 6, 7, 8, 9, 10}), now));  // needs evictions
  auto recs = drain(s, runner, now);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].prefix_hit_tokens, 0);
  EXPECT_EQ(s.kv().used_blocks(), 0);
}

TEST(ServeScheduler, DisaggregatedHandoffDecodesOnTheOtherSide) {
  SchedulerConfig pc = config(BatchPolicy::kChunked, 1000);
  pc.role = SchedulerRole::kPrefill;
  SchedulerConfig dc = config(BatchPolicy::kChunked, 1000);
  dc.role = SchedulerRole::kDecode;
  Scheduler prefill(pc, 0), decode(dc, 1);
  LinearStepRunner runner(0.01, 1e-4, 2e-3);
  double now = 0;
  ASSERT_FALSE(prefill.add(make_request(0, 0, 1000, 10), 0));
  ASSERT_FALSE(prefill.add(make_request(1, 0, 500, 1), 0));  // one token: finishes on the prefill side
  auto it = prefill.schedule(now);
  ASSERT_TRUE(it);
  now += runner.run(0, it->batch).total_s;
  StepEvents ev;
  prefill.complete(*it, now, ev);
  ASSERT_EQ(ev.handoffs.size(), 1u);
  ASSERT_EQ(ev.finished.size(), 1u);
  EXPECT_EQ(ev.finished[0].id, 1);
  EXPECT_EQ(ev.handoffs[0].kv_tokens, 1000);
  EXPECT_TRUE(prefill.idle());
  EXPECT_EQ(prefill.kv().used_blocks(), 0);
  const double transfer_s = 0.05;
  now += transfer_s;
  ASSERT_FALSE(decode.add_prefilled(std::move(ev.handoffs[0]), now));
  auto recs = drain(decode, runner, now);
  ASSERT_EQ(recs.size(), 1u);
  const RequestRecord& r = recs[0];
  EXPECT_EQ(r.generated_tokens, 10);
  EXPECT_EQ(r.prefill_replica, 0);
  EXPECT_EQ(r.replica, 1);
  // first_token_at_decode (the default): the first token is delivered when the idle decode replica starts on it,
  // right when its KV arrived.
  const double prefill_s = 0.01 + 1500 * 1e-4;
  EXPECT_NEAR(r.ttft_s(), prefill_s + transfer_s, 1e-12);
  EXPECT_NEAR(r.e2e_s(), prefill_s + transfer_s + 9 * (0.01 + 2e-3), 1e-9);
  EXPECT_EQ(decode.kv().used_blocks(), 0);
}

TEST(ServeScheduler, PipelineMicroBatchesHoldDisjointSequences) {
  Scheduler s(config(BatchPolicy::kChunked, 4000, 256, 8), 0);
  for (int i = 0; i < 20; ++i) ASSERT_FALSE(s.add(make_request(i, 0, 100, 5), 0));
  auto a = s.schedule(0);
  auto b = s.schedule(0);
  ASSERT_TRUE(a && b);
  std::set<int64_t> ids;
  for (const auto& w : a->batch.seqs) ids.insert(w.seq_id);
  for (const auto& w : b->batch.seqs) EXPECT_FALSE(ids.count(w.seq_id)) << w.seq_id;
  StepEvents ev;
  EXPECT_THROW(s.complete(*b, 1, ev), Error);  // out of order
  s.complete(*a, 1, ev);
  s.complete(*b, 2, ev);
  EXPECT_EQ(s.in_flight(), 0);
}

// Pipeline micro-batches: a sequence runs in the micro-batch that admitted it; the micro-batches in flight each hold
// their share; max_batch_seqs bounds each micro-batch's running sequences.
TEST(ServeScheduler, EachMicroBatchKeepsItsOwnSequences) {
  SchedulerConfig cfg = config(BatchPolicy::kChunked, 4000, 1000, 6);
  cfg.micro_batches = 2;
  Scheduler s(cfg, 0);
  for (int i = 0; i < 20; ++i) ASSERT_FALSE(s.add(make_request(i, 0, 100, 50), 0));
  auto a = s.schedule(0);
  auto b = s.schedule(0);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(s.schedule(0)) << "both micro-batches are in flight";
  EXPECT_EQ(a->lane, 0);
  EXPECT_EQ(b->lane, 1);
  std::set<int64_t> lane0, lane1;
  for (const auto& w : a->batch.seqs) lane0.insert(w.seq_id);
  for (const auto& w : b->batch.seqs) lane1.insert(w.seq_id);
  EXPECT_EQ(lane0.size(), 6u);  // 6 x 100 tokens fit the 1000-token budget; 6 running is the cap
  EXPECT_EQ(lane1.size(), 6u);
  for (int64_t id : lane1) EXPECT_FALSE(lane0.count(id)) << id;
  StepEvents ev;
  std::deque<Iteration> in_flight{*a, *b};
  for (int round = 0; round < 6; ++round) {  // decodes: each micro-batch runs exactly its own six
    s.complete(in_flight.front(), 1 + round, ev);
    in_flight.pop_front();
    auto next = s.schedule(1 + round);
    ASSERT_TRUE(next);
    EXPECT_EQ(next->lane, round % 2);
    std::set<int64_t> ids;
    for (const auto& w : next->batch.seqs) ids.insert(w.seq_id);
    EXPECT_EQ(ids, next->lane == 0 ? lane0 : lane1) << "round " << round;
    EXPECT_EQ(next->decode_tokens, 6);
    in_flight.push_back(*next);
  }
}

TEST(ServeScheduler, FailAllReportsEveryRequestAndFreesKv) {
  Scheduler s(config(BatchPolicy::kChunked, 4000, 256, 8), 0);
  for (int i = 0; i < 20; ++i) ASSERT_FALSE(s.add(make_request(i, 0, 100, 5), 0));
  auto it = s.schedule(0);
  std::vector<RequestRecord> failed;
  s.fail_all(0.5, "gpu 3 failed", failed);
  EXPECT_EQ(failed.size(), 20u);
  for (const auto& r : failed) {
    EXPECT_EQ(r.outcome, Outcome::kFailed);
    EXPECT_EQ(r.reason, "gpu 3 failed");
  }
  StepEvents ev;
  s.complete(*it, 1.0, ev);  // voided: no effect
  EXPECT_TRUE(ev.finished.empty());
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.kv().used_blocks(), 0);
}

}  // namespace
}  // namespace parasol::serve

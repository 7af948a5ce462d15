// Attention data-parallelism in the scheduler: every attention-DP group has its own KV pool (kv_blocks each), its own
// FCFS queue and its own preemption order; a request joins the group with the least outstanding tokens (lowest index
// on ties) for its whole life, and build_step sees each group's own sequences (SeqWork::attn_group). Properties:
// conservation (every request completes, every group's blocks free at the end), a request admitted into a group with
// free blocks while another group's earlier head waits for KV, the group policy, determinism.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "core/serve/scheduler.hpp"

namespace parasol::serve {
namespace {

Request req(int64_t id, int64_t in, int64_t out) {
  Request r;
  r.id = id;
  r.input_tokens = in;
  r.output_tokens = out;
  return r;
}

// Runs the scheduler to completion on a fixed step time; returns the records in completion order.
std::vector<RequestRecord> drain(Scheduler& s, double& now, std::map<int64_t, int>* group_of = nullptr) {
  std::vector<RequestRecord> done;
  StepEvents ev;
  Iteration it;
  while (s.schedule(now, it)) {
    for (const auto& w : it.batch.seqs) {
      EXPECT_GE(w.attn_group, 0);
      EXPECT_LT(w.attn_group, s.groups());
      if (group_of) {
        auto [pos, fresh] = group_of->emplace(w.seq_id, w.attn_group);
        EXPECT_EQ(pos->second, w.attn_group) << "seq " << w.seq_id << " changed group";
      }
    }
    now += 1e-3;
    ev.clear();
    s.complete(it, now, ev);
    done.insert(done.end(), ev.finished.begin(), ev.finished.end());
  }
  return done;
}

// Many requests, KV per group far smaller than the load (preemption by recompute happens): every request completes
// with all its tokens, each sequence stays in one group, and every group's pool is empty at the end.
TEST(ServeAttnDp, ConservesRequestsAndFreesEveryGroupsBlocks) {
  SchedulerConfig c;
  c.kv_blocks = 64;
  c.kv_block_tokens = 16;
  c.attn_dp = 4;
  c.max_batch_tokens = 2048;
  Scheduler s(c, 0);
  std::mt19937_64 rng(3);
  int64_t tokens = 0;
  for (int64_t id = 0; id < 200; ++id) {
    const int64_t in = 16 + int64_t(rng() % 400), out = 1 + int64_t(rng() % 200);
    tokens += out;
    ASSERT_FALSE(s.add(req(id, in, out), 0.0));
  }
  double now = 0;
  std::map<int64_t, int> group_of;
  const auto done = drain(s, now, &group_of);
  ASSERT_EQ(done.size(), 200u);
  int64_t generated = 0;
  for (const auto& r : done) {
    EXPECT_EQ(r.outcome, Outcome::kCompleted);
    EXPECT_EQ(r.generated_tokens, r.output_tokens);
    generated += r.generated_tokens;
  }
  EXPECT_EQ(generated, tokens);
  EXPECT_GT(s.stats().preemptions, 0);  // the pools were under pressure
  EXPECT_TRUE(s.idle());
  for (int g = 0; g < 4; ++g) {
    EXPECT_EQ(s.kv(g).used_blocks(), 0) << "group " << g;
    EXPECT_EQ(s.kv(g).total_blocks(), 64);
    EXPECT_EQ(s.outstanding_tokens(g), 0);
  }
  EXPECT_EQ(s.kv_total_blocks(), 4 * 64);
  std::map<int, int> per_group;
  for (const auto& [id, g] : group_of) ++per_group[g];
  EXPECT_EQ(per_group.size(), 4u);
}

// Group 0 is nearly full and its queue head needs more blocks than it has; group 1 has room. The later request of
// group 1 is admitted in the same iteration instead of waiting behind group 0's head.
TEST(ServeAttnDp, AGroupWithFreeBlocksAdmitsWhileAFullGroupsHeadWaits) {
  SchedulerConfig c;
  c.policy = BatchPolicy::kPrefillFirst;
  c.kv_blocks = 8;  // 128 tokens per group
  c.kv_block_tokens = 16;
  c.attn_dp = 2;
  Scheduler s(c, 0);
  ASSERT_FALSE(s.add(req(0, 100, 10), 0.0));  // tie -> group 0
  ASSERT_FALSE(s.add(req(1, 20, 10), 0.0));   // group 1 (0 outstanding tokens < 110)
  StepEvents ev;
  auto it = s.schedule(0.0);
  ASSERT_TRUE(it);
  ASSERT_EQ(it->batch.seqs.size(), 2u);
  EXPECT_EQ(it->batch.seqs[0].attn_group, 0);
  EXPECT_EQ(it->batch.seqs[1].attn_group, 1);
  s.complete(*it, 1.0, ev);
  EXPECT_EQ(s.kv(0).used_blocks(), 7);  // the 100-token prompt
  // Both groups now have 9 tokens to generate: a tie, so request 2 goes to group 0 (1 free block; it needs 4).
  ASSERT_FALSE(s.add(req(2, 60, 5), 1.0));
  ASSERT_FALSE(s.add(req(3, 30, 5), 1.0));  // group 1: 9 outstanding tokens < 9 + 65
  EXPECT_EQ(s.outstanding_tokens(0), 9 + 65);
  EXPECT_EQ(s.outstanding_tokens(1), 9 + 35);
  it = s.schedule(1.0);
  ASSERT_TRUE(it);
  ASSERT_EQ(it->batch.seqs.size(), 1u);  // prefill-first: request 3's prompt alone, request 2 still waiting
  EXPECT_EQ(it->batch.seqs[0].seq_id, 3);
  EXPECT_EQ(it->batch.seqs[0].attn_group, 1);
  EXPECT_EQ(s.waiting(), 1);
  s.complete(*it, 2.0, ev);
  double now = 2.0;
  const auto done = drain(s, now);
  EXPECT_EQ(done.size(), 4u);
  EXPECT_EQ(s.kv(0).used_blocks(), 0);
  EXPECT_EQ(s.kv(1).used_blocks(), 0);
}

// A request joins the group with the least outstanding tokens, the lowest index on ties, and keeps it.
TEST(ServeAttnDp, RequestsJoinTheGroupWithLeastOutstandingTokens) {
  SchedulerConfig c;
  c.kv_blocks = 4096;
  c.attn_dp = 3;
  Scheduler s(c, 0);
  ASSERT_FALSE(s.add(req(0, 100, 100), 0.0));  // all 0 -> group 0 (200)
  ASSERT_FALSE(s.add(req(1, 50, 50), 0.0));    // group 1 (100)
  ASSERT_FALSE(s.add(req(2, 10, 10), 0.0));    // group 2 (20)
  ASSERT_FALSE(s.add(req(3, 70, 10), 0.0));    // group 2 (100)
  ASSERT_FALSE(s.add(req(4, 1, 1), 0.0));      // groups 1 and 2 tie at 100 -> group 1
  EXPECT_EQ(s.outstanding_tokens(0), 200);
  EXPECT_EQ(s.outstanding_tokens(1), 102);
  EXPECT_EQ(s.outstanding_tokens(2), 100);
  EXPECT_EQ(s.outstanding_tokens(), 402);
  auto it = s.schedule(0.0);
  ASSERT_TRUE(it);
  std::map<int64_t, int> g;
  for (const auto& w : it->batch.seqs) g[w.seq_id] = w.attn_group;
  EXPECT_EQ(g, (std::map<int64_t, int>{{0, 0}, {1, 1}, {2, 2}, {3, 2}, {4, 1}}));
}

// Same requests, same decisions: two schedulers give identical records.
TEST(ServeAttnDp, IsDeterministic) {
  auto run = [] {
    SchedulerConfig c;
    c.kv_blocks = 48;
    c.attn_dp = 3;
    c.max_batch_tokens = 1024;
    Scheduler s(c, 0);
    std::mt19937_64 rng(9);
    for (int64_t id = 0; id < 60; ++id) s.add(req(id, 8 + int64_t(rng() % 300), 1 + int64_t(rng() % 100)), 0.0);
    double now = 0;
    std::vector<std::tuple<int64_t, double, double, int32_t>> out;
    for (const auto& r : drain(s, now)) out.emplace_back(r.id, r.first_token_s, r.finish_s, r.preemptions);
    return out;
  };
  const auto a = run(), b = run();
  EXPECT_EQ(a.size(), 60u);
  EXPECT_EQ(a, b);
}

TEST(ServeAttnDp, WithoutAttentionDpEverySequenceIsInGroupZero) {
  SchedulerConfig c;
  c.kv_blocks = 1024;
  Scheduler s(c, 0);
  for (int64_t id = 0; id < 5; ++id) ASSERT_FALSE(s.add(req(id, 8, 1), 0.0));
  auto it = s.schedule(0.0);
  ASSERT_TRUE(it);
  for (const auto& w : it->batch.seqs) EXPECT_EQ(w.attn_group, 0);
  EXPECT_EQ(s.groups(), 1);
}

}  // namespace
}  // namespace parasol::serve

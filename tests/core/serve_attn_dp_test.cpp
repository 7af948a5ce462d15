// Attention data-parallelism in the scheduler: each sequence is served by attention group id % attn_dp (the rule the
// executor uses too), so build_step sees every group's own sequences and the step is costed for the real split.
#include <gtest/gtest.h>

#include <map>

#include "core/serve/scheduler.hpp"

namespace parasol::serve {
namespace {

TEST(ServeAttnDp, EverySequenceIsServedByGroupIdModAttnDpThroughoutItsLife) {
  SchedulerConfig c;
  c.kv_blocks = 4096;
  c.kv_block_tokens = 16;
  c.attn_dp = 4;
  Scheduler s(c, 0);
  for (int64_t id = 0; id < 10; ++id) {
    Request r;
    r.id = id;
    r.arrival_s = 0;
    r.input_tokens = 32 + id;
    r.output_tokens = 3;
    ASSERT_FALSE(s.add(r, 0.0));
  }
  std::map<int, int> per_group;
  double now = 0;
  StepEvents ev;
  int iterations = 0;
  while (auto it = s.schedule(now)) {
    for (const auto& w : it->batch.seqs) {
      EXPECT_EQ(w.attn_group, static_cast<int>(w.seq_id % 4)) << "seq " << w.seq_id;
      ++per_group[w.attn_group];
    }
    now += 1e-3;
    ev.clear();
    s.complete(*it, now, ev);
    ++iterations;
  }
  EXPECT_TRUE(s.idle());
  ASSERT_EQ(per_group.size(), 4u);  // ids 0..9 cover all four groups
  EXPECT_GT(iterations, 0);
}

TEST(ServeAttnDp, WithoutAttentionDpEverySequenceIsInGroupZero) {
  SchedulerConfig c;
  c.kv_blocks = 1024;
  Scheduler s(c, 0);
  for (int64_t id = 0; id < 5; ++id) {
    Request r;
    r.id = id;
    r.input_tokens = 8;
    r.output_tokens = 1;
    ASSERT_FALSE(s.add(r, 0.0));
  }
  auto it = s.schedule(0.0);
  ASSERT_TRUE(it);
  for (const auto& w : it->batch.seqs) EXPECT_EQ(w.attn_group, 0);
}

}  // namespace
}  // namespace parasol::serve

// build_step: closed forms (GEMM FLOPs = 2 x params x tokens, the causal attention FLOPs), sharded == unsharded,
// conservation of MoE tokens and all-to-all bytes, program structure for PP / attention-DP / MLA, determinism.
#include <gtest/gtest.h>

#include <numeric>

#include "core/common/error.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "plan_fixtures.hpp"

namespace parasol::plan {
namespace {

using testing::shipped_gpu;
using testing::shipped_model;
using testing::test_cluster;

Plan plan_for(const spec::Model& m, ParallelConfig c, int nodes = 1, Routing routing = {}) {
  PlanOptions o;
  o.routing = routing;
  o.min_kv_tokens = 0;
  auto made = make_plan(m, test_cluster(shipped_gpu("h200-sxm"), nodes, 8), "", c, o);
  return made.plan;  // structure only: tests that need feasibility check it themselves
}

Batch mixed_batch() {
  Batch b;
  b.seqs.push_back({0, 512, 0, 0, true});     // prefill from scratch
  b.seqs.push_back({1, 256, 1024, 0, false});  // a chunk over existing context, not the last
  for (int i = 0; i < 6; ++i) b.seqs.push_back({2 + i, 1, 300 + 100 * i, 0, true});  // decodes
  return b;
}

double attention_keys(const Batch& b) {
  double k = 0;
  for (const auto& s : b.seqs) k += double(s.new_tokens) * s.context + double(s.new_tokens) * (s.new_tokens + 1) / 2;
  return k;
}

double sum_flops(const Step& s, OpKind kind) {
  double f = 0;
  for (const auto& r : s.ranks)
    for (const auto& o : r.ops)
      if (o.kind == kind) f += o.flops;
  return f;
}

TEST(PlanStep, DenseGemmFlopsAreTwiceParamsTimesTokensAndAttentionMatchesClosedForm) {
  const auto m = shipped_model("llama-3.1-8b");
  const Batch b = mixed_batch();
  const Step s = build_step(plan_for(m, ParallelConfig{}), 0, b);
  ASSERT_EQ(s.ranks.size(), 1u);
  const auto p = spec::count_params(m);
  const double body = p.total - p.embedding - p.lm_head;  // norms included: < 0.01% of the total
  int64_t sampled = 0;
  for (const auto& q : b.seqs) sampled += q.sample ? 1 : 0;
  const double expected = 2.0 * body * double(b.tokens()) + 2.0 * p.lm_head * double(sampled);
  EXPECT_NEAR(gemm_flops(s), expected, 0.01 * expected);
  // Causal attention: 2 (QK) + 2 (PV) x heads x head_dim x attended (query, key) pairs, per layer.
  const double attn = 4.0 * double(m.heads * m.head_dim) * attention_keys(b) * double(m.layers);
  EXPECT_NEAR(sum_flops(s, OpKind::kAttention), attn, 1e-9 * attn);
}

TEST(PlanStep, GemmFlopsSummedOverTpRanksEqualUnsharded) {
  const auto m = shipped_model("llama-3.1-8b");
  const Batch b = mixed_batch();
  const double whole = gemm_flops(build_step(plan_for(m, ParallelConfig{}), 0, b));
  for (int tp : {2, 4, 8}) {
    ParallelConfig c;
    c.tp = tp;
    const Step s = build_step(plan_for(m, c), 0, b);
    ASSERT_EQ(static_cast<int>(s.ranks.size()), tp);
    EXPECT_NEAR(gemm_flops(s), whole, 1e-9 * whole) << tp;
    for (const auto& r : s.ranks) EXPECT_NEAR(gemm_flops(r), whole / tp, 1e-9 * whole) << tp;
  }
}

TEST(PlanStep, TpAddsOneAllReducePerRowParallelLayerOfTheTokensHiddenState) {
  const auto m = shipped_model("llama-3.1-8b");
  ParallelConfig c;
  c.tp = 4;
  const Batch b = mixed_batch();
  const Step s = build_step(plan_for(m, c), 0, b);
  for (const auto& r : s.ranks) {
    int all_reduce = 0;
    for (const auto& o : r.ops)
      if (o.kind == OpKind::kAllReduce) {
        ++all_reduce;
        EXPECT_DOUBLE_EQ(o.comm_bytes, double(b.tokens()) * m.hidden * 2);
        EXPECT_EQ(s.groups[static_cast<size_t>(o.group)].ranks, (std::vector<int>{0, 1, 2, 3}));
      }
    EXPECT_EQ(all_reduce, 2 * m.layers + 1);  // attention + MLP per layer, embedding
  }
}

TEST(PlanStep, PipelineStagesSplitLayersAndPairSendsWithRecvs) {
  const auto m = shipped_model("llama-3.1-8b");  // 32 layers
  ParallelConfig c;
  c.tp = 2, c.pp = 3;
  const Step s = build_step(plan_for(m, c), 0, mixed_batch());
  ASSERT_EQ(s.ranks.size(), 6u);
  std::vector<int> layers_seen(static_cast<size_t>(m.layers), 0);
  for (const auto& r : s.ranks) {
    for (const auto& o : r.ops) {
      if (o.layer >= 0 && o.name.ends_with("attn_norm")) ++layers_seen[static_cast<size_t>(o.layer)];
      if (o.kind == OpKind::kSend) {
        EXPECT_EQ(c.stage_of(o.peer), r.stage + 1);
        const auto& peer = s.ranks[static_cast<size_t>(o.peer)].ops.front();
        EXPECT_EQ(peer.kind, OpKind::kRecv);
        EXPECT_EQ(peer.peer, r.rank);
        EXPECT_DOUBLE_EQ(peer.comm_bytes, o.comm_bytes);
      }
    }
    EXPECT_EQ(r.ops.front().kind, r.stage == 0 ? OpKind::kEmbedding : OpKind::kRecv);
    EXPECT_EQ(r.ops.back().kind, r.stage == 2 ? OpKind::kSample : OpKind::kSend);
  }
  for (int v : layers_seen) EXPECT_EQ(v, c.tp);  // every layer on exactly one stage (tp ranks each)
}

TEST(PlanStep, MoeTokenCountsPerExpertSumToTokensTimesTopK) {
  for (const char* kind : {"uniform", "zipf"})
    for (int64_t tokens : {1, 7, 100, 4096}) {
      Routing r;
      r.kind = kind;
      r.zipf_s = 1.2;
      r.seed = 7;
      auto c = expert_token_counts(r, 256, 8, tokens, 5);
      EXPECT_EQ(std::accumulate(c.begin(), c.end(), int64_t{0}), tokens * 8) << kind << tokens;
      for (int64_t v : c) EXPECT_LE(v, tokens);
      EXPECT_EQ(c, expert_token_counts(r, 256, 8, tokens, 5));  // deterministic
    }
  Routing z;
  z.kind = "zipf";
  auto a = expert_token_counts(z, 64, 2, 1000, 0);
  z.seed = 2;
  auto b = expert_token_counts(z, 64, 2, 1000, 0);
  EXPECT_NE(a, b);  // the seed moves the hot experts
  EXPECT_GT(*std::max_element(a.begin(), a.end()), 2 * 1000 * 2 / 64);  // skewed
}

TEST(PlanStep, MoeStepConservesTokensAndAllToAllBytes) {
  const auto m = shipped_model("deepseek-v3");
  for (const char* kind : {"uniform", "zipf"}) {
    Routing routing;
    routing.kind = kind;
    ParallelConfig c;
    c.tp = 2, c.attn_dp = 4, c.ep = 8;  // all-to-all form
    Batch b;
    for (int i = 0; i < 13; ++i) b.seqs.push_back({i, i % 3 == 0 ? 40 : 1, 500 + i, i % 4, true});
    const Step s = build_step(plan_for(m, c, 1, routing), 0, b);
    const double unit = double(m.hidden) * 2;  // bf16 hidden state
    for (int64_t l = m.moe.first_k_dense; l < m.layers; l += 17) {
      int64_t routed = 0;
      double sent = 0;
      std::vector<double> recv(8, 0.0);
      for (const auto& r : s.ranks)
        for (const auto& o : r.ops) {
          if (o.layer != l) continue;
          if (o.name.ends_with("moe.experts.gate_up"))
            routed += std::accumulate(o.expert_tokens.begin(), o.expert_tokens.end(), int64_t{0});
          if (o.name.ends_with("moe.dispatch")) {
            sent += o.comm_bytes;
            for (size_t x = 0; x < 8; ++x) recv[x] += o.a2a_send_bytes[x];
          }
        }
      EXPECT_EQ(routed, b.tokens() * m.moe.top_k) << kind;
      EXPECT_NEAR(sent, double(b.tokens() * m.moe.top_k) * unit, 1e-6 * sent) << kind;
      for (const auto& r : s.ranks) {  // what a rank receives is what its experts compute
        for (const auto& o : r.ops) {
          if (o.layer == l && o.name.ends_with("moe.experts.gate_up")) {
            EXPECT_NEAR(recv[static_cast<size_t>(r.rank)], double(o.m) * unit, 1e-6 * unit + 1e-9 * recv[0]);
          }
        }
      }
    }
  }
}

TEST(PlanStep, AttentionDpGivesEachGroupOnlyItsSequences) {
  const auto m = shipped_model("deepseek-v3");
  ParallelConfig c;
  c.tp = 2, c.attn_dp = 4, c.ep = 1;  // gather form
  Batch b;
  for (int i = 0; i < 8; ++i) b.seqs.push_back({i, 1, 1000 + 10 * i, i % 4, true});
  const Step s = build_step(plan_for(m, c), 0, b);
  for (const auto& r : s.ranks) {
    const int a = c.attn_group_of(r.rank);
    bool gathered = false;
    for (const auto& o : r.ops) {
      if (o.kind == OpKind::kMlaAttention) {
        EXPECT_EQ(o.ctx_lens, (std::vector<int64_t>{1001 + 10 * a, 1001 + 10 * (a + 4)}));
        EXPECT_EQ(o.name.substr(o.name.find('.') + 1), "attn.decode");
        EXPECT_EQ(o.kv_heads, 1);
        EXPECT_EQ(o.head_dim, m.mla->kv_lora_rank + m.mla->qk_rope_head_dim);
      }
      gathered |= o.kind == OpKind::kAllGather && o.name.ends_with("moe.allgather");
    }
    EXPECT_TRUE(gathered);
  }
  Batch bad;
  bad.seqs.push_back({0, 1, 10, 4, true});
  EXPECT_THROW(build_step(plan_for(m, c), 0, bad), ConfigError);
}

TEST(PlanStep, MlaPrefillUsesExpandedForm) {
  const auto m = shipped_model("deepseek-v3");
  ParallelConfig c;
  c.tp = 8;
  Batch b;
  b.seqs.push_back({0, 128, 256, 0, true});
  const Step s = build_step(plan_for(m, c), 0, b);
  int prefill = 0, decode = 0;
  const int64_t dk = m.mla->qk_nope_head_dim + m.mla->qk_rope_head_dim;
  for (const auto& o : s.ranks[0].ops)
    if (o.kind == OpKind::kMlaAttention) {
      prefill += o.name.ends_with("attn.prefill");
      decode += o.name.ends_with("attn.decode");
      const double keys = 128.0 * 256 + 128.0 * 129 / 2;
      EXPECT_DOUBLE_EQ(o.flops, 2.0 * (m.heads / 8) * keys * double(dk + m.mla->v_head_dim));
    }
  EXPECT_EQ(prefill, m.layers);
  EXPECT_EQ(decode, 0);
}

TEST(PlanStep, BuilderReuseIsDeterministic) {
  const auto m = shipped_model("mixtral-8x7b");
  ParallelConfig c;
  c.tp = 4, c.ep = 4;
  Routing z;
  z.kind = "zipf";
  const Plan p = plan_for(m, c, 1, z);
  StepBuilder builder(p, 0);
  Step reused;
  builder.build(mixed_batch(), reused);
  Batch other;
  other.seqs.push_back({9, 3000, 0, 0, true});
  builder.build(other, reused);
  builder.build(mixed_batch(), reused);
  const Step fresh = build_step(p, 0, mixed_batch());
  ASSERT_EQ(reused.ranks.size(), fresh.ranks.size());
  for (size_t r = 0; r < fresh.ranks.size(); ++r) {
    ASSERT_EQ(reused.ranks[r].ops.size(), fresh.ranks[r].ops.size());
    for (size_t i = 0; i < fresh.ranks[r].ops.size(); ++i) {
      const auto& x = reused.ranks[r].ops[i];
      const auto& y = fresh.ranks[r].ops[i];
      EXPECT_EQ(x.name, y.name);
      EXPECT_EQ(x.flops, y.flops);
      EXPECT_EQ(x.bytes, y.bytes);
      EXPECT_EQ(x.expert_tokens, y.expert_tokens);
      EXPECT_EQ(x.a2a_send_bytes, y.a2a_send_bytes);
    }
  }
}

}  // namespace
}  // namespace parasol::plan

namespace parasol::plan {
namespace {

TEST(PlanBatchSpec, ParsesItemsAndRejectsBadText) {
  const Batch b = parse_batch_spec("prefill:2x512@4096,decode:3@8192,prefill:1x7", 2);
  ASSERT_EQ(b.seqs.size(), 6u);
  EXPECT_EQ(b.seqs[0].new_tokens, 512);
  EXPECT_EQ(b.seqs[0].context, 4096);
  EXPECT_EQ(b.seqs[2].new_tokens, 1);
  EXPECT_EQ(b.seqs[2].context, 8192);
  EXPECT_TRUE(b.seqs[2].is_decode());
  EXPECT_EQ(b.seqs[5].context, 0);
  EXPECT_EQ(b.tokens(), 2 * 512 + 3 + 7);
  for (size_t i = 0; i < b.seqs.size(); ++i) EXPECT_EQ(b.seqs[i].attn_group, static_cast<int>(i % 2));
  for (const char* bad : {"", "prefill:4", "decode:4", "decode:0@10", "prefill:0x5", "train:4x4", "prefill:4x2048,",
                          "prefill:4x-1", "decode:4@x", "decode:99999999999@5", "decode:1048576@5,decode:1@5",
                          "prefill:1x1099511627777", "decode:1@9223372036854775807"})
    EXPECT_THROW(parse_batch_spec(bad), ConfigError) << bad;
  EXPECT_EQ(parse_batch_spec("decode:1048576@5").seqs.size(), 1048576u);  // the bound itself is a batch
}

}  // namespace
}  // namespace parasol::plan

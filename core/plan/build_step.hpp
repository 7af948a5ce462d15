// build_step: DESIGN contract 2. Turns one scheduler iteration (a Batch) of one instance of a Pool into the ordered
// op program of every rank of that instance, with FLOPs, HBM bytes and collective payloads. The simulator costs these
// ops (core/cost), the executor runs exactly these ops.
//
// Program of a rank (stage s, attn-DP group a, tp index t); T = new tokens of group a's sequences:
//   stage 0:  embedding (vocab-parallel, T rows) [+ all-reduce over tp]
//   layer l:  rmsnorm; attention block; rmsnorm; MLP block (dense or MoE)
//     GQA/MHA attention: qkv GEMM (column-parallel, KV heads replicated when tp > kv_heads) [+ qk rmsnorm], rope,
//       kv append, attention over the group's sequences (q_lens / ctx_lens), o GEMM (row-parallel) [+ all-reduce tp]
//     MLA attention (DeepSeek): qkv_a GEMM (replicated) + q/kv latent rmsnorms, q_b GEMM (column-parallel), rope,
//       latent kv append; prefill sequences use the expanded form (kv_b GEMM over their whole context, then MHA with
//       head_dim nope+rope and v_head_dim); decode sequences use the weight-absorbed form (q_nope x W_UK batched GEMM,
//       MQA over the kv_lora+rope latent, x W_UV batched GEMM); o GEMM [+ all-reduce tp]
//     dense MLP: gate_up GEMM, SiLU-and-mul, down GEMM [+ all-reduce tp]
//     MoE, all-to-all form (ep > 1 and moe_tp == 1, DeepEP style): gate + top-k on this rank's 1/tp slice of the
//       group's tokens, permute, dispatch all-to-all over the stage (the EP group), grouped expert GEMMs (gate_up,
//       SiLU-and-mul, down) over the local experts' token counts, combine all-to-all, unpermute + weighted sum, shared
//       experts (replicated) on the slice, [all-gather over tp to restore the group's full tokens]
//     MoE, gather form (otherwise): [all-gather of the groups' tokens over the stage when attn_dp > 1], gate + top-k
//       over the gathered tokens, permute, grouped expert GEMMs for the local experts sharded moe_tp ways, unpermute,
//       shared experts sharded over the stage's ranks,
//       then all-reduce over tp (attn_dp == 1) or reduce-scatter over the stage + all-gather over tp (attn_dp > 1)
//   stage boundary: send hidden + residual to the same (a, t) rank of the next stage; the next stage starts with recv
//   last stage: final rmsnorm, LM head GEMM (vocab-parallel) on the sampled sequences' last tokens, all-gather of the
//     logits over tp, sample.
// Shards: rank i of n holds total / n (+1 for the first total % n ranks) of the vocabulary, FFN, expert FFN and shared
// FFN; token slices split the same way (exec/layout.hpp's balanced_range), so the executor's shapes are these.
// Token counts per expert follow Plan::routing (core/plan/plan.hpp): exact integers summing to tokens x top_k.
// Conventions for bytes: GEMM bytes = A + B + C; collectives carry comm_bytes = the nccl-tests buffer size S
// (all-reduce: the buffer; all-gather / reduce-scatter: the full gathered buffer, padded to n x the largest share when
// the groups' token counts differ; all-to-all: a2a_send_bytes per member). See docs/cost-model.md.
// StepOptions say what the engine that runs the step fuses and how its MoE dispatcher moves tokens (spec::Engine);
// the defaults are the program parasol's executor runs (exec/ follows these ops one by one), so the executor and the
// tests that compare with it build with the defaults, and the cost paths (sim, plan, step) with their engine's.
//   fusion: residual_rmsnorm off: a residual add (an element-wise op of kind activation: it reads two vectors and
//     writes one, as SiLU-and-mul does) before an unfused norm; silu_mul off: SiLU, then the multiply; rope_kv_append:
//     one kv_append op that also rotates q and k (no rope op); allreduce_rmsnorm: a layer's TP all-reduce of at most
//     fused_allreduce_max_bytes also adds the residual and normalizes (the norm after it is not emitted).
//   dispatch (all-to-all form): per_pair: one vector per (token, expert) pair; per_rank: one per (token, destination
//     rank), the expected count for the routing: a rank holding a share s = E x pairs / (tokens x k) of the experts
//     receives tokens x (1 - prod_{i<k} (E - s - i) / (E - i)) distinct tokens (exact for uniform routing, s = E/R:
//     1 - C(E - E/R, k) / C(E, k)); fp8: h bytes + one fp32 scale per fp8_block channels per copy (the combine stays
//     in the activation dtype); node_forwarding: a copy for another domain goes once per destination domain to the
//     member with the sender's index there, which forwards it over its scale-up links to that domain's destinations
//     (the combine takes the reverse path).
// Thread behaviour: build_step is pure; a StepBuilder is not thread-safe (one per thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/plan/plan.hpp"
#include "core/plan/step.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/engine.hpp"

namespace parasol::plan {

// What the engine fuses and how it dispatches MoE tokens (see above). Default: the executor's own program.
struct StepOptions {
  spec::Fusion fusion;
  spec::MoeDispatch dispatch;
  bool triton_experts = false;  // the experts run a Triton fused-MoE kernel (spec::MoeExperts)
  double fused_allreduce_max_bytes = 0;  // allreduce_rmsnorm: the largest TP all-reduce that carries the norm
  std::vector<int> rank_domain;          // per instance rank: its scale-up domain (node forwarding); empty: one domain
};
// The options `engine` implies for instance 0 of plan.pools[pool] on `cluster` (the domains of its GPUs).
StepOptions step_options(const spec::Engine& engine, const Plan& plan, int pool, const spec::Cluster& cluster);

// Tokens routed to each of `num_experts` experts for `tokens` tokens choosing `top_k` distinct experts each, at MoE
// layer `layer`, under `routing`. Sums to tokens x top_k; no expert gets more than `tokens`.
std::vector<int64_t> expert_token_counts(const Routing& routing, int64_t num_experts, int64_t top_k, int64_t tokens,
                                         int64_t layer);
void expert_token_counts(const Routing& routing, int64_t num_experts, int64_t top_k, int64_t tokens, int64_t layer,
                         std::vector<int64_t>& out);

// A batch from a compact spec, items separated by commas:
//   prefill:NxL      N sequences prefilling L tokens from empty context
//   prefill:NxL@C    N chunks of L tokens over C cached tokens (chunked prefill; the chunk ends the prompt)
//   decode:N@C       N sequences decoding one token after C cached tokens
// Sequences get consecutive ids and attention-DP groups round-robin over `attn_dp`. Bad text is a ConfigError
// naming `key` (e.g. "--batch").
Batch parse_batch_spec(const std::string& spec, int attn_dp = 1, const std::string& key = "batch");

// One iteration of instance 0 of plan.pools[pool] (every instance of a pool runs the same program). Sequences with
// attn_group outside [0, attn_dp) are a ConfigError.
Step build_step(const Plan& plan, int pool, const Batch& batch, const StepOptions& options = {});

// Reusable builder for callers that build many steps of one pool (search, simulator): the per-pool structure
// (groups, shard shapes, weights) is computed once and `build` reuses the output's allocations.
// The context a chunk of q new tokens (ctx_after tokens with them) attends to under a sliding window of `window`
// tokens (0: none), as the attention ops carry it: min(ctx_after, window + (q - 1) / 2). Exact for decode (q = 1:
// the last `window` keys); for a prefill chunk past the window its causal products q x ctx' - q (q - 1) / 2 come to
// q x window, the keys its queries attend, and its KV read to about the window plus half the chunk.
inline int64_t attended_context(int64_t q, int64_t ctx_after, int64_t window) {
  if (window <= 0) return ctx_after;
  const int64_t cap = window + (q - 1) / 2;
  return ctx_after < cap ? ctx_after : cap;
}

class StepBuilder {
 public:
  StepBuilder(const Plan& plan, int pool, const StepOptions& options = {});
  ~StepBuilder();
  StepBuilder(StepBuilder&&) noexcept;
  StepBuilder& operator=(StepBuilder&&) noexcept;

  Step build(const Batch& batch);
  void build(const Batch& batch, Step& out);  // out's vectors are reused
  // Only the programs of `ranks` (out.ranks[i] is rank ranks[i]; groups as in build): for callers that cost one
  // representative rank of symmetric ranks (the simulator's analytic step runner).
  void build_ranks(const Batch& batch, const std::vector<int>& ranks, Step& out);
  // Frees per-sequence scratch kept between builds beyond 64k sequences (a long-lived builder otherwise holds the
  // capacity of the largest batch it has seen; the planner keeps one per stage shape, up to 1,024 ranks each).
  void trim_scratch();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Sums over all ranks (or one rank) of the FLOPs of GEMM ops, for checks and reports.
double gemm_flops(const Step& step);
double gemm_flops(const RankProgram& rank);

}  // namespace parasol::plan

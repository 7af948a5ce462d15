// Feasibility of a layout, as a value: whether a ParallelConfig can run a Model on GPUs of one type, and the memory
// budget per GPU it leaves. Checks: the config's own consistency, head and KV-head divisibility (KV heads are replicated
// when tp > kv_heads, as vLLM does), layers over pipeline stages (uneven splits are allowed and reported as a note),
// experts over ep, and memory: weight shard + KV cache + activation workspace + runtime reserve <= HBM x target
// utilization, the KV cache taking what is left (its capacity in tokens is the result). Placement on a cluster (TP
// groups inside one scale-up domain) is checked by core/plan/placement.hpp. Never throws for an infeasible layout.
// Thread behaviour: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/plan/plan.hpp"

namespace parasol::plan {

// What a deployment allows; the knobs of feasibility and placement.
struct PlanOptions {
  double target_utilization = 0.9;       // fraction of HBM the engine may use (vLLM gpu_memory_utilization)
  double runtime_reserve_bytes = 2.0 * 1024 * 1024 * 1024;  // CUDA context, NCCL buffers, cuBLAS workspace
  int64_t max_batch_tokens = 8192;       // scheduler token budget per iteration and attn-DP group
  int64_t max_batch_seqs = 256;          // sequences per iteration and attn-DP group
  int64_t kv_block_tokens = 16;          // paged-KV block size; KV capacity is rounded down to whole blocks
  int64_t min_kv_tokens = 4096;          // a layout whose KV cache holds fewer tokens (per attn-DP group) is infeasible
  bool allow_cross_domain_tp = false;    // let a TP group span scale-up domains (over the scale-out network)
  bool weight_dtype_set = false;         // when true, weight_dtype overrides the model's
  DType weight_dtype = DType::kBf16;
  bool kv_dtype_set = false;             // when true, kv_dtype overrides the model's
  DType kv_dtype = DType::kBf16;
  Routing routing;
};

// Sharding of one layer's heads over tp ranks.
struct HeadSharding {
  int64_t q_heads = 0;       // query heads per rank
  int64_t kv_heads = 0;      // KV heads per rank (>= 1; replicated when tp > kv_heads)
  int64_t kv_replicas = 1;   // how many ranks hold each KV head
};
HeadSharding shard_heads(const spec::Model& m, int tp);

// MoE layers use the all-to-all form (dispatch/combine over the EP group) when ep > 1 and experts are not
// tensor-sharded (moe_tp == 1); else the gather form (all-gather / reduce over the stage). See build_step.hpp.
inline bool moe_all_to_all(const ParallelConfig& c) { return c.ep > 1 && c.moe_tp() == 1; }

// Layer ranges per stage: near-even split, the first (layers % pp) stages one layer longer.
std::vector<std::pair<int64_t, int64_t>> split_layers(int64_t layers, int pp);

// Weight bytes held by one rank of `config` at pipeline stage `stage` (embedding on the first stage, LM head on the
// last; norms and router in bf16; embedding and LM head in bf16 when weights are 8-bit or narrower, as checkpoints ship).
double rank_weight_bytes(const spec::Model& m, const ParallelConfig& config, DType weight_dtype,
                         std::pair<int64_t, int64_t> layers, bool first_stage, bool last_stage);
// KV-cache bytes per token held by one rank for `layers` (GQA: 2 x local kv heads x head_dim; MLA: the latent,
// replicated on every TP rank).
double rank_kv_bytes_per_token(const spec::Model& m, int tp, DType kv_dtype, std::pair<int64_t, int64_t> layers);
// Activation workspace of one rank at the options' batch limits (peak of the live buffers of one layer, logits).
double rank_activation_bytes(const spec::Model& m, const ParallelConfig& config, const PlanOptions& options);

struct FeasibilityResult {
  Feasibility feasibility;
  MemoryBudget memory;  // filled as far as the checks got
  std::vector<std::pair<int64_t, int64_t>> stage_layers;
};

// Model x GPU x config, without a cluster. `memory.kv_tokens` is per attn-DP group of one instance.
FeasibilityResult check_feasibility(const spec::Model& m, const spec::Gpu& gpu, const ParallelConfig& config,
                                    const PlanOptions& options = {});

}  // namespace parasol::plan

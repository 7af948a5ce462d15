// RankLayout: what one rank of an instance holds and does under a ParallelConfig — its pipeline stage and layer range,
// attention-DP group, tensor-parallel index, the slices of heads / vocabulary / FFN / experts it owns, and which MoE
// form it runs. Conventions (shared with core/plan/build_step.hpp):
//   - instance rank = (stage x attn_dp + a) x tp + t; stage rank = a x tp + t;
//   - q heads, KV heads (replicated when tp > kv_heads), vocabulary and dense FFN are split over the tp ranks of the
//     attention group in balanced contiguous ranges;
//   - experts are split over ep = stage_ranks / moe_tp contiguous blocks: ep index = stage rank / moe_tp, expert-TP
//     index = stage rank % moe_tp; each expert's FFN is split moe_tp ways;
//   - MoE form: all-to-all (ep > 1 and moe_tp == 1; shared experts replicated) or gather (otherwise; shared experts
//     split over the stage's ranks).
// Thread behaviour: plain value.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/plan/parallel_config.hpp"
#include "core/spec/model.hpp"

namespace parasol::exec {

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// Part i of n of [0, total): total / parts elements each, the first total % parts parts one more (build_step's
// convention for token slices and shards, so the executor's shapes are the planner's).
Range balanced_range(int64_t total, int parts, int i);

// "tp2.pp1.ep2.adp1.dp1" (the format of ParallelConfig::label()).
std::string layout_label(const plan::ParallelConfig& c);

struct RankLayout {
  plan::ParallelConfig config;
  int rank = 0;
  int stage = 0, attn_group = 0, tp_index = 0;
  int stage_rank = 0;  // a x tp + t
  int ep_index = 0, moe_tp_index = 0;
  int64_t layer_begin = 0, layer_end = 0;
  std::vector<std::pair<int64_t, int64_t>> stage_layers;  // every stage's {first, last + 1} layers
  bool first_stage() const { return stage == 0; }
  bool last_stage() const { return stage == config.pp - 1; }

  Range q_heads, kv_heads, vocab, ffn;  // over tp
  Range experts, expert_ffn;            // over ep / moe_tp
  Range shared_ffn;                     // gather form: over the stage's ranks; all-to-all form: the whole
  bool moe_all_to_all = false;

  // stage_layers empty: layers split as evenly as possible over pp stages (earlier stages take the remainder).
  // Throws ConfigError when the model cannot be split so (heads not divisible by tp, experts by ep, ...).
  static RankLayout make(const spec::Model& model, const plan::ParallelConfig& config,
                         const std::vector<std::pair<int64_t, int64_t>>& stage_layers, int rank);
};

}  // namespace parasol::exec

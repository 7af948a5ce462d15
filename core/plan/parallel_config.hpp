// ParallelConfig: how one model instance is split over GPUs, and how many instances serve.
//
// An instance (a "replica") has tp x attn_dp x pp ranks:
//   - attention is tensor-parallel over `tp` ranks and replicated over `attn_dp` groups (attention data-parallelism,
//     as DeepSeek / SGLang / vLLM deploy MoE: each attn_dp group serves its own sequences);
//   - dense MLPs are tensor-parallel over the same `tp` ranks;
//   - routed experts are spread over `ep` ranks, ep dividing tp x attn_dp; the rest is expert tensor parallelism
//     (moe_tp = tp x attn_dp / ep);
//   - layers are split over `pp` pipeline stages.
// `dp` instances serve behind a router. Rank numbering within an instance: rank = (stage x attn_dp + a) x tp + t.
// Thread behaviour: plain value.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace parasol::plan {

struct ParallelConfig {
  int tp = 1;
  int pp = 1;
  int dp = 1;       // instances
  int ep = 1;       // expert parallelism inside an instance
  int attn_dp = 1;  // attention data-parallel groups inside an instance

  int ranks_per_stage() const { return tp * attn_dp; }
  int instance_size() const { return tp * attn_dp * pp; }
  int total_gpus() const { return instance_size() * dp; }
  int moe_tp() const { return ranks_per_stage() / ep; }
  int rank(int stage, int a, int t) const { return (stage * attn_dp + a) * tp + t; }
  int stage_of(int rank) const { return rank / ranks_per_stage(); }
  int attn_group_of(int rank) const { return (rank / tp) % attn_dp; }
  int tp_index_of(int rank) const { return rank % tp; }

  // "tp8.pp2.ep1.adp1.dp4"
  std::string label() const;
  // Inverse of label(); nullopt when `text` is not a label (each of tp, pp, ep, adp, dp once, in that order).
  static std::optional<ParallelConfig> parse_label(std::string_view text);
  // Empty when the numbers are consistent (all >= 1, ep divides tp x attn_dp), else why not. Model- and
  // cluster-independent; feasibility (core/plan/feasibility.hpp) checks the rest.
  std::string invalid_reason() const;
  bool operator==(const ParallelConfig&) const = default;
};

// Prefill/decode disaggregation: two pools, each with its own layout, joined by KV transfers.
struct DisaggConfig {
  ParallelConfig prefill;
  ParallelConfig decode;
  // "P[tp8.pp1.ep1.adp1.dp1]+D[tp4.pp1.ep1.adp1.dp2]"
  std::string label() const;
  bool operator==(const DisaggConfig&) const = default;
};

}  // namespace parasol::plan

// Plan: DESIGN contract 1 — what to run where. A ParallelConfig (or a prefill/decode pair), the placement of every
// rank of every instance on a GPU of the cluster, the layer range of every pipeline stage, the memory budget per GPU
// and the KV capacity it leaves. Serialized as YAML (`schema: parasol.plan/1`): `parasol plan` writes it, `parasol sim
// --plan` and `parasol exec --plan` read it unchanged. A Plan is fully resolved: consumers never re-derive layout.
// Thread behaviour: plain value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/plan/parallel_config.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/gpu.hpp"
#include "core/spec/model.hpp"

namespace parasol::plan {

// Expected outcome, not an exception: a layout that does not fit says why.
struct Feasibility {
  bool ok = true;
  std::vector<std::string> reasons;  // why not (or warnings such as an uneven layer split when ok)
  void fail(std::string why) {
    ok = false;
    reasons.push_back(std::move(why));
  }
};

struct MemoryBudget {
  double capacity_bytes = 0;     // GPU HBM
  double usable_bytes = 0;       // capacity x target utilization
  double weight_bytes = 0;       // this rank's weight shard (max over ranks)
  double activation_bytes = 0;   // workspace at the max batch
  double reserve_bytes = 0;      // runtime (CUDA context, NCCL buffers, cuBLAS workspace)
  double kv_bytes = 0;           // what is left for the KV cache
  int64_t kv_tokens = 0;         // KV capacity of one instance (per attn-DP group), in tokens
  int64_t kv_block_tokens = 16;  // paged KV block size
};

// How MoE tokens pick experts when build_step counts tokens per expert. Counts are expected values rounded by largest
// remainder, so they sum exactly to tokens x top_k and are deterministic. "uniform": every expert equally likely;
// "zipf": expert popularity ~ 1 / rank^zipf_s, with a per-layer permutation of which experts are hot drawn from `seed`.
struct Routing {
  std::string kind = "uniform";  // "uniform" | "zipf"
  double zipf_s = 1.0;
  uint64_t seed = 1;
  bool operator==(const Routing&) const = default;
};

// A pool of identical instances (the whole deployment, or one side of a disaggregated one).
struct Pool {
  std::string role = "mixed";   // "mixed" | "prefill" | "decode"
  ParallelConfig config;
  std::string gpu_type;         // key into the cluster's gpu_types; empty = Plan::gpu_type
  // placement[i][r] = cluster GPU index of rank r of instance i
  std::vector<std::vector<int>> placement;
  // stage_layers[s] = {first, last+1} layers of stage s
  std::vector<std::pair<int64_t, int64_t>> stage_layers;
  MemoryBudget memory;
  int64_t max_batch_tokens = 8192;  // scheduler token budget per iteration (chunked prefill)
  int64_t max_batch_seqs = 256;
};

struct Plan {
  spec::Model model;
  std::string gpu_type;            // key into the cluster's gpu_types
  std::string cluster_name;
  std::vector<Pool> pools;         // one "mixed" pool, or a "prefill" and a "decode" pool
  DType weight_dtype = DType::kBf16;
  DType kv_dtype = DType::kBf16;
  Routing routing;                 // MoE routing distribution used by build_step

  bool disaggregated() const { return pools.size() == 2; }
};

}  // namespace parasol::plan

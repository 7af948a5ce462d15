// Serving: the engine knobs a user sets on vLLM, SGLang or TensorRT-LLM, under vLLM's names — the `serving:` section of
// a scenario and the defaults of an engine profile (topologies/engines/*.yaml). Every field is optional: an unset one
// falls back to the engine profile's default, then to parasol's own (the plan's pool, the model's context window).
// The planner reads the batch limits, the block size and the memory fraction (plan::PlanOptions); the serving loop's
// schedulers read the rest (core/serve/scheduler.hpp: SchedulerConfig from a plan pool and a Serving); `router` is
// kept as YAML for core/serve's load_router. docs/scenario.md documents the keys.
// Thread behaviour: plain values; loading is reentrant.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/common/yaml_node.hpp"

namespace parasol::spec {

struct Gpu;

struct Serving {
  std::optional<int64_t> max_num_seqs;            // sequences per iteration (and attention-DP group)
  std::optional<int64_t> max_num_batched_tokens;  // token budget per iteration (and attention-DP group)
  std::optional<int64_t> block_size;              // KV block, tokens
  std::optional<double> gpu_memory_utilization;   // fraction of HBM the engine takes (weights, activations, KV)
  std::optional<bool> enable_chunked_prefill;     // false: prefill-first (whole prompts), true: chunked
  std::optional<int64_t> long_prefill_token_threshold;  // a prompt prefills at most this many tokens per iteration
  std::optional<bool> enable_prefix_caching;
  std::optional<std::string> preemption_mode;     // "recompute" | "swap"
  std::optional<double> swap_space_bytes;         // CPU swap space per GPU (preemption_mode: swap)
  std::optional<int64_t> max_model_len;           // context window (prompt + output); default: the model's
  std::optional<yaml::Node> router;               // a policy name or a map (core/serve/router.hpp load_router)
};

// The `serving:` map. Unknown keys and bad values are ConfigErrors at file:line with the key.
Serving load_serving(const yaml::Node& node);
// `over`'s set fields replace `base`'s.
Serving overlay(Serving base, const Serving& over);
nlohmann::json to_json(const Serving& s);

// An engine profile's defaults, with the GPU-dependent ones (vLLM's get_batch_defaults picks larger batch limits on
// GPUs of at least `min_memory_bytes` whose name contains none of `except`).
struct ServingDefaults {
  Serving all;
  struct LargeGpu {
    double min_memory_bytes = 0;
    std::vector<std::string> except;  // substrings of the GPU name (case-insensitive)
    Serving serving;
  };
  std::optional<LargeGpu> large_gpu;
  Serving for_gpu(const std::string& gpu_name, const Gpu& gpu) const;
};
ServingDefaults load_serving_defaults(const yaml::Node& node);

}  // namespace parasol::spec

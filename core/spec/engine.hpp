// Engine: what a serving engine (vLLM, SGLang, TensorRT-LLM) does around the kernels of one iteration — the CPU work
// of scheduling, input preparation and sampling, how it launches kernels (CUDA graphs or one by one), which kernels it
// fuses, whether its TP all-reduce uses its own one-shot/two-shot kernels, and how its MoE dispatcher moves tokens.
// Loaded from `schema: parasol.engine/1` YAML (topologies/engines/*.yaml, docs/schema-engine.md); every number in a
// shipped file carries its provenance in a comment. A scenario picks one with `engine:` (default: vllm).
// The defaults of these structs are the bare program parasol's own executor runs (no engine cost, today's fusion,
// one bf16 vector per (token, expert) pair), so that a Step built or costed without an engine is unchanged.
// core/cost/step_cost.hpp turns an Engine into time; core/plan/build_step.hpp takes its fusion and dispatch.
// Thread behaviour: plain values; loading is reentrant.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/common/dtype.hpp"
#include "core/common/yaml_node.hpp"
#include "core/spec/serving.hpp"

namespace parasol::spec {

// CPU work of one iteration: fixed + per_sequence x (sequences in the batch) + per_token x (new tokens).
struct IterationCpu {
  double fixed_s = 0;
  double per_sequence_s = 0;
  double per_token_s = 0;
  double at(int64_t seqs, int64_t tokens) const {
    return fixed_s + per_sequence_s * static_cast<double>(seqs) + per_token_s * static_cast<double>(tokens);
  }
};

struct IterationCost {
  IterationCpu decode;  // iterations in which every sequence brings exactly one new token
  IterationCpu mixed;   // iterations with prefill (or chunked-prefill) tokens
  // Per iteration and never hidden: what stays between two forward passes when the CPU work overlaps them.
  double serial_s = 0;
  // The CPU work of iteration n+1 runs while the GPU runs iteration n (vLLM async scheduling, SGLang's and TRT-LLM's
  // overlap schedulers): an iteration then takes max(GPU, CPU) instead of GPU + CPU.
  bool overlap = false;
  bool overlap_with_pp = false;  // ... also when the plan has pipeline stages
};

// Which iterations replay a captured CUDA graph (one launch for the whole forward) instead of launching every kernel.
struct CudaGraphs {
  int64_t decode_max_seqs = 0;   // decode iterations with at most this many sequences: one full graph (0: none)
  bool mixed_piecewise = false;  // mixed iterations: graphs between the attention ops, attention launched eagerly
  int64_t mixed_max_tokens = 0;  // ... for at most this many new tokens
};

// Which kernels the engine fuses (core/plan/build_step.cpp emits the ops accordingly).
struct Fusion {
  bool residual_rmsnorm = true;    // residual add + RMSNorm in one kernel (else an add kernel, then the norm)
  bool silu_mul = true;            // SiLU and the gate multiply in one kernel (else two)
  bool rope_kv_append = false;     // RoPE and the KV-cache write in one kernel (else two)
  bool allreduce_rmsnorm = false;  // the TP all-reduce kernel also adds the residual and normalizes (no norm kernel)
};

// The engine's own all-reduce for small TP payloads inside one NVLink domain (one-shot / two-shot over peer memory).
struct CustomAllReduce {
  bool enabled = false;
  double max_bytes = 0;  // payloads below this size (bytes); larger ones go to NCCL
  int max_gpus = 0;      // the largest group it serves
};

// How the MoE all-to-all moves tokens (the all-to-all form of build_step: ep > 1, experts not tensor-sharded).
struct MoeDispatch {
  bool per_rank = false;  // one copy per destination rank (DeepEP, pplx); false: one per (token, expert) pair
  bool fp8 = false;       // dispatch payload in fp8 with one fp32 scale per fp8_block channels (combine stays bf16)
  int64_t fp8_block = 128;
  bool node_forwarding = false;  // inter-node copies go once per destination node, then over NVLink (DeepEP normal)
};

// The engine's expert kernels by weight dtype. A Triton fused-MoE kernel (vLLM's and SGLang's fused_moe) reads each
// pair's token row through the sorted routing ids (no permuted copy) and, when every rank sees every token (expert
// parallelism without an all-to-all: an expert map), writes zero rows for the pairs of other ranks' experts and runs
// the activation and the final sum over every (token, expert) pair. Other kernels (CUTLASS, TRT-LLM) permute the
// local pairs into a buffer and compute only those.
struct MoeExperts {
  std::vector<DType> triton;  // weight dtypes whose experts run the Triton kernel
  bool is_triton(DType d) const {
    for (DType t : triton)
      if (t == d) return true;
    return false;
  }
};

struct Engine {
  std::string name;     // "vllm"
  std::string version;  // the engine version the profile describes
  std::string source;   // the file it was loaded from ("" when built in code)
  IterationCost iteration;
  double launch_s = 0;  // host cost of launching one kernel outside a graph
  CudaGraphs graphs;
  Fusion fusion;
  CustomAllReduce custom_allreduce;
  MoeDispatch moe_dispatch;
  MoeExperts moe_experts;
  ServingDefaults serving;  // the engine's defaults for the scenario's `serving:` knobs (unset: parasol's)
};

// `schema: parasol.engine/1`. Every problem is a ConfigError with file:line:col and key path; unknown keys are errors.
Engine load_engine(const yaml::Node& root);
Engine load_engine_file(const std::string& path);
// A shipped engine name (topologies/engines/NAME.yaml under the data directory) or a file path (as is, then relative
// to `from_file`'s directory, then to the data directory). An unknown name is a ConfigError at `key` listing the
// shipped ones.
Engine load_engine_ref(const std::string& ref, const std::string& from_file = "", const std::string& key = "engine");
// The file `ref` names (as load_engine_ref looks for it), or nullopt; and what an error about a missing one expects.
std::optional<std::string> find_engine_file(const std::string& ref, const std::string& from_file = "");
std::string engine_ref_expected(const std::string& ref);
// The engine a scenario or command gets when it names none.
constexpr const char* kDefaultEngine = "vllm";
std::vector<std::string> shipped_engines();  // names of topologies/engines/*.yaml, sorted
nlohmann::json to_json(const Engine& e);

}  // namespace parasol::spec

// Parameters of the structured kernel and collective cost model (core/cost), one struct per op family, read from the
// GPU YAML's `gemm:`, `elementwise:`, `attention:` and `collective:` sections (docs/schema-gpu.md). Every value in
// a shipped YAML carries its provenance in a comment: the `parasol calibrate` command that fitted it, or a citation.
// The defaults here are neutral starting points for a GPU with no fitted section (the fitter starts from them).
// Each family's loader lives next to its model: core/spec/kernel_params_*.cpp.
// Thread behaviour: plain values.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "core/common/yaml_node.hpp"

namespace parasol::spec {

// GEMMs (dense, batched and grouped expert GEMMs): tile and wave quantization over the SM count.
struct GemmParams {
  double max_efficiency = 0.75;  // fraction of the dtype's peak a full wave of large tiles reaches
  double k_half = 256;           // k at which a tile's main loop reaches half its peak (prologue/epilogue)
  double fixed_s = 4e-6;         // per-kernel fixed cost (launch, first wave ramp)
  double memory = 0.85;          // fraction of HBM bandwidth when the GEMM is bound by streaming its operands
};

// Element-wise and small ops (rmsnorm, activation, rope, kv_append, embedding, moe gate/dispatch/combine, sample):
// a per-kind fraction of HBM bandwidth and a per-kernel fixed cost.
struct ElementwiseParams {
  std::map<std::string, double> memory;  // op kind name (plan::to_string) -> bandwidth fraction; absent: `default_memory`
  double default_memory = 0.7;
  double fixed_s = 3e-6;
};

// Attention (prefill/context and decode/generation, MHA/GQA and MLA).
struct AttentionParams {
  double prefill_max_efficiency = 0.6;  // fraction of bf16 peak at long queries and large head dims
  double prefill_q_half = 512;          // query length at which prefill reaches half its maximum
  double decode_memory = 0.8;           // fraction of HBM bandwidth the decode kernel streams KV at
  double per_seq_s = 0.0;               // per-sequence cost (scheduling a sequence's work)
  double fixed_s = 5e-6;                // per-kernel fixed cost
};

// Collectives: NCCL protocols and algorithms, the NIC, and the engines' custom all-reduce.
struct CollectiveModelParams {
  double nic_efficiency = 0.0;       // achieved / nominal NIC bandwidth (0: the scale-up comm_efficiency)
  double nic_message_s = 0.0;        // per message on a NIC (the proxy / RDMA posting cost)
  double hop_latency_s = 0.0;        // per ring/tree hop, on top of the links' own latency
};

void load_gemm_params(const yaml::Node& n, GemmParams& p);
void load_elementwise_params(const yaml::Node& n, ElementwiseParams& p);
void load_attention_params(const yaml::Node& n, AttentionParams& p);
void load_collective_params(const yaml::Node& n, CollectiveModelParams& p);
nlohmann::json to_json(const GemmParams& p);
nlohmann::json to_json(const ElementwiseParams& p);
nlohmann::json to_json(const AttentionParams& p);
nlohmann::json to_json(const CollectiveModelParams& p);

}  // namespace parasol::spec

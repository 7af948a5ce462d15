// Parameters of the structured kernel and collective cost model (core/cost), one struct per op family, read from the
// GPU YAML's `gemm:`, `elementwise:`, `attention:` and `collective:` sections (docs/schema-gpu.md). Every value in
// a shipped YAML carries its provenance in a comment: the `parasol calibrate` command that fitted it, or a citation.
// The defaults here are neutral starting points for a GPU with no fitted section (the fitter starts from them).
// Each family's loader lives next to its model: core/spec/kernel_params_*.cpp.
// Thread behaviour: plain values.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/common/yaml_node.hpp"

namespace parasol::spec {

// GEMMs (dense, batched and grouped expert GEMMs): tile and wave quantization over the SM count
// (core/cost/gemm_cost.hpp, docs/cost-model.md "GEMM"). A GEMM runs as tiles of BM x BN outputs, `sm_count` at a
// time (waves); a tile's main loop streams k at the SM's share of the dtype's peak x max_efficiency, fed at
// 1 / tile_intensity of that rate in operand bytes, never faster than k_step per k element, plus k_half of
// prologue/epilogue; the whole GEMM also streams A, B and C through HBM at `memory` of its bandwidth.
// One row of a kernel library's fixed tile table: GEMMs with m <= max_m (0: any m) run BM x BN tiles, each on `sms`
// SMs (2: a Blackwell 2-SM UMMA tile, the two SMs of a cluster pair each computing half of it).
struct GemmTile {
  int64_t max_m = 0;
  int bm = 128, bn = 128;
  int sms = 1;
};

struct GemmParams {
  double max_efficiency = 0.8;      // bf16/fp16/fp32: fraction of the per-SM peak a tile's main loop reaches
  double fp8_max_efficiency = 0.65;  // fp8 and int8 GEMMs: the same at the fp8 (int8) peak
  double tile_intensity = 20;       // FLOP per operand byte at which a tile's operand feed keeps up with its math
  double k_half = 200;              // prologue + epilogue of a tile, in k elements of its main loop
  double k_step_s = 1e-9;           // latency floor of a tile's main loop per k element
  double memory = 0.85;             // fraction of HBM bandwidth when streaming A, B and C
  double overlap = 4;               // compute and memory time combine as (c^p + m^p)^(1/p); large p: max
  double fixed_s = 2.5e-6;          // per-kernel fixed cost (launch to first tile, last tile to completion)
  double split_k_min = 512;         // split-K (only while the tiles fill one wave): a slice costs at least this k
  double split_k_fixed_s = 2e-6;    // split-K's extra cost (the reduction kernel)
  // fp8/int8 GEMMs run another library (vLLM: CUTLASS scaled_mm, not cuBLAS): their own stream, latency and fixed cost.
  double fp8_memory = 0.8;
  double fp8_k_step_s = 1e-9;
  double fp8_fixed_s = 2.5e-6;
  double fp8_quant_fixed_s = 2e-6;  // dense fp8/int8: the activation's quantization kernel, fixed part
  double fp8_quant_row_s = 6e-9;    // its cost per row (dynamic per-tensor scale: every row's max reduced to one)
  // With fp8_quant_pass_k > 0 the quantization runs one block per row in waves of one row per SM, each row in
  // ceil(k / fp8_quant_pass_k) passes (a block's threads x their vector width): ceil(rows / S) x S x (fp8_quant_row +
  // passes x fp8_quant_pass), at least its bytes at fp8_memory. 0: rows x fp8_quant_row plus its bytes.
  int fp8_quant_pass_k = 0;
  double fp8_quant_pass_s = 0;
  double fp8_store_memory = 0;  // dense fp8/int8: fraction of HBM bandwidth their epilogue writes C at (0: fp8_memory)
  double grouped_efficiency = 1.0;  // grouped expert GEMMs (fused-MoE kernels): multiplier on the dtype's efficiency
  double grouped_fixed_s = 4e-6;    // fixed cost of one grouped expert GEMM kernel (instead of fixed_s)
  double grouped_memory = 0;        // fraction of HBM bandwidth its operands stream at (0: `memory`)
  double grouped_expert_s = 0;      // and a cost per expert with rows (its problem set-up and tile scheduling)
  // fp8 grouped expert GEMMs run another library's kernels (vLLM: FlashInfer/CUTLASS MoE, not the Triton fused MoE
  // of 16-bit weights): their own multiplier on the fp8 efficiency and their own fixed cost.
  double fp8_grouped_efficiency = 1.0;
  double fp8_grouped_fixed_s = 4e-6;
  double fp8_grouped_memory = 0;  // 0: `fp8_memory`
  double fp8_grouped_expert_s = 0;
  int fp8_grouped_min_bm = 0;  // their tiles' least row count (BM of core/cost/gemm_cost.cpp's tiles; 0: any)
  // Batched GEMMs (batch > 1 independent weight matrices, not experts: MLA's absorbed per-head GEMMs, torch.bmm):
  // a multiplier on the dtype's efficiency and their own fixed cost (0: fixed_s).
  double batched_efficiency = 1.0;
  double batched_fixed_s = 0;
  // A batched GEMM measured by repeating it (cost::GemmBench::repeated): operands and result up to bench_l2_fraction
  // of Gpu::l2_bytes (bench_l2_bytes when the datasheet gives no L2) stay resident in L2 and stream
  // bench_l2_speedup x faster than from HBM. 0 speedup: no such effect.
  double bench_l2_fraction = 0.8;
  double bench_l2_bytes = 0;
  double bench_l2_speedup = 0;
  // fp8/int8 dense GEMMs: the library's tile by m (first row whose max_m >= m), not chosen by cost, and no split-K.
  // Empty: the cheapest of the generic tiles, split-K allowed, as for bf16.
  std::vector<GemmTile> fp8_tiles;
};

// Element-wise and small ops (rmsnorm, activation, rope, kv_append, embedding, moe dispatch/combine, sample):
// time = max(bytes / (HBM bandwidth x memory[kind]), FLOPs / fp32 peak) + fixed.
struct ElementwiseParams {
  std::map<std::string, double> memory;  // op kind name (plan::to_string) -> bandwidth fraction; absent: `default_memory`
  double default_memory = 0.7;
  double fixed_s = 3e-6;
};

// Attention (prefill/context and decode/generation, MHA/GQA and MLA): a flash-attention kernel as tiles of query rows
// x KV keys on the SMs, next to the HBM stream (core/cost/attention_cost.hpp has the model; docs/cost-model.md).
// "SM-time" costs are seconds of one SM; the op spreads them over the GPU's SMs.
struct AttentionParams {
  // Kernel structure (cited in the YAML, not fitted).
  double tile_q = 128;               // query rows of a prefill CTA (packed GQA: positions x heads of one KV head)
  double tile_kv_elements = 16384;   // keys x head dim of one KV tile (keys per tile = this / d_qk)
  bool prefill_pack_gqa = true;      // a prefill tile packs its KV head's query heads; false: one query head per tile
  double tmem_columns = 0;           // tensor memory columns per SM (fp32) for a tile's S and O; 0: no such limit
  double decode_tile_q = 64;         // query rows of a decode tile (the GQA group, padded)
  double max_splits = 16;            // split-KV cap: a sequence's keys over at most this many CTAs
  double kv_block_tokens = 16;       // paged-KV block size
  // Prefill (context): tiles on the SMs.
  double prefill_fixed_s = 10e-6;         // per-kernel fixed cost
  double prefill_max_efficiency = 0.6;    // tensor fraction of bf16 peak with every SM busy
  double prefill_sm_efficiency = 0.9;     // one SM's tensor fraction when few tiles run (no full-load derate)
  double prefill_d_half = 64;             // softmax cost in head-dim units: rate x D / (D + d_half), D = d_qk + d_v
  double prefill_per_tile_s = 2e-6;       // SM-time per query tile (load Q, write O)
  double prefill_per_kv_token_s = 0;      // SM-time per new token per KV head per 256 of D (its K/V into the cache)
  double prefill_memory = 0.8;            // fraction of HBM bandwidth for the op's bytes
  double prefill_overlap = 2;             // p of the combination (compute^p + memory^p)^(1/p)
  double prefill_softmax_overlap = 1;     // p of a tile pair's (MMA^p + softmax^p)^(1/p): 1 adds them
  double prefill_tail = 0;                // p of (SM throughput^p + longest tile^p)^(1/p); 0: the larger
  double prefill_fp8_tile = 1;            // fp8 KV cache: factor on the tile time at D = 256 ...
  double prefill_fp8_tile_slope = 0;      // ... plus this per +256 of D
  double prefill_fp8_overhead = 1;        // fp8 KV cache: factor on the per-tile cost (and per-token, see below)
  double prefill_fp8_fixed_s = 0;         // fp8 KV cache: extra fixed cost per 256 of D
  double prefill_fp8_kv_write = 0;        // fp8 KV cache: factor on the per-token cost (0: prefill_fp8_overhead)
  double mla_prefill_factor = 1;          // MLA expanded prefill (d_qk 192, d_v 128): factor on the tile time
  // MLA expanded prefill as its own kernel (when the engine runs another kernel for it than for GQA prefill).
  bool mla_prefill_v_pad = false;         // V zero-padded to d_qk (a kernel without distinct QK / V head dims)
  double mla_prefill_tile_q = 0;          // query rows of its CTA; 0: tile_q
  bool mla_prefill_tmem = true;           // its tiles are bound by tmem_columns (false: a kernel without TMEM)
  double mla_prefill_max_efficiency = 0;  // its prefill_max_efficiency; 0: the shared one
  double mla_prefill_per_token_s = -1;    // its prefill_per_kv_token, per new token per head; < 0: the shared one
  double mla_prefill_fixed_s = -1;        // its prefill_fixed; < 0: the shared one
  // Decode (generation): CTAs of (sequence, KV head, split) streaming KV.
  double decode_fixed_s = 8e-6;           // per-kernel fixed cost
  double decode_fp8_fixed_s = 0;          // fp8 KV cache: extra fixed cost per 256 of D
  double decode_memory = 0.9;             // fraction of HBM bandwidth the KV stream reaches
  double decode_sm_bandwidth = 4;         // one CTA's stream rate, in multiples of HBM bandwidth / SMs
  double decode_mma_efficiency = 0.5;     // tensor fraction of a decode tile (decode_tile_q rows)
  double decode_fp8_mma = 1;              // fp8 KV cache: factor on that tensor rate
  double mla_decode_mma_efficiency = 0.5;  // the same for MLA's absorbed decode (all heads on one latent KV head)
  // MLA absorbed decode's kernel: its query heads (one latent KV head) in head tiles, each a CTA that reads the
  // sequence's KV on its own. 0 / defaults: one CTA per sequence holding every head (padded to decode_tile_q).
  double mla_decode_tile_q = 0;           // heads per decode CTA; 0: one CTA for all heads
  double mla_decode_wide_above = 0;       // heads above which the kernel takes wide tiles instead; 0: never
  double mla_decode_wide_tile_q = 0;      // heads per KV read of a wide tile (CTAs of one cluster share it)
  double mla_decode_tile_kv = 0;          // keys per KV tile; 0: tile_kv_elements / d_qk
  double mla_decode_splits = 0;           // split-KV count fixed by the engine; 0: the occupancy heuristic
  double mla_decode_max_splits = 0;       // the heuristic's cap for MLA decode; 0: max_splits
  double mla_decode_reread = 0;           // share of a head tile's repeated KV read that reaches HBM (not L2)
  double mla_decode_sm_bandwidth = 0;     // one MLA decode CTA's stream rate (as decode_sm_bandwidth); 0: that
  bool mla_decode_mha_kernel = false;     // one head per KV head runs a separate non-grouped kernel ...
  double mla_decode_single_head = 1;      // ... whose KV tiles take this factor
  double mla_decode_fp8 = 1;              // fp8 KV cache: factor on an MLA decode KV tile's time
  double mla_decode_per_row_s = 0;        // SM-time per query head row of an MLA decode CTA (Q in, O out)
  double mla_decode_fixed_s = -1;         // the MLA decode kernel's decode_fixed; < 0: the shared one
  double per_cta_s = 0;                   // SM-time per decode CTA ...
  double per_cta_dim_s = 0;               // ... plus this per element of D
  double per_block_s = 0;                 // SM-time per paged KV block per KV head
  double per_seq_s = 0;                   // per sequence of the op
  double split_s = 2e-6;                  // split-KV: the combine kernel
  double decode_overlap = 4;              // p of the combination of SM time and the HBM stream
  // The AIConfigurator harness's conditions (calibration families only, never part of an op's time): it repeats
  // one kernel, so KV up to a fraction of L2 stays resident between repeats; its MLA module calls carry host-side
  // launch overhead (eager PyTorch); its KV cache uses 64-token blocks.
  double bench_l2_fraction = 0.8;   // of Gpu::l2_bytes (or bench_l2_bytes when the datasheet gives no L2)
  double bench_l2_bytes = 0;
  double bench_l2_speedup = 1.5;    // KV stream rate from L2, in multiples of the HBM rate
  double bench_mla_context_s = 0;
  double bench_mla_generation_s = 0;
};

// Collectives (core/cost/collective_cost.hpp, docs/network.md): NCCL's protocols and algorithms on the scale-up fabric,
// the NIC, and the engines' custom all-reduce. Defaults reproduce the plain alpha-beta model (one protocol, Simple, at
// Efficiency::comm_efficiency, no fixed cost beyond Efficiency::collective_latency_s).
// One NCCL protocol: LL (8-byte flag+data lines), LL128 (128-byte lines, 120 bytes of data), Simple (bulk copies), and
// "narrow": Simple on a reduced channel count, as NCCL runs mid-size collectives (fewer channels to synchronise: a
// lower fixed cost, a fraction of the bandwidth).
struct ProtocolParams {
  double base_s = 0;     // fixed cost of a collective run with it (launch, setup, final synchronisation)
  double hop_s = 0;      // per algorithm step (ring step, tree level), on top of the links' own latency
  double bandwidth = 0;  // fraction of Simple's bandwidth it reaches (0: the protocol is not used)
};

// A collective kind's own bandwidth on the scale-up fabric where it differs from all-reduce's.
struct CollectiveKindParams {
  double efficiency = 0;      // achieved / nominal with Simple on long rings (0: Efficiency::comm_efficiency)
  double ring_penalty = -1;   // efficiency x (1 - ring_penalty / n^2) over n ranks (<0: CollectiveModelParams's)
  double ll_bandwidth = 0;    // LL's fraction of Simple (0: protocols.ll.bandwidth)
  double ll128_bandwidth = 0;  // (0: protocols.ll128.bandwidth)
  double narrow_bandwidth = 0;  // (0: protocols.narrow.bandwidth)
};

// NCCL's all-to-all: one send/recv pair per peer, grouped; LL for small messages, Simple on its default channels per
// peer ("narrow") for mid sizes, Simple on more channels for large ones.
struct AllToAllParams {
  double ll_base_s = 0, ll_peer_s = 0;
  double ll_bandwidth = 0;  // per peer (each peer's messages on their own channel), fraction of Simple's (0: no LL)
  double ll_max_peer_bytes = 0;  // LL only while no message to one peer is larger (0: no limit)
  double narrow_base_s = 0, narrow_peer_s = 0;
  double narrow_bandwidth = 0;  // (0: no narrow Simple)
  double simple_base_s = 0, simple_peer_s = 0;
  double efficiency = 0;    // Simple, achieved / nominal (0: Efficiency::comm_efficiency)
  double ring_penalty = 0;  // efficiency x (1 - ring_penalty / n^2)
};

// The serving engines' own all-reduce inside one NVLink domain (vLLM custom_all_reduce, SGLang, TRT-LLM): one-shot
// (every rank reads all n-1 peers' buffers and reduces locally), two-shot (reduce-scatter + all-gather through peer
// loads and stores), and the symmetric-memory path some use next (multimem, i.e. NVLink SHARP, or two-shot, with a
// copy in and out of the symmetric buffer). The size limits are the engine's, per world size, for this GPU's
// architecture; the engine profile (spec::Engine::custom_allreduce) switches it on and may lower max_bytes.
struct CustomAllReduceParams {
  static constexpr int kMaxGpus = 8;
  double one_shot_base_s = 0, one_shot_peer_s = 0;
  double one_shot_efficiency = 0;       // of the GPU's NVLink bandwidth, reading all peers at once (0: comm_efficiency)
  double one_shot_peer_efficiency = 0;  // cap per peer read (fraction of NVLink bandwidth; 0: none)
  double two_shot_base_s = 0, two_shot_peer_s = 0;
  double two_shot_efficiency = 0;       // (0: comm_efficiency)
  double symm_base_s = 0;
  double symm_efficiency = 0;           // multimem path, of (n+1)/n x S per direction (0: Efficiency::nvls_efficiency)
  std::array<double, kMaxGpus + 1> max_bytes{};       // [n]: the custom kernels for S < max_bytes (0: never)
  std::array<double, kMaxGpus + 1> one_shot_bytes{};  // [n]: one-shot for S < one_shot_bytes, else two-shot
  std::array<double, kMaxGpus + 1> symm_max_bytes{};  // [n]: then the symmetric-memory path for S <= this (0: none)
  std::array<bool, kMaxGpus + 1> multimem{};          // [n]: the symmetric-memory path uses multimem (else two-shot)
};

struct CollectiveModelParams {
  ProtocolParams ll, ll128, narrow, simple{0, 0, 1};
  double ring_penalty = 0;  // bandwidth efficiency x (1 - ring_penalty / n^2) over n ranks (short rings pay more)
  CollectiveKindParams all_gather, reduce_scatter;
  AllToAllParams all_to_all;
  double nic_efficiency = 0;  // achieved / nominal NIC bandwidth (0: Efficiency::comm_efficiency)
  double nic_message_s = 0;   // per message a NIC sends (proxy thread, RDMA post and completion): per inter-node step
  // This GPU's NVSwitch systems reduce in the switch (NVLS). Clusters say so themselves (scaleup.in_network_reduce); the
  // NVSwitch node `parasol calibrate` builds for this GPU's measurements uses this.
  bool in_network_reduce = false;
  CustomAllReduceParams custom_all_reduce;
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

// Attention op time: prefill (context) and decode (generation), MHA/GQA and MLA, as a flash-attention kernel runs them
// (FlashAttention-3 / FlashInfer / FlashMLA style): the work is tiles of query rows x KV keys spread over the SMs, next
// to the op's HBM stream. Parameters: spec::AttentionParams (the GPU YAML's `attention:` section); docs/cost-model.md
// "Attention" has the formulas.
//   per sequence i (q_i new tokens, c_i keys after the step), KV heads h_kv, group g = heads / h_kv, D = d_qk + d_v:
//   prefill (q_i > 1): tiles of tile_q rows, packed GQA (tile_q / g positions x g heads per KV head, FA3) or one
//     query head each (prefill_pack_gqa false: trtllm-gen); KV tiles of n_k = tile_kv_elements / d_qk keys; causal:
//     tile j of m_i = ceil(q_i g / tile_q) (g = 1 unpacked) sees the keys up to its last position, so
//     sum_j ceil(keys_j / n_k) tile pairs (closed form, O(1) per sequence). A pair costs
//     tile_q n_k 2D / (peak/SMs x sm_efficiency) x (mma^p + softmax^p)^(1/p) of one SM, mma = 1 and
//     softmax = d_half / D (p = softmax_overlap; 1 adds them); a tile whose S and O overflow the tensor memory
//     (tmem_columns) splits d_v over passes that each redo Q K^T and the softmax. A tile adds per_tile, a new token
//     per KV head per_kv_token x D/256. Compute = (throughput^p + longest tile^p)^(1/p), throughput = sum / (SMs x
//     max_efficiency / sm_efficiency), p = prefill_tail (0: the larger).
//   decode (q_i = 1): one CTA per (sequence, KV head, split); split-KV (flash-decoding) when the CTAs fill less than
//     0.8 of the SMs: splits = min(SMs / CTAs, max_splits, KV tiles). A KV tile costs the larger of its tensor time
//     (the group padded to decode_tile_q rows, at decode_mma_efficiency) and its bytes at one CTA's stream rate
//     (decode_sm_bandwidth x HBM / SMs); a CTA adds per_cta + per_cta_dim x D, a KV block (kv_block_tokens) per KV
//     head per_block. SM time = max(sum / SMs, longest CTA).
//   MLA decode with head tiles (mla_decode_tile_q > 0): ceil(g / mla_decode_tile_q) CTAs per (sequence, split), each
//     streaming the KV (a share mla_decode_reread of each repeated read reaching HBM); past mla_decode_wide_above
//     heads wide tiles of decode_tile_q rows sharing one read per mla_decode_wide_tile_q heads, no split; a fixed
//     split count (mla_decode_splits) or the heuristic capped at mla_decode_max_splits. MLA prefill on its own
//     kernel: V padded to d_qk (mla_prefill_v_pad), its CTA rows, TMEM use and full-load efficiency.
//   memory = op bytes / (HBM x memory); time = fixed + (sm^p + memory^p)^(1/p) + per_seq x sequences
//     [+ split, the combine kernel]. fp8 KV (the op's bytes say so) has its own factors.
// The SM count is spec::Gpu::sm_count (a GPU without one counts as 128: no wave quantization claim either way).
// Cost: O(sequences) per op, no allocation.
// Thread behaviour: pure functions.
#pragma once

#include "core/cost/op_cost.hpp"

namespace parasol::cost {

// How a measured op ran when it was not as in serving (the calibration families' AIConfigurator samples).
struct AttentionBench {
  bool repeated = false;       // one kernel repeated: KV up to AttentionParams::bench_l2_fraction of L2 stays resident
  double kv_block_tokens = 0;  // > 0: the harness's KV block size instead of AttentionParams::kv_block_tokens
};

// kAttention and kMlaAttention, as in serving.
OpTime attention_op_time(const plan::Op& op, const spec::Gpu& gpu);
// The same under `bench`.
OpTime attention_time(const plan::Op& op, const spec::Gpu& gpu, const AttentionBench& bench);

}  // namespace parasol::cost

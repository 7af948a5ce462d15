// GEMM and element-wise op time: the structural model of spec::GemmParams / spec::ElementwiseParams (the GPU YAML's
// `gemm:` and `elementwise:` sections; docs/cost-model.md "GEMM" and "Element-wise ops" have the formulas).
//   GEMM C[m,n] = A[m,k] B[k,n] (x batch, or grouped: one GEMM per local expert with expert_tokens[e] rows) on S SMs:
//   a candidate tile BM x BN gives T = sum over GEMMs of ceil(m_e/BM) ceil(n/BN) tiles, run in ceil(T/S) waves.
//   One tile costs (k + k_half) x max(2 BM BN / F, (BM a + BN w) / (F / tile_intensity), k_step) with
//   F = peak(dtype) / S x efficiency (max_efficiency; fp8/int8: fp8_max_efficiency; grouped: x grouped_efficiency),
//   a and w the A and B element sizes. Memory: A, B and C once (a grouped GEMM reads each active expert's weights,
//   and writes zero C rows for the op.tokens - rows pairs of other ranks' experts that a zero-filling kernel sees)
//   at HBM x memory (a grouped GEMM's weights at HBM x grouped_memory / fp8_grouped_memory when set). time = fixed + (compute^p + memory^p)^(1/p), p = overlap, with the cheapest tile: cuBLAS-like
//   libraries pick from a handful of tiles by their own estimate, and a GEMM whose tiles fill less than one wave may
//   split k into s slices (s a power of two or the count that fills the wave, floor(S / T); s T <= S; a slice costs at
//   least split_k_min of k; + split_k_fixed and the fp32 partials).
//   fp8/int8 GEMMs use fp8_memory, fp8_k_step and fp8_fixed (another kernel library); dense ones run the library's
//   tile for their m when the GPU lists one (GemmParams::fp8_tiles: vLLM's CUTLASS scaled_mm dispatch; a 2-SM tile
//   runs on SM pairs, each SM with half its math and loads), never split, write C at fp8_store_memory, and add the
//   activation's quantization kernel (fp8_quant_fixed + rows in waves of one per SM x (fp8_quant_row + passes of
//   fp8_quant_pass_k elements x fp8_quant_pass), at least its bytes; without fp8_quant_pass_k rows x fp8_quant_row +
//   its bytes); grouped fp8 GEMMs add the quantization's fixed cost and bytes only (static scales).
//   A repeated batched GEMM (GemmBench, calibration samples) finds bytes that fit in L2 there (bench_l2_*).
//   The SM count is spec::Gpu::sm_count (a GPU without one counts as 128).
//   Element-wise: max(bytes / (HBM x memory[kind]), FLOPs / fp32 peak) + fixed.
// Cost: a handful of tile candidates and one pass over a grouped GEMM's experts; no allocation.
// Thread behaviour: pure functions.
#pragma once

#include "core/cost/op_cost.hpp"

namespace parasol::cost {

// How a measured GEMM ran when it was not as in serving (the calibration families' AIConfigurator samples).
struct GemmBench {
  bool repeated = false;  // one batched GEMM repeated: its bytes up to GemmParams::bench_l2_fraction of L2 stay resident
};

// kGemm and kMoeGate (dense, batched and grouped expert GEMMs), as in serving.
OpTime gemm_op_time(const plan::Op& op, const spec::Gpu& gpu);
// The same under `bench`.
OpTime gemm_time(const plan::Op& op, const spec::Gpu& gpu, const GemmBench& bench);
// Every other compute op that is neither a GEMM nor attention.
OpTime elementwise_op_time(const plan::Op& op, const spec::Gpu& gpu);

// The schedule the GEMM model chose for an op (tests, `parasol step` explanations).
struct GemmSchedule {
  int bm = 0, bn = 0;  // tile
  int split = 1;       // split-K slices
  double tiles = 0;    // tiles of all the op's GEMMs (x split)
  double waves = 0;    // ceil(tiles / SMs)
};
GemmSchedule gemm_schedule(const plan::Op& op, const spec::Gpu& gpu);

}  // namespace parasol::cost

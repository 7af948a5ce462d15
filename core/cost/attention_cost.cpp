// Attention op time (attention_cost.hpp): flash-attention tiles on the SMs next to the HBM stream.
#include "core/cost/attention_cost.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace parasol::cost {
namespace {

// A GPU YAML without `sm_count`: a neutral count, so that the per-SM terms stay defined (the tile costs then carry
// no claim about this GPU's wave quantization).
constexpr double kUnknownSmCount = 128;

// (a^p + b^p)^(1/p): p = 1 adds the two, a large p takes the larger.
double soft_max(double a, double b, double p) {
  if (a <= 0) return b;
  if (b <= 0) return a;
  const double m = std::max(a, b);
  return m * std::pow(1.0 + std::pow(std::min(a, b) / m, p), 1.0 / p);  // the larger's term is pow(1, p) = 1
}

// ceil(c / d) for c >= 0, d >= 1 (below 2^53) from a multiply by inv = 1 / d and a truncation (no divide): the
// truncated product is within one of floor(c / d), so at most two exact integer corrections reach the ceiling.
int64_t ceil_div(int64_t c, int64_t d, double inv) {
  auto t = static_cast<int64_t>(static_cast<double>(c) * inv);
  if (t * d < c) ++t;
  if (t * d < c) ++t;
  if (t > 0 && (t - 1) * d >= c) --t;
  return t;
}

void finish(OpTime& t) {
  const double body = t.time_s - t.launch_s;
  if (t.launch_s > body)
    t.bound = Bound::kLaunch;
  else
    t.bound = t.compute_s >= t.memory_s ? Bound::kCompute : Bound::kMemory;
}

}  // namespace

OpTime attention_op_time(const plan::Op& op, const spec::Gpu& gpu) { return attention_time(op, gpu, {}); }

OpTime attention_time(const plan::Op& op, const spec::Gpu& gpu, const AttentionBench& bench) {
  const spec::AttentionParams& p = gpu.attention;
  OpTime t;
  const double peak = op_peak_flops(op, gpu);
  const double bw = gpu.hbm_bw_Bps;
  if (op.q_lens.empty() || op.q_lens.size() != op.ctx_lens.size()) {
    // No per-sequence lengths (a hand-made op): the roofline at the model's full-load rates.
    t.launch_s = p.prefill_fixed_s;
    if (op.flops > 0) t.compute_s = op.flops / (peak * p.prefill_max_efficiency);
    if (op.bytes > 0) t.memory_s = op.bytes / (bw * p.decode_memory);
    t.time_s = t.launch_s + std::max(t.compute_s, t.memory_s);
    finish(t);
    return t;
  }
  const double S = gpu.sm_count > 0 ? gpu.sm_count : kUnknownSmCount;
  const bool mla = op.kind == plan::OpKind::kMlaAttention;
  const double hq = static_cast<double>(std::max<int64_t>(1, op.heads));
  const double hkv = static_cast<double>(std::max<int64_t>(1, op.kv_heads));
  const double dk = static_cast<double>(std::max<int64_t>(1, op.head_dim));
  const double dv_op = op.v_head_dim > 0 ? static_cast<double>(op.v_head_dim) : dk;
  const double g = std::max(1.0, hq / hkv);
  const double a = dtype_bytes(op.dtype);
  // MLA's prefill sequences run the expanded form, its decodes the absorbed one (the planner emits them as two ops).
  const double tile_q = mla && p.mla_prefill_tile_q > 0 ? p.mla_prefill_tile_q : p.tile_q;

  const double nk = std::clamp(std::round(p.tile_kv_elements / dk), 16.0, 256.0);  // keys per KV tile
  const double nkd = mla && p.mla_decode_tile_kv > 0 ? p.mla_decode_tile_kv : nk;  // keys per decode KV tile
  // Prefill CTAs: one per KV head holding g query heads (packed GQA), or one per query head.
  const double pf_heads = p.prefill_pack_gqa ? hkv : hq;
  const double pf_group = p.prefill_pack_gqa ? g : 1.0;
  const double block_tokens = bench.kv_block_tokens > 0 ? bench.kv_block_tokens : p.kv_block_tokens;

  // Pass 1: how many CTAs and KV tiles, for the split-KV decision. Counts in integers: exact, and no divides.
  double dec_ctas = 0, pf_tiles = 0, dec_kv_tiles_max = 0, blocks = 0, dec_tiles_sum = 0, seqs = 0;
  bool any_prefill = false;
  const auto nk_i = static_cast<int64_t>(nkd);
  const double inv_nk = 1 / nkd;
  const bool whole_blocks = block_tokens >= 1 && block_tokens == std::floor(block_tokens) && block_tokens < 1e15;
  const auto block_i = whole_blocks ? static_cast<int64_t>(block_tokens) : 1;
  const double inv_block = 1 / block_tokens;
  int64_t dec_n = 0, tiles_sum = 0, tiles_max = 0, blocks_i = 0, seqs_i = 0, ctx_sum_i = 0, tokens_i = 0;
  for (size_t i = 0; i < op.q_lens.size(); ++i) {
    const int64_t q = op.q_lens[i], c = std::max<int64_t>(0, op.ctx_lens[i]);
    ctx_sum_i += op.ctx_lens[i], tokens_i += q;
    if (q <= 0) continue;
    ++seqs_i;
    if (q == 1) {
      const int64_t tiles = ceil_div(c, nk_i, inv_nk);
      ++dec_n;
      tiles_sum += tiles;
      tiles_max = std::max(tiles_max, tiles);
      if (whole_blocks)
        blocks_i += ceil_div(c, block_i, inv_block);
      else
        blocks += std::ceil(static_cast<double>(c) / block_tokens);
    } else {
      pf_tiles += pf_heads * std::ceil(static_cast<double>(q) * pf_group / tile_q);
      any_prefill = true;
    }
  }
  seqs = static_cast<double>(seqs_i);
  dec_tiles_sum = static_cast<double>(tiles_sum);
  dec_kv_tiles_max = static_cast<double>(tiles_max);
  blocks += static_cast<double>(blocks_i);
  const double ctx_sum = static_cast<double>(ctx_sum_i), tokens = static_cast<double>(tokens_i);
  // MLA's expanded prefill on a kernel without distinct QK / V head dims runs V zero-padded to d_qk.
  const bool mla_pf_kernel = mla && any_prefill;
  const double dv = mla_pf_kernel && p.mla_prefill_v_pad ? std::max(dv_op, dk) : dv_op;
  const double D = dk + dv;
  // MLA's absorbed decode in head tiles (mla_decode_tile_q > 0): a CTA holds `dec_rows` heads of a sequence's split,
  // `ctas_per_kv` CTAs per (sequence, KV head), of which `readers` read the KV each (a wide tile's cluster shares one
  // read). Otherwise one CTA per (sequence, KV head) holds the whole group, padded to decode_tile_q rows.
  const bool mla_tiles = mla && !any_prefill && p.mla_decode_tile_q > 0;
  // KV bytes per token per KV head, from the op's bytes (Q and O are the rest): the KV cache dtype without a field
  // for it. MLA's absorbed decode reads one latent that is both K and V.
  const double qo = tokens * hq * (dk + dv_op) * a;
  const double kv_tok = ctx_sum > 0 ? std::max(0.0, op.bytes - qo) / (ctx_sum * hkv) : 0.0;
  const double natural = (mla && hkv == 1 ? dk : dk + dv_op) * a;
  const bool fp8 = kv_tok > 0 && kv_tok < 0.75 * natural;

  const double sm_peak = peak / S;
  // A tile pair's tensor time times its (MMA + softmax) share, in units of the MMA at D: the MMA share is 1, the
  // softmax's d_half / D. When the tile's S (n_k columns) and O (d_v columns) overflow the tensor memory, the kernel
  // splits d_v over `passes`, each of which recomputes Q K^T and the softmax.
  double mma_share = 1, softmax_share = p.prefill_d_half / D;
  if (p.tmem_columns > 0 && !(mla_pf_kernel && !p.mla_prefill_tmem)) {
    const double passes = std::ceil((nk + dv) / p.tmem_columns);
    if (passes > 1) mma_share = (passes * dk + dv) / D, softmax_share *= passes;
  }
  const double pair_share = p.prefill_softmax_overlap == 1
                                ? mma_share + softmax_share
                                : soft_max(mma_share, softmax_share, p.prefill_softmax_overlap);
  const double fp8_tile = fp8 ? std::max(0.05, p.prefill_fp8_tile + p.prefill_fp8_tile_slope * (D - 256) / 256) : 1.0;
  const double t_pair = tile_q * nk * 2 * D / (sm_peak * p.prefill_sm_efficiency) * pair_share * fp8_tile *
                        (mla ? p.mla_prefill_factor : 1.0);
  const double fp8_over = fp8 ? p.prefill_fp8_overhead : 1.0;
  const double fp8_kv_write = !fp8 ? 1.0 : p.prefill_fp8_kv_write > 0 ? p.prefill_fp8_kv_write : p.prefill_fp8_overhead;
  const double max_eff =
      mla_pf_kernel && p.mla_prefill_max_efficiency > 0 ? p.mla_prefill_max_efficiency : p.prefill_max_efficiency;
  const double derate = std::min(1.0, max_eff / p.prefill_sm_efficiency);
  const double dec_eff = (mla ? p.mla_decode_mma_efficiency : p.decode_mma_efficiency) * (fp8 ? p.decode_fp8_mma : 1.0);
  const double sm_bw = mla_tiles && p.mla_decode_sm_bandwidth > 0 ? p.mla_decode_sm_bandwidth : p.decode_sm_bandwidth;
  // Wide tiles past mla_decode_wide_above heads, unless the narrow CTAs (x 2) still leave SMs idle: TRT-LLM's
  // trtllm-gen MLA generation kernel choice (fmhaKernels.h hashFromRunnerParams: the low-latency kernel while
  // batch x ceil(heads / 16) x 2 <= SMs).
  bool wide = false;
  if (mla_tiles && p.mla_decode_wide_above > 0 && g > p.mla_decode_wide_above)
    wide = static_cast<double>(dec_n) * hkv * std::ceil(g / p.mla_decode_tile_q) * 2 > S;
  double dec_rows = std::ceil(g / p.decode_tile_q) * p.decode_tile_q, ctas_per_kv = 1, readers = 1;
  if (mla_tiles) {
    const double rows = wide ? p.decode_tile_q : p.mla_decode_tile_q;
    dec_rows = rows;
    ctas_per_kv = std::ceil(g / rows);
    readers = wide && p.mla_decode_wide_tile_q > 0 ? std::ceil(g / p.mla_decode_wide_tile_q) : ctas_per_kv;
  }
  const double t_dec_mma = dec_rows * nkd * 2 * D / (sm_peak * dec_eff);
  const double t_dec_stream = nkd * kv_tok / (sm_bw * bw / S);
  // One head per KV head runs the engine's non-grouped kernel (its own factor); fp8 KV its own factor.
  const double t_dec_tile = std::max(t_dec_mma, t_dec_stream) * (mla_tiles && fp8 ? p.mla_decode_fp8 : 1.0) *
                            (mla_tiles && g == 1 && p.mla_decode_mha_kernel ? p.mla_decode_single_head : 1.0);

  dec_ctas = hkv * ctas_per_kv * static_cast<double>(dec_n);
  blocks *= hkv;
  double splits = 1;
  if (mla_tiles && p.mla_decode_splits > 0) {  // a split count the engine fixes (at most one split per KV tile)
    if (dec_ctas > 0) splits = std::clamp(p.mla_decode_splits, 1.0, std::max(1.0, dec_kv_tiles_max));
  } else if (dec_ctas > 0 && !wide && dec_ctas + pf_tiles < 0.8 * S && dec_kv_tiles_max > 4) {
    // (a wide tile's kernel runs a persistent schedule without split-KV)
    const double cap = mla_tiles && p.mla_decode_max_splits > 0 ? p.mla_decode_max_splits : p.max_splits;
    splits = std::clamp(std::floor(S / (dec_ctas + pf_tiles)), 1.0, std::min(cap, dec_kv_tiles_max));
  }

  // Pass 2: SM time. A decode CTA costs cta + ceil(tiles / splits) t_dec_tile (without a split: pass 1's sums).
  double w_dec = 0, w_pf = 0, w_kv = 0, longest = 0;
  const double cta = p.per_cta_s + p.per_cta_dim_s * D;
  if (dec_n > 0) {
    // MLA head tiles: each CTA loads its heads' Q rows and writes their O rows (every split its partial O).
    if (mla_tiles) w_dec = static_cast<double>(dec_n) * hq * splits * p.mla_decode_per_row_s;
    if (splits == 1) {
      w_dec += hkv * ctas_per_kv * (static_cast<double>(dec_n) * cta + dec_tiles_sum * t_dec_tile);
      longest = cta + dec_kv_tiles_max * t_dec_tile;
    } else {
      for (size_t i = 0; i < op.q_lens.size(); ++i) {  // split-KV: the split count on each sequence's tiles
        if (op.q_lens[i] != 1) continue;
        const double tiles = static_cast<double>(ceil_div(std::max<int64_t>(0, op.ctx_lens[i]), nk_i, inv_nk));
        const double u = cta + std::ceil(tiles / splits) * t_dec_tile;
        w_dec += hkv * ctas_per_kv * splits * u;
        longest = std::max(longest, u);
      }
    }
  }
  // Per new token and KV head: its K/V into the paged cache; MLA's expanded prefill has its own figure (its K/V come
  // from the kv_b GEMM and only the latent goes to the cache, by its own op).
  const double per_kv_token = mla_pf_kernel && p.mla_prefill_per_token_s >= 0 ? p.mla_prefill_per_token_s
                                                                              : p.prefill_per_kv_token_s * fp8_kv_write;
  for (size_t i = 0; any_prefill && i < op.q_lens.size(); ++i) {
    const double q = static_cast<double>(op.q_lens[i]), c = static_cast<double>(op.ctx_lens[i]);
    if (q <= 1) continue;
    // Tile j (of m) holds positions [j pos, (j+1) pos) of its pf_group heads; it sees c0 + (j+1) pos keys (its last
    // position's), so sum_j ceil(keys_j / nk) ~ m c0 / nk + pos m (m+1) / (2 nk) - overhang / nk + m / 2.
    const double pos = tile_q / pf_group;
    const double m = std::ceil(q * pf_group / tile_q);
    const double c0 = std::max(0.0, c - q);
    const double pairs = m * c0 / nk + pos * m * (m + 1) / (2 * nk) - std::max(0.0, m * pos - q) / nk + 0.5 * m;
    w_pf += pf_heads * (m * p.prefill_per_tile_s * fp8_over + pairs * t_pair);
    w_kv += per_kv_token * q * hkv * D / 256;
    longest = std::max(longest, p.prefill_per_tile_s * fp8_over + std::ceil(c / nk) * t_pair);
  }
  const bool prefill = w_pf > 0;
  // The SMs' throughput and the longest tile: the tail adds to the throughput (p >= 1) or hides under it (0: max).
  const double throughput = (w_dec + w_pf / derate) / S;
  const double sm =
      prefill && p.prefill_tail > 0 ? soft_max(throughput, longest, p.prefill_tail) : std::max(throughput, longest);
  t.compute_s = sm + blocks * p.per_block_s / S + seqs * p.per_seq_s;

  // The new tokens' K/V through the paged cache runs beside the tiles' math, like the HBM stream.
  // Head tiles that each read the KV: a share of the repeated reads misses L2.
  const double reread = readers > 1 ? (readers - 1) * p.mla_decode_reread * kv_tok * ctx_sum * hkv : 0.0;
  t.memory_s = (op.bytes + reread) / (bw * (prefill ? p.prefill_memory : p.decode_memory)) + w_kv / S;
  if (bench.repeated && !prefill) {
    const double l2 = (gpu.l2_bytes > 0 ? gpu.l2_bytes : p.bench_l2_bytes) * p.bench_l2_fraction;
    if (l2 > 0) {
      const double resident = 1.0 / (1.0 + std::pow(op.bytes / l2, 6.0));
      t.memory_s *= 1 - resident + resident / p.bench_l2_speedup;
    }
  }
  t.launch_s = prefill ? (mla_pf_kernel && p.mla_prefill_fixed_s >= 0 ? p.mla_prefill_fixed_s : p.prefill_fixed_s)
                      : (mla_tiles && p.mla_decode_fixed_s >= 0 ? p.mla_decode_fixed_s : p.decode_fixed_s);
  if (fp8) t.launch_s += (prefill ? p.prefill_fp8_fixed_s : p.decode_fp8_fixed_s) * D / 256;
  if (splits > 1) t.launch_s += p.split_s;
  t.time_s = t.launch_s + soft_max(t.compute_s, t.memory_s, prefill ? p.prefill_overlap : p.decode_overlap);
  finish(t);
  return t;
}

}  // namespace parasol::cost

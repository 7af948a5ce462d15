// GEMM and element-wise op time (gemm_cost.hpp).
#include "core/cost/gemm_cost.hpp"

#include <algorithm>
#include <cmath>

namespace parasol::cost {
namespace {

// The generic tiles (BM x BN) a GEMM library chooses from: the WGMMA/UMMA-friendly shapes of cuBLAS, CUTLASS and the
// Triton fused-MoE configs, plus a 16-row tile for GEMMs of a few rows (swap-AB / small-M kernels).
constexpr int kTiles[][2] = {{16, 64}, {64, 64}, {64, 128}, {128, 128}, {128, 256}, {256, 128}};
constexpr int kTileCount = sizeof(kTiles) / sizeof(kTiles[0]);
// The distinct BM of kTiles, for the one pass over a grouped GEMM's experts.
constexpr int kBms[] = {16, 64, 128, 256};
constexpr int kBmCount = sizeof(kBms) / sizeof(kBms[0]);
// A GPU that does not state its SM count.
constexpr int kDefaultSms = 128;

int bm_index(int bm) {
  for (int i = 0; i < kBmCount; ++i)
    if (kBms[i] == bm) return i;
  return -1;
}

bool low_precision(DType d) { return d == DType::kFp8 || d == DType::kInt8; }

double ceil_div(double a, double b) { return std::ceil(a / b); }

struct Result {
  OpTime time;
  GemmSchedule schedule;
};

// (c^p + m^p)^(1/p); p >= 32 is max (within 2%).
double combine(double c, double m, double p) {
  if (p >= 32 || c <= 0 || m <= 0) return std::max(c, m);
  const double hi = std::max(c, m), lo = std::min(c, m);
  return hi * std::pow(1.0 + std::pow(lo / hi, p), 1.0 / p);
}

Result gemm_model(const plan::Op& op, const spec::Gpu& gpu, const GemmBench& bench) {
  Result r;
  const spec::GemmParams& g = gpu.gemm;
  const bool grouped = !op.expert_tokens.empty();
  const double m = static_cast<double>(op.m), n = static_cast<double>(op.n), k = static_cast<double>(op.k);
  const double batch = static_cast<double>(std::max<int64_t>(op.batch, 1));
  if (m <= 0 || n <= 0 || k <= 0) return r;  // nothing to run (a rank with no rows for its experts)
  const DType dt = op.dtype;
  const bool lowp = low_precision(dt);
  const double act = dt == DType::kFp32 ? 4.0 : 2.0;  // activations (A before quantization, C)
  const double a_in = lowp ? 1.0 : act;              // A as the main loop reads it
  const double w = dtype_bytes(dt);                  // B (weights)
  const double S = gpu.sm_count > 0 ? gpu.sm_count : kDefaultSms;
  // int4 is weight-only: the math runs at the 16-bit rate.
  const double peak = dt == DType::kInt4 ? gpu.peak(DType::kBf16) : op_peak_flops(op, gpu);
  double eff = lowp ? g.fp8_max_efficiency : g.max_efficiency;
  const bool batched = !grouped && batch > 1;
  if (grouped) eff *= lowp ? g.fp8_grouped_efficiency : g.grouped_efficiency;
  if (batched) eff *= g.batched_efficiency;
  eff = std::min(eff, 1.0);
  const double per_sm = peak * eff / S;                 // FLOP/s of one SM's tile
  const double feed = per_sm / std::max(g.tile_intensity, 1e-9);  // operand bytes/s into one SM's tile
  const double bw = gpu.hbm_bw_Bps * (lowp ? g.fp8_memory : g.memory);
  // A grouped GEMM streams its experts' weights at its own fraction (the fused-MoE kernel's weight loads).
  const double grouped_mem = lowp ? g.fp8_grouped_memory : g.grouped_memory;
  const double bw_w = grouped && grouped_mem > 0 ? gpu.hbm_bw_Bps * grouped_mem : bw;
  const double k_step = lowp ? g.fp8_k_step_s : g.k_step_s;
  const double p = g.overlap;

  // Rows of tiles per BM: batch x ceil(m / BM), or over a grouped GEMM's experts.
  double mtiles[kBmCount];
  double rows = m * batch, active = batch;
  if (grouped) {
    for (double& x : mtiles) x = 0;
    rows = 0, active = 0;
    for (int64_t v : op.expert_tokens) {
      if (v <= 0) continue;
      const double e = static_cast<double>(v);
      rows += e, active += 1;
      for (int i = 0; i < kBmCount; ++i) mtiles[i] += ceil_div(e, kBms[i]);
    }
    if (rows <= 0) return r;
  } else {
    for (int i = 0; i < kBmCount; ++i) mtiles[i] = batch * ceil_div(m, kBms[i]);
  }
  // A kernel that zero-fills other ranks' pairs (op.tokens above its rows: vLLM's Triton fused MoE under an expert
  // map) writes their C rows too.
  const double foreign = grouped ? std::max(static_cast<double>(op.tokens) - rows, 0.0) : 0.0;
  // A dense fp8 GEMM's epilogue writes C at its own fraction (the fp8 library's scaled epilogue).
  const double bw_c = lowp && !grouped && g.fp8_store_memory > 0 ? gpu.hbm_bw_Bps * g.fp8_store_memory : bw;
  const double a_bytes = rows * k * a_in, c_bytes = (rows + foreign) * n * act, w_bytes = active * k * n * w;
  double mem_s = a_bytes / bw + c_bytes / bw_c + w_bytes / bw_w;
  if (bench.repeated && batched && g.bench_l2_speedup > 0) {
    // A repeated kernel finds the bytes that fit in L2 still there (a smooth step at the resident capacity).
    const double l2 = (gpu.l2_bytes > 0 ? gpu.l2_bytes : g.bench_l2_bytes) * g.bench_l2_fraction;
    if (l2 > 0) {
      const double x = (a_bytes + c_bytes + w_bytes) / l2, x2 = x * x;
      const double resident = 1.0 / (1.0 + x2 * x2 * x2);
      mem_s *= 1.0 - resident + resident / g.bench_l2_speedup;
    }
  }

  // A tile's time over `kk` k elements of its main loop on `sms` SMs (a 2-SM tile: each SM computes and loads half of
  // it, but runs the whole k loop, so the per-k latency floor is not shared).
  auto tile_s = [&](double bm, double bn, double kk, double sms) {
    const double math = 2.0 * bm * bn / (per_sm * sms);
    const double operands = (bm * a_in + bn * w) / (feed * sms);
    return (kk + g.k_half) * std::max({math, operands, k_step});
  };

  const bool fixed_tile = lowp && !grouped && !g.fp8_tiles.empty();
  const bool may_split = !grouped && batch == 1 && !lowp;
  // Per split factor s = 2^j (j = 0: no split) the least compute time over the tiles: candidates with one s stream
  // the same bytes, so the cheapest is the one of least compute, and each s combines once. A split GEMM keeps its
  // tiles in one wave (s x tiles <= S); a slice costs at least split_k_min of k (the set of candidates does not
  // depend on k, so the time never falls as k grows).
  constexpr int kSplits = 8;  // s up to 128
  double cbest[kSplits];
  GemmSchedule sched[kSplits];
  for (double& x : cbest) x = INFINITY;
  // Besides the powers of two, the split that fills one wave (cuBLAS's split-K takes any slice count): s = floor(S /
  // tiles), its own partials' bytes, so it combines per candidate.
  double fill_body = INFINITY, fill_c = 0, fill_m = 0;
  GemmSchedule fill_sched;
  auto consider = [&](int bm, double mt, int bn, int sms) {
    const double tiles = mt * ceil_div(n, bn);
    const double waves = std::ceil(tiles / std::max(std::floor(S / sms), 1.0));  // 2-SM tiles run on SM pairs
    const double c = waves * tile_s(bm, bn, k, sms);
    if (c < cbest[0]) cbest[0] = c, sched[0] = {bm, bn, 1, tiles, waves};
    if (!may_split) return;
    for (int j = 1, s = 2; j < kSplits && tiles * s <= S; ++j, s *= 2) {
      const double cs = tile_s(bm, bn, std::max(std::ceil(k / s), g.split_k_min), 1);
      if (cs < cbest[j]) cbest[j] = cs, sched[j] = {bm, bn, s, tiles * s, 1.0};
    }
    const double sf = std::min(std::floor(S / tiles), 128.0);
    const auto si = static_cast<int>(sf);
    if (si >= 3 && (si & (si - 1)) != 0) {
      const double cs = tile_s(bm, bn, std::max(std::ceil(k / sf), g.split_k_min), 1);
      const double ms = mem_s + 2.0 * sf * m * n * 4.0 / bw;  // fp32 partials written and read back
      const double body = combine(cs, ms, p) + g.split_k_fixed_s;
      if (body < fill_body) fill_body = body, fill_c = cs, fill_m = ms, fill_sched = {bm, bn, si, tiles * sf, 1.0};
    }
  };
  if (fixed_tile) {
    const spec::GemmTile* t = &g.fp8_tiles.back();
    for (const auto& row : g.fp8_tiles)
      if (row.max_m == 0 || static_cast<double>(row.max_m) >= m) {
        t = &row;
        break;
      }
    const int i = bm_index(t->bm);
    consider(t->bm, i >= 0 ? mtiles[i] : batch * ceil_div(m, t->bm), t->bn, t->sms);
  } else {
    // fp8 grouped expert GEMMs: the library's tiles have at least fp8_grouped_min_bm rows.
    const int min_bm = lowp && grouped ? g.fp8_grouped_min_bm : 0;
    for (int i = 0; i < kTileCount; ++i)
      if (kTiles[i][0] >= min_bm) consider(kTiles[i][0], mtiles[bm_index(kTiles[i][0])], kTiles[i][1], 1);
  }
  double best_body = combine(cbest[0], mem_s, p), best_c = cbest[0], best_m = mem_s;
  GemmSchedule best = sched[0];
  for (int j = 1, s = 2; j < kSplits && cbest[j] < INFINITY; ++j, s *= 2) {
    const double ms = mem_s + 2.0 * s * m * n * 4.0 / bw;  // fp32 partials written and read back
    const double body = combine(cbest[j], ms, p) + g.split_k_fixed_s;
    if (body < best_body) best_body = body, best_c = cbest[j], best_m = ms, best = sched[j];
  }
  if (fill_body < best_body) best_body = fill_body, best_c = fill_c, best_m = fill_m, best = fill_sched;

  double extra = 0;  // the activation's quantization kernel
  if (lowp) {
    const double q_bytes_s = rows * k * (act + 1.0) / bw;
    if (grouped) {
      extra = g.fp8_quant_fixed_s + q_bytes_s;
    } else if (g.fp8_quant_pass_k > 0) {
      // One block per row, the rows in waves of one per SM, each row in ceil(k / pass_k) passes of the block's
      // vectors; never faster than its bytes.
      const double passes = ceil_div(k, g.fp8_quant_pass_k);
      const double row_s = g.fp8_quant_row_s + passes * g.fp8_quant_pass_s;
      extra = g.fp8_quant_fixed_s + std::max(q_bytes_s, ceil_div(rows, S) * S * row_s);
    } else {
      extra = g.fp8_quant_fixed_s + q_bytes_s + rows * g.fp8_quant_row_s;
    }
  }
  OpTime& t = r.time;
  t.launch_s = grouped ? (lowp ? g.fp8_grouped_fixed_s + active * g.fp8_grouped_expert_s
                               : g.grouped_fixed_s + active * g.grouped_expert_s)
               : lowp  ? g.fp8_fixed_s
               : batched && g.batched_fixed_s > 0 ? g.batched_fixed_s
                                                  : g.fixed_s;
  t.compute_s = best_c;
  t.memory_s = best_m + extra;
  t.time_s = t.launch_s + best_body + extra;
  if (t.launch_s > best_body + extra)
    t.bound = Bound::kLaunch;
  else
    t.bound = best_c >= best_m + extra ? Bound::kCompute : Bound::kMemory;
  r.schedule = best;
  return r;
}

}  // namespace

OpTime gemm_op_time(const plan::Op& op, const spec::Gpu& gpu) { return gemm_model(op, gpu, GemmBench{}).time; }

OpTime gemm_time(const plan::Op& op, const spec::Gpu& gpu, const GemmBench& bench) {
  return gemm_model(op, gpu, bench).time;
}

GemmSchedule gemm_schedule(const plan::Op& op, const spec::Gpu& gpu) {
  return gemm_model(op, gpu, GemmBench{}).schedule;
}

OpTime elementwise_op_time(const plan::Op& op, const spec::Gpu& gpu) {
  const spec::ElementwiseParams& e = gpu.elementwise;
  double frac = e.default_memory;
  if (!e.memory.empty()) {
    // plan::to_string's names (all within the small-string buffer: no allocation).
    const char* name = nullptr;
    switch (op.kind) {
      case plan::OpKind::kRmsNorm: name = "rmsnorm"; break;
      case plan::OpKind::kActivation: name = "activation"; break;
      case plan::OpKind::kRope: name = "rope"; break;
      case plan::OpKind::kKvAppend: name = "kv_append"; break;
      case plan::OpKind::kEmbedding: name = "embedding"; break;
      case plan::OpKind::kMoeGate: name = "moe_gate"; break;
      case plan::OpKind::kMoeDispatch: name = "moe_dispatch"; break;
      case plan::OpKind::kMoeCombine: name = "moe_combine"; break;
      case plan::OpKind::kSample: name = "sample"; break;
      default: break;
    }
    if (name)
      if (auto it = e.memory.find(name); it != e.memory.end()) frac = it->second;
  }
  OpTime t;
  t.launch_s = e.fixed_s;
  if (op.bytes > 0) t.memory_s = op.bytes / (gpu.hbm_bw_Bps * frac);
  if (op.flops > 0) t.compute_s = op.flops / op_peak_flops(op, gpu);
  finish_time(t);
  return t;
}

}  // namespace parasol::cost

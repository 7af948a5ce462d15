// The GEMM model (core/cost/gemm_cost.hpp): its closed form, wave quantization, monotonicity in m, n and k, fp8 at the
// fp8 peak, grouped expert GEMMs per expert, the element-wise form, and (when ../shared is there) the shipped H100
// parameters on the held-out split of AIConfigurator's gemm table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/cost/fitting.hpp"
#include "core/cost/gemm_cost.hpp"
#include "plan_fixtures.hpp"

namespace parasol::cost {
namespace {

using plan::OpKind;
using testing::shipped_gpu;

plan::Op gemm(int64_t m, int64_t n, int64_t k, DType dt = DType::kBf16) {
  plan::Op o;
  o.kind = OpKind::kGemm;
  o.dtype = dt;
  o.m = m, o.n = n, o.k = k;
  o.flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  return o;
}

// The closed form of gemm_cost.hpp for a dense 16-bit GEMM and the schedule the model chose.
double closed_form(const plan::Op& op, const spec::Gpu& gpu) {
  const auto& g = gpu.gemm;
  const GemmSchedule s = gemm_schedule(op, gpu);
  const double m = static_cast<double>(op.m), n = static_cast<double>(op.n), k = static_cast<double>(op.k);
  const double S = gpu.sm_count, F = gpu.peak(DType::kBf16) * g.max_efficiency / S;
  const double kk = s.split > 1 ? std::max(std::ceil(k / s.split), g.split_k_min) : k;
  const double tile = (kk + g.k_half) * std::max({2.0 * s.bm * s.bn / F, (s.bm * 2.0 + s.bn * 2.0) * g.tile_intensity / F,
                                                  g.k_step_s});
  const double c = s.waves * tile;
  double mem = (m * k * 2 + m * n * 2 + k * n * 2) / (gpu.hbm_bw_Bps * g.memory);
  if (s.split > 1) mem += 2.0 * s.split * m * n * 4 / (gpu.hbm_bw_Bps * g.memory);
  const double body = std::pow(std::pow(c, g.overlap) + std::pow(mem, g.overlap), 1.0 / g.overlap);
  return g.fixed_s + body + (s.split > 1 ? g.split_k_fixed_s : 0.0);
}

TEST(GemmCost, TimeIsTheClosedFormOfTheChosenTileAndWaves) {
  for (const char* name : {"a100-sxm-80gb", "h100-sxm", "b200"}) {
    const auto gpu = shipped_gpu(name);
    ASSERT_GT(gpu.sm_count, 0) << name;
    for (auto op : {gemm(8192, 8192, 8192), gemm(1, 8192, 8192), gemm(64, 64, 65536), gemm(333, 1000, 777)}) {
      const GemmSchedule s = gemm_schedule(op, gpu);
      EXPECT_DOUBLE_EQ(s.waves, std::ceil(s.tiles / gpu.sm_count));
      EXPECT_NEAR(op_time(op, gpu).time_s, closed_form(op, gpu), 1e-12) << name << " " << op.m << "x" << op.n << "x" << op.k;
    }
  }
}

TEST(GemmCost, TilesJustOverOneWaveCostTwoWaves) {
  // A fixed 128x128 tile (as a library's fp8 tile table gives it): 12 x 11 = 132 tiles fill H100's 132 SMs once;
  // one more row makes 13 x 11 = 143 tiles, two waves: twice the main-loop time of a compute-bound GEMM (the
  // activation's quantization kernel and the fixed cost do not double, so the whole op grows by less).
  auto gpu = shipped_gpu("h100-sxm");
  gpu.gemm.fp8_tiles = {{0, 128, 128}};
  const auto one = gemm(12 * 128, 11 * 128, 32768, DType::kFp8), two = gemm(12 * 128 + 1, 11 * 128, 32768, DType::kFp8);
  EXPECT_EQ(gemm_schedule(one, gpu).waves, 1);
  EXPECT_EQ(gemm_schedule(two, gpu).waves, 2);
  const double r = op_time(two, gpu).compute_s / op_time(one, gpu).compute_s;
  EXPECT_GT(r, 1.85);
  EXPECT_LT(r, 2.05);
  EXPECT_GT(op_time(two, gpu).time_s, 1.3 * op_time(one, gpu).time_s);
  // The 16-bit model picks its tile by cost: a 64-row tile (25 x 11 = 275 tiles, three waves of half-height tiles)
  // softens the step, but the extra row still costs more than 20% (no tile hides it).
  const auto b1 = gemm(12 * 128, 11 * 128, 32768), b2 = gemm(12 * 128 + 1, 11 * 128, 32768);
  EXPECT_GT(op_time(b2, gpu).time_s, 1.2 * op_time(b1, gpu).time_s);
}

TEST(GemmCost, TimeNeverFallsAsMNOrKGrows) {
  std::vector<int64_t> sizes;
  for (int64_t v = 1; v <= 70000; v = std::max(v + 1, v * 5 / 4)) sizes.push_back(v);
  for (const char* name : {"a100-sxm-80gb", "h100-sxm", "b200", "mi300x"}) {
    const auto gpu = shipped_gpu(name);
    for (DType dt : {DType::kBf16, DType::kFp8}) {
      auto g = gpu;
      g.gemm.fp8_tiles.clear();  // a library tile table switches tiles by m (real kernels do): m is checked without
      for (int64_t a : {1, 96, 4096}) {
        for (int64_t b : {64, 5120}) {
          double pm = 0, pn = 0, pk = 0;
          for (int64_t v : sizes) {
            const double tm = op_time(gemm(v, a, b, dt), g).time_s, tn = op_time(gemm(a, v, b, dt), g).time_s,
                         tk = op_time(gemm(a, b, v, dt), g).time_s;
            EXPECT_GE(tm, pm * (1 - 1e-12)) << name << " m=" << v;
            EXPECT_GE(tn, pn * (1 - 1e-12)) << name << " n=" << v;
            EXPECT_GE(tk, pk * (1 - 1e-12)) << name << " k=" << v;
            pm = tm, pn = tn, pk = tk;
          }
        }
      }
    }
  }
}

TEST(GemmCost, Fp8RunsLargeGemmsAtTheFp8Peak) {
  for (const char* name : {"h100-sxm", "h200-sxm", "b200", "gb200"}) {
    const auto gpu = shipped_gpu(name);
    const auto bf = gemm(8192, 8192, 8192), f8 = gemm(8192, 8192, 8192, DType::kFp8);
    const OpTime tb = op_time(bf, gpu), t8 = op_time(f8, gpu);
    EXPECT_EQ(tb.bound, Bound::kCompute) << name;
    EXPECT_LT(t8.time_s, 0.8 * tb.time_s) << name;
    // Never faster than the fp8 peak itself.
    EXPECT_GT(t8.time_s, f8.flops / gpu.peak(DType::kFp8)) << name;
  }
}

TEST(GemmCost, TwoSmTilesRunOnSmPairsAtHalfTheirMathPerSm) {
  // A 256x128 tile on two SMs (Blackwell's 2-SM UMMA): B200's 148 SMs hold 74 of them per wave, and a compute-bound
  // GEMM costs what 128x128 tiles on one SM each cost when the rows split evenly.
  auto gpu = shipped_gpu("b200");
  auto one = gpu;
  gpu.gemm.fp8_tiles = {{0, 256, 128, 2}};
  one.gemm.fp8_tiles = {{0, 128, 128, 1}};
  const auto op = gemm(256 * 8, 128 * 148, 16384, DType::kFp8);  // 8 x 148 pair tiles: 16 waves of 74 pairs
  EXPECT_EQ(gemm_schedule(op, gpu).tiles, 8 * 148);
  EXPECT_EQ(gemm_schedule(op, gpu).waves, 16);
  EXPECT_EQ(gemm_schedule(op, one).waves, 16);
  EXPECT_NEAR(op_time(op, gpu).compute_s, op_time(op, one).compute_s, 1e-9 * op_time(op, one).compute_s);
  // One more row adds a whole 256-row stripe of pair tiles, two waves; a 128-row stripe on single SMs adds one.
  const auto more = gemm(256 * 8 + 1, 128 * 148, 16384, DType::kFp8);
  EXPECT_EQ(gemm_schedule(more, gpu).waves, 18);
  EXPECT_EQ(gemm_schedule(more, one).waves, 17);
  EXPECT_GT(op_time(more, gpu).compute_s, op_time(more, one).compute_s);
}

TEST(GemmCost, Fp8QuantizationRunsItsRowsInWavesOfPasses) {
  // With fp8_quant_pass_k the activation's quantization runs one block per row, a wave of one row per SM, each row in
  // ceil(k / pass_k) passes: up to one row per SM costs the same, one more row a second wave; k past a multiple of
  // pass_k adds a pass to every row.
  auto gpu = shipped_gpu("h100-sxm");
  gpu.gemm.fp8_quant_pass_k = 2048;
  gpu.gemm.fp8_quant_pass_s = 30e-9;  // large against the rows' bytes, so that the waves show
  gpu.gemm.fp8_quant_row_s = 20e-9;
  gpu.gemm.fp8_tiles = {{0, 128, 128}};
  const double S = gpu.sm_count;
  auto quant = [&](int64_t m, int64_t k) {
    const auto op = gemm(m, 64, k, DType::kFp8);
    return op_time(op, gpu).memory_s;
  };
  const auto rows = static_cast<int64_t>(S);
  const double w1 = S * (20e-9 + 30e-9);  // one wave of one-pass rows
  EXPECT_NEAR(quant(rows, 2048) - quant(1, 2048), 0.0, 0.05 * w1);
  EXPECT_NEAR(quant(rows + 1, 2048) - quant(rows, 2048), w1, 0.05 * w1);
  EXPECT_NEAR(quant(rows, 2049) - quant(rows, 2048), S * 30e-9, 0.05 * S * 30e-9);
}

TEST(GemmCost, ARepeatedBatchedGemmFindsItsBytesInL2) {
  auto gpu = shipped_gpu("h100-sxm");
  gpu.gemm.bench_l2_speedup = 3;
  gpu.gemm.bench_l2_fraction = 1;
  GemmBench rep;
  rep.repeated = true;
  plan::Op small = gemm(1, 512, 128), huge = gemm(4096, 512, 128);
  small.batch = huge.batch = 128;  // 16 MiB of weights, well inside H100's 50 MiB; the huge one writes 512 MiB
  EXPECT_LT(gemm_time(small, gpu, rep).memory_s, 0.5 * op_time(small, gpu).memory_s);
  EXPECT_NEAR(gemm_time(huge, gpu, rep).memory_s, op_time(huge, gpu).memory_s, 1e-3 * op_time(huge, gpu).memory_s);
  // Not batched, or as in serving: unchanged.
  const plan::Op dense = gemm(1, 512, 128);
  EXPECT_DOUBLE_EQ(gemm_time(dense, gpu, rep).time_s, op_time(dense, gpu).time_s);
  EXPECT_DOUBLE_EQ(gemm_time(small, gpu, GemmBench{}).time_s, op_time(small, gpu).time_s);
}

TEST(GemmCost, GroupedExpertGemmTilesEachExpert) {
  const auto gpu = shipped_gpu("h100-sxm");
  // 64 experts of 8 rows: every expert pads its own tiles, so the grouped GEMM costs more than one dense GEMM of all
  // 512 rows and shares its weights with none (64 experts' weights).
  plan::Op g = gemm(512, 4096, 2048);
  g.expert_tokens.assign(64, 8);
  g.batch = 64;
  const plan::Op dense = gemm(512, 4096, 2048);
  EXPECT_GT(op_time(g, gpu).time_s, op_time(dense, gpu).time_s);
  // Experts with no tokens cost nothing: the same 8 x 64 rows over 128 slots (64 of them empty).
  plan::Op h = g;
  h.expert_tokens.assign(128, 0);
  for (int i = 0; i < 64; ++i) h.expert_tokens[static_cast<size_t>(2 * i)] = 8;
  h.batch = 128;
  EXPECT_DOUBLE_EQ(op_time(h, gpu).time_s, op_time(g, gpu).time_s);
  // More rows on one expert (skew) never makes it cheaper.
  plan::Op skew = g;
  skew.expert_tokens[0] = 8 + 300;
  skew.m += 300;
  EXPECT_GT(op_time(skew, gpu).time_s, op_time(g, gpu).time_s);
}

// Closed form of a memory-bound grouped GEMM (one row per expert; overlap >= 32 takes the max): fixed + a cost per
// expert with rows + activation rows at HBM x memory + the experts' weights at HBM x grouped_memory; a zero-filling
// kernel's foreign pairs
// (tokens above its rows) add their C rows at the activations' bandwidth, and nothing else.
TEST(GemmCost, GroupedWeightsStreamAtTheirOwnBandwidthAndForeignPairsWriteTheirRows) {
  spec::Gpu gpu = shipped_gpu("h100-sxm");
  gpu.gemm.overlap = 64;
  gpu.gemm.grouped_memory = 0.5;
  const int64_t E = 16, n = 8192, k = 4096;
  plan::Op g = gemm(E, n, k);
  g.expert_tokens.assign(E, 1);
  g.batch = E, g.tokens = E;
  const OpTime t = op_time(g, gpu);
  ASSERT_EQ(t.bound, Bound::kMemory);
  const double bw = gpu.hbm_bw_Bps * gpu.gemm.memory, act = double(E) * (k + n) * 2.0;
  const double w = double(E) * k * n * 2.0;
  const double fixed = gpu.gemm.grouped_fixed_s + double(E) * gpu.gemm.grouped_expert_s;
  EXPECT_NEAR(t.time_s, fixed + act / bw + w / (gpu.hbm_bw_Bps * 0.5), 1e-12);
  plan::Op f = g;
  f.tokens = E + 1000;
  EXPECT_NEAR(op_time(f, gpu).time_s - t.time_s, 1000.0 * n * 2.0 / bw, 1e-12);
  gpu.gemm.grouped_memory = 0;  // unset: the dense GEMM's fraction
  EXPECT_NEAR(op_time(g, gpu).time_s, fixed + (act + w) / bw, 1e-12);
  plan::Op half = g;  // half the experts with rows: half the per-expert cost
  for (int e = 0; e < E / 2; ++e) half.expert_tokens[static_cast<size_t>(e)] = 0;
  half.m = E / 2;
  EXPECT_DOUBLE_EQ(op_time(half, gpu).launch_s, gpu.gemm.grouped_fixed_s + double(E / 2) * gpu.gemm.grouped_expert_s);
  EXPECT_GT(gpu.gemm.grouped_expert_s, 0.0);  // the shipped H100 fit has one
}

TEST(GemmCost, ElementwiseIsBytesAtItsKindsBandwidthPlusAFixedCost) {
  auto gpu = shipped_gpu("h100-sxm");
  gpu.elementwise.memory["activation"] = 0.5;
  plan::Op o;
  o.kind = OpKind::kActivation;
  o.bytes = 3e8;
  o.flops = 1e8;
  EXPECT_NEAR(op_time(o, gpu).time_s, 3e8 / (gpu.hbm_bw_Bps * 0.5) + gpu.elementwise.fixed_s, 1e-15);
  o.kind = OpKind::kRmsNorm;  // no entry: default_memory
  EXPECT_NEAR(op_time(o, gpu).time_s, 3e8 / (gpu.hbm_bw_Bps * gpu.elementwise.default_memory) + gpu.elementwise.fixed_s,
              1e-15);
}

TEST(GemmCost, ShippedH100MeetsTheBoundsOnTheHeldOutGemmSplit) {
  const std::string aic = std::string(PARASOL_DATA_DIR) + "/../shared/calibration/aiconfigurator";
  if (!std::filesystem::is_directory(aic)) GTEST_SKIP() << "no " << aic;
  const Family* f = find_family("gemm");
  ASSERT_NE(f, nullptr);
  for (const auto& src : aic_sources(aic)) {
    if (src.gpu != "h100-sxm") continue;
    const auto held = split(load_samples(src, *f)).second;
    ASSERT_GT(held.size(), 1000u);
    const ErrorStats st = error_stats(*f, held, shipped_gpu("h100-sxm"));
    EXPECT_LE(st.median, kMedianBound);
    EXPECT_LE(st.p90, kP90Bound);
    return;
  }
  GTEST_SKIP() << "no h100_sxm folder under " << aic;
}

}  // namespace
}  // namespace parasol::cost

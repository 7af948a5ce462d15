// Cost model: ring all-reduce bytes and alpha-beta time, roofline bounds, barriers at collectives, all-to-all skew,
// calibration interpolation and CSV errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/common/error.hpp"
#include "core/cost/calibration.hpp"
#include "core/cost/gemm_cost.hpp"
#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "plan_fixtures.hpp"

namespace parasol::cost {
namespace {

using plan::OpKind;
using testing::shipped_gpu;
using testing::shipped_model;
using testing::test_cluster;

TEST(CostCollective, RingAllReduceBytesPerRankAndTimeMatchAlphaBeta) {
  for (int n : {2, 4, 8}) {
    const double S = 64e6;
    EXPECT_DOUBLE_EQ(bytes_sent_per_rank(OpKind::kAllReduce, plan::CollectiveAlgo::kRing, n, S),
                     2.0 * (n - 1) / n * S);
    const auto gpu = shipped_gpu("h100-sxm");
    const auto cluster = test_cluster(gpu, 1, 8);
    LinkCache links(cluster);
    std::vector<int> gpus(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) gpus[static_cast<size_t>(i)] = i;
    const GroupLinks g = group_links(links, gpus);
    EXPECT_DOUBLE_EQ(g.ring_bw_Bps, gpu.scaleup_bw_Bps);
    EXPECT_NEAR(g.ring_latency_s, 2e-6, 1e-15);  // two scale-up hops of 1 us
    plan::Op op;
    op.kind = OpKind::kAllReduce;
    op.comm_bytes = S;
    auto t = collective_time(op, g, 1.0, plan::CollectiveAlgo::kRing);
    EXPECT_NEAR(t.time_s, 2.0 * (n - 1) / n * S / gpu.scaleup_bw_Bps + 2.0 * (n - 1) * 2e-6, 1e-12);
  }
}

TEST(CostCollective, NvlsWinsWhenTheSwitchReducesAndHierarchicalSpansNodes) {
  const auto gpu = shipped_gpu("h100-sxm");
  const auto nvls = test_cluster(gpu, 1, 8, true);
  LinkCache l1(nvls);
  plan::Op op;
  op.kind = OpKind::kAllReduce;
  op.comm_bytes = 256e6;
  auto t = collective_time(op, group_links(l1, {0, 1, 2, 3, 4, 5, 6, 7}), 0.8);
  EXPECT_EQ(t.algo, plan::CollectiveAlgo::kNvls);
  const auto two = test_cluster(gpu, 2, 8);
  LinkCache l2(two);
  std::vector<int> all(16);
  for (int i = 0; i < 16; ++i) all[static_cast<size_t>(i)] = i;
  const auto g = group_links(l2, all);
  EXPECT_EQ(g.domains, 2);
  EXPECT_DOUBLE_EQ(g.ring_bw_Bps, 50e9);  // the NIC is the ring's bottleneck
  auto h = collective_time(op, g, 0.8);
  EXPECT_EQ(h.algo, plan::CollectiveAlgo::kHierarchical);
  EXPECT_LT(h.time_s, collective_time(op, g, 0.8, plan::CollectiveAlgo::kRing).time_s);
}

TEST(CostOp, BigGemmIsComputeBoundDecodeGemmMemoryBound) {
  // The GEMM model's closed form (core/cost/gemm_cost.hpp) with the tile and waves it chose: compute = waves x
  // (k + k_half) x max(tile math, tile operand feed, k_step); memory = A + B + C at HBM x memory; time = fixed +
  // (compute^p + memory^p)^(1/p).
  const auto gpu = shipped_gpu("h100-sxm");
  const auto& g = gpu.gemm;
  auto closed_form = [&](const plan::Op& op) {
    const GemmSchedule s = gemm_schedule(op, gpu);
    const double F = gpu.peak_flops.at(DType::kBf16) * g.max_efficiency / gpu.sm_count;
    const double kk = s.split > 1 ? std::max(std::ceil(static_cast<double>(op.k) / s.split), g.split_k_min)
                                  : static_cast<double>(op.k);
    const double c = s.waves * (kk + g.k_half) *
                     std::max({2.0 * s.bm * s.bn / F, 2.0 * (s.bm + s.bn) * g.tile_intensity / F, g.k_step_s});
    const double mn = static_cast<double>(op.m) * static_cast<double>(op.n);
    const double mem = (2.0 * static_cast<double>(op.m) * static_cast<double>(op.k) + 2.0 * mn +
                        2.0 * static_cast<double>(op.k) * static_cast<double>(op.n) + (s.split > 1 ? 8.0 * s.split * mn : 0.0)) /
                       (gpu.hbm_bw_Bps * g.memory);
    return g.fixed_s + std::pow(std::pow(c, g.overlap) + std::pow(mem, g.overlap), 1.0 / g.overlap) +
           (s.split > 1 ? g.split_k_fixed_s : 0.0);
  };
  plan::Op op;
  op.kind = OpKind::kGemm;
  op.dtype = DType::kBf16;
  op.m = 8192, op.n = 8192, op.k = 8192;
  op.flops = 2.0 * 8192 * 8192 * 8192;
  op.bytes = 3.0 * 8192 * 8192 * 2;
  auto t = op_time(op, gpu);
  EXPECT_EQ(t.bound, Bound::kCompute);
  EXPECT_NEAR(t.time_s, closed_form(op), 1e-12);
  // Near the roofline's compute floor at max_efficiency (wave and k_half losses only).
  EXPECT_GT(t.time_s, op.flops / (gpu.peak_flops.at(DType::kBf16) * g.max_efficiency));
  EXPECT_LT(t.time_s, 1.1 * op.flops / (gpu.peak_flops.at(DType::kBf16) * g.max_efficiency));
  op.m = 1;
  op.flops = 2.0 * 8192 * 8192;
  op.bytes = 8192.0 * 8192 * 2;
  t = op_time(op, gpu);
  EXPECT_EQ(t.bound, Bound::kMemory);
  EXPECT_NEAR(t.time_s, closed_form(op), 1e-12);
  EXPECT_GE(t.time_s, op.bytes / (gpu.hbm_bw_Bps * g.memory) + g.fixed_s);
  op.n = op.k = 1;  // a 1x1x1 GEMM: its fixed cost
  op.flops = 2, op.bytes = 6;
  EXPECT_EQ(op_time(op, gpu).bound, Bound::kLaunch);
}

plan::Batch decode_batch(int n, int64_t ctx, int groups = 1) {
  plan::Batch b;
  for (int i = 0; i < n; ++i) b.seqs.push_back({i, 1, ctx, i % groups, true});
  return b;
}

TEST(CostStep, CollectivesAreBarriersAndTotalIsTheLatestFinish) {
  const auto m = shipped_model("llama-3.1-8b");
  const auto cluster = test_cluster(shipped_gpu("h100-sxm"), 1, 8);
  plan::ParallelConfig c;
  c.tp = 2, c.pp = 2;
  const auto made = plan::make_plan(m, cluster, "", c);
  ASSERT_TRUE(made.feasibility.ok);
  const auto step = plan::build_step(made.plan, 0, decode_batch(32, 2048));
  const StepCost sc = cost_step(step, made.plan, cluster);
  double latest = 0;
  for (const auto& r : sc.ranks) {
    latest = std::max(latest, r.finish_s);
    EXPECT_GE(r.finish_s + 1e-12, r.busy_s);
  }
  EXPECT_DOUBLE_EQ(sc.total_s, latest);
  // Members of one collective start and end together.
  for (size_t i = 0; i < step.ranks[0].ops.size(); ++i)
    if (step.ranks[0].ops[i].kind == OpKind::kAllReduce) {
      EXPECT_DOUBLE_EQ(sc.ranks[0].ops[i].start_s, sc.ranks[1].ops[i].start_s);
      EXPECT_DOUBLE_EQ(sc.ranks[0].ops[i].end_s(), sc.ranks[1].ops[i].end_s());
    }
  // Stage 1 starts after stage 0 sends: its recv ends after stage 0's send starts.
  EXPECT_GE(sc.ranks[2].ops.front().end_s(), sc.ranks[0].ops.back().start_s);
  EXPECT_NEAR(sc.ranks[2].ops.front().end_s(), sc.ranks[0].ops.back().end_s(), 1e-15);
  // Pipelined without overlap, the step is at least the sum of the two stages' busy times.
  EXPECT_GE(sc.total_s, sc.ranks[0].busy_s + sc.ranks[2].busy_s - sc.ranks[0].ops.back().time.time_s - 1e-12);
  double layer_sum = 0;
  for (const auto& [l, t] : sc.layer_s) layer_sum += t;
  EXPECT_NEAR(layer_sum, sc.ranks[static_cast<size_t>(sc.critical_rank)].finish_s, 1e-12);
}

TEST(CostStep, SkewedRoutingMakesAllToAllSlower) {
  const auto m = shipped_model("deepseek-v3");
  const auto cluster = test_cluster(shipped_gpu("h200-sxm"), 1, 8);
  plan::ParallelConfig c;
  c.attn_dp = 8, c.ep = 8;
  double time[2];
  for (int z = 0; z < 2; ++z) {
    plan::PlanOptions o;
    o.routing.kind = z ? "zipf" : "uniform";
    o.routing.zipf_s = 1.5;
    const auto made = plan::make_plan(m, cluster, "", c, o);
    ASSERT_TRUE(made.feasibility.ok);
    const auto step = plan::build_step(made.plan, 0, decode_batch(512, 4096, 8));
    CostModel model(made.plan, cluster);
    const auto sc = model.cost(step);
    EXPECT_DOUBLE_EQ(model.step_time_s(step), sc.total_s);
    double a2a = 0;
    for (size_t i = 0; i < step.ranks[0].ops.size(); ++i)
      if (step.ranks[0].ops[i].kind == OpKind::kAllToAll) a2a += sc.ranks[0].ops[i].time.time_s;
    time[z] = a2a;
  }
  EXPECT_GT(time[1], time[0] * 1.2);
}

TEST(CostCalibration, InterpolatesInLogSpaceAndOverridesOnlyWhereCovered) {
  const std::string csv =
      "# measured\n" + CalibrationTable::csv_header() +
      "\nh100-sxm,gemm,bf16,,16,4096,4096,1,,,,,,,1e-5\nh100-sxm,gemm,bf16,,256,4096,4096,1,,,,,,,4e-5\n";
  const auto table = CalibrationTable::parse_csv(csv, "cal.csv");
  EXPECT_EQ(table.size(), 2u);
  plan::Op op;
  op.kind = OpKind::kGemm;
  op.n = 4096, op.k = 4096, op.m = 64;  // geometric middle of 16 and 256
  auto t = table.lookup(op, "h100-sxm");
  ASSERT_TRUE(t);
  EXPECT_NEAR(*t, 2e-5, 1e-12);
  op.m = 512;
  EXPECT_FALSE(table.lookup(op, "h100-sxm"));  // no extrapolation
  op.m = 64, op.n = 1024;
  EXPECT_FALSE(table.lookup(op, "h100-sxm"));  // other shape
  op.n = 4096;
  op.flops = 2.0 * 64 * 4096 * 4096;
  op.bytes = 1e6;
  const auto gpu = shipped_gpu("h100-sxm");
  auto ot = op_time(op, gpu, &table);
  EXPECT_EQ(ot.bound, Bound::kCalibrated);
  EXPECT_NEAR(ot.time_s, 2e-5, 1e-12);
  // Rows written by row_for read back to the same lookup.
  CalibrationTable t2 = CalibrationTable::parse_csv(
      CalibrationTable::csv_header() + "\n" + CalibrationTable::csv_row(CalibrationTable::row_for(op, "h100-sxm", 3e-5)),
      "x");
  EXPECT_NEAR(*t2.lookup(op, "h100-sxm"), 3e-5, 1e-15);
}

TEST(CostCalibration, BadCsvIsAConfigErrorWithTheLine) {
  const std::string head = CalibrationTable::csv_header() + "\n";
  try {
    CalibrationTable::parse_csv(head + "h100,gemm,bf16,,1,2,3,1,,,,,,,1e-5\nh100,gemn,bf16,,1,2,3,1,,,,,,,1e-5\n",
                                "c.csv");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.key_path(), "kind");
  }
  EXPECT_THROW(CalibrationTable::parse_csv("gpu,kind,dtype,colour,time_s\n", "c.csv"), ConfigError);
  EXPECT_THROW(CalibrationTable::parse_csv(head + "h100,gemm,bf16,,x,2,3,1,,,,,,,1e-5\n", "c.csv"), ConfigError);
}

}  // namespace
}  // namespace parasol::cost

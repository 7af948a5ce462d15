// Engine profiles (core/spec/engine.hpp) and what they do to a step (core/cost/step_cost.hpp, core/plan/build_step):
// the shipped profiles load and cite a source for every number; bad input is a ConfigError at its line; the dense 70B
// decode step at batch 1 does not scale as 1/TP; the per-iteration cost enters the step exactly once; CUDA graphs
// remove the host's launch floor; fusion flags change the ops as stated; the MoE dispatch moves the closed-form bytes
// (one copy per destination rank, fp8 with per-128 scales, one copy per destination node forwarded over NVLink).
#include "core/spec/engine.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/common/error.hpp"
#include "core/cost/op_cost.hpp"
#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "core/spec/scenario.hpp"
#include "plan_fixtures.hpp"

namespace parasol {
namespace {

using plan::OpKind;
using testing::layout;
using testing::shipped_gpu;
using testing::shipped_model;

const std::string kData = PARASOL_DATA_DIR;

spec::Engine shipped_engine(const std::string& name) {
  return spec::load_engine_ref(name);
}

double rel(double a, double b) {
  return std::fabs(a - b) / std::max({1e-300, std::fabs(a), std::fabs(b)});
}

// C(n, k) as a double (exact for the small values used here).
double binom(int64_t n, int64_t k) {
  double r = 1;
  for (int64_t i = 0; i < k; ++i) r = r * static_cast<double>(n - i) / static_cast<double>(i + 1);
  return r;
}

plan::MadePlan plan_on(const spec::Model& m, const spec::Cluster& cl, plan::ParallelConfig c) {
  plan::PlanOptions o;
  o.min_kv_tokens = 0;
  return plan::make_plan(m, cl, plan::resolve_gpu_type(cl, ""), c, o);
}

cost::StepCost cost_with(const plan::MadePlan& made, const spec::Cluster& cl, const std::string& batch,
                         const spec::Engine* engine, plan::Step* built = nullptr) {
  const plan::StepOptions so = engine ? plan::step_options(*engine, made.plan, 0, cl) : plan::StepOptions{};
  plan::Step step =
      plan::build_step(made.plan, 0, plan::parse_batch_spec(batch, made.plan.pools[0].config.attn_dp), so);
  cost::CostOptions co;
  co.engine = engine;
  cost::StepCost sc = cost::cost_step(step, made.plan, cl, co);
  if (built) *built = std::move(step);
  return sc;
}

TEST(Engine, ShippedProfilesLoadAndCiteEveryNumber) {
  const auto names = spec::shipped_engines();
  ASSERT_EQ(names, (std::vector<std::string>{"sglang", "trtllm", "vllm"}));
  for (const auto& n : names) {
    const spec::Engine e = shipped_engine(n);
    EXPECT_EQ(e.name, n);
    EXPECT_GT(e.launch_s, 0) << n;
    EXPECT_TRUE(e.iteration.overlap) << n;
    EXPECT_GT(e.graphs.decode_max_seqs, 0) << n;
    // Every value line that holds a digit carries a comment on it (or names its source in the block above it).
    std::ifstream in(kData + "/topologies/engines/" + n + ".yaml");
    std::string line;
    int lineno = 0;
    bool block_cited = false;  // a comment line inside a section cites what follows (moe_dispatch)
    while (std::getline(in, line)) {
      ++lineno;
      const auto first = line.find_first_not_of(' ');
      if (first == std::string::npos) continue;
      if (line[first] == '#') {
        block_cited = block_cited || first > 0;
        continue;
      }
      if (first == 0) block_cited = false;
      const std::string value = line.substr(0, line.find('#'));
      const auto colon = value.find(':');
      if (colon == std::string::npos || value.find_first_of("0123456789", colon) == std::string::npos) continue;
      if (value.rfind("schema", 0) == 0 || value.rfind("version", 0) == 0) continue;
      EXPECT_TRUE(line.find('#') != std::string::npos || block_cited) << n << ".yaml:" << lineno << ": " << line;
    }
  }
}

TEST(Engine, DefaultIsVllmAndScenarioKeyPicksOne) {
  EXPECT_STREQ(spec::kDefaultEngine, "vllm");
  const std::string base =
      "schema: parasol.scenario/1\nname: s\nmodel: scenarios/models/tiny-llama.yaml\n"
      "cluster: topologies/clusters/dgx-h100.yaml\n";
  const std::string file = kData + "/scenarios/engine-test.yaml";  // a name in the data dir for relative references
  EXPECT_EQ(spec::load_scenario(yaml::load_string(base, file)).engine.name, "vllm");
  EXPECT_EQ(spec::load_scenario(yaml::load_string(base + "engine: sglang\n", file)).engine.name, "sglang");
  try {
    spec::load_scenario(yaml::load_string(base + "engine: vlm\n", file));
    FAIL() << "an unknown engine loaded";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 5);
    EXPECT_EQ(e.key_path(), "engine");
    EXPECT_NE(std::string(e.what()).find("did you mean 'vllm'"), std::string::npos) << e.what();
  }
}

TEST(Engine, UnknownKeysAndBadValuesAreErrorsAtTheirLine) {
  auto load = [](const std::string& text) { return spec::load_engine(yaml::load_string(text, "e.yaml")); };
  const std::string head = "schema: parasol.engine/1\nname: x\n";
  try {
    load(head + "iteration:\n  seral: \"1 us\"\n");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 4);
    EXPECT_NE(std::string(e.what()).find("serial"), std::string::npos) << e.what();
  }
  try {
    load(head + "launch: 5\n");  // a time needs a unit
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 3);
  }
  try {
    load(head + "moe_dispatch:\n  copies: per_pair\n  node_forwarding: true\n");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 5);
  }
  try {
    load(head + "moe_experts:\n  triton: [bf16, fp32]\n");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 4);
    EXPECT_NE(std::string(e.what()).find("weight dtype"), std::string::npos) << e.what();
  }
  const spec::Engine e =
      load(head + "cuda_graphs:\n  decode_max_seqs: 8\n  mixed: piecewise\n  mixed_max_tokens: 64\n");
  EXPECT_EQ(e.graphs.decode_max_seqs, 8);
  EXPECT_TRUE(e.graphs.mixed_piecewise);
}

// Property (done-when of the calibrated cost model): decode at batch 1 of a dense 70B does not halve from TP4 to TP8.
// What does not shrink with TP: the engine's per-iteration cost (serial part), every kernel's fixed cost (same kernel
// count at both TP degrees) and the all-reduce latency floor (two per layer at a payload of one token). The TP8 step
// therefore stays well above half the TP4 step.
TEST(Engine, DenseDecodeAtBatchOneDoesNotScaleAsOneOverTp) {
  const spec::Model m = shipped_model("llama-3.1-70b");
  const spec::Cluster cl = testing::test_cluster(shipped_gpu("h100-sxm"), 1, 8);
  const spec::Engine vllm = shipped_engine("vllm");
  const cost::StepCost tp4 = cost_with(plan_on(m, cl, layout(4, 1)), cl, "decode:1@1024", &vllm);
  const cost::StepCost tp8 = cost_with(plan_on(m, cl, layout(8, 1)), cl, "decode:1@1024", &vllm);
  EXPECT_GT(tp8.total_s / tp4.total_s, 0.6) << tp8.total_s << " vs " << tp4.total_s;
  EXPECT_EQ(tp8.launch, cost::Launch::kGraph);              // batch 1 is under the captured sizes
  EXPECT_DOUBLE_EQ(tp8.engine_s, vllm.iteration.serial_s);  // CPU work (21 us) hides behind the GPU
}

// Property: the engine's CPU work enters the step total once per iteration, whatever the ranks and stages:
// total = GPU + serial + fixed + per_sequence x seqs (+ per_token x tokens) without overlap, serial + max(GPU, CPU)
// with it (only at pp == 1 unless overlap_with_pp).
TEST(Engine, PerIterationCostIsCountedOncePerIteration) {
  const spec::Model m = shipped_model("llama-3.1-8b");
  const spec::Cluster cl = testing::test_cluster(shipped_gpu("h100-sxm"), 1, 8);
  spec::Engine e;  // default fusion and dispatch: the same ops as without an engine
  e.iteration.serial_s = 40e-6;
  e.iteration.decode = {100e-6, 3e-6, 0.0};
  e.iteration.mixed = {200e-6, 5e-6, 0.25e-6};
  e.graphs.decode_max_seqs = 1 << 20;
  for (auto c : {layout(1, 1), layout(4, 1), layout(2, 2)}) {
    const auto made = plan_on(m, cl, c);
    const cost::StepCost bare = cost_with(made, cl, "decode:32@2000", nullptr);
    const cost::StepCost with = cost_with(made, cl, "decode:32@2000", &e);
    EXPECT_LT(rel(with.total_s, bare.total_s + 40e-6 + 100e-6 + 32 * 3e-6), 1e-12) << c.label();
    EXPECT_EQ(with.gpu_s, bare.total_s);
    const cost::StepCost mb = cost_with(made, cl, "prefill:2x300,decode:10@100", nullptr);
    const cost::StepCost mw = cost_with(made, cl, "prefill:2x300,decode:10@100", &e);
    EXPECT_LT(rel(mw.total_s, mb.total_s + 40e-6 + 200e-6 + 12 * 5e-6 + 610 * 0.25e-6), 1e-12) << c.label();
  }
  e.iteration.overlap = true;
  const auto made = plan_on(m, cl, layout(1, 1));
  const cost::StepCost bare = cost_with(made, cl, "decode:32@2000", nullptr);
  EXPECT_LT(rel(cost_with(made, cl, "decode:32@2000", &e).total_s, 40e-6 + bare.total_s), 1e-12);  // CPU hidden
  e.iteration.decode.fixed_s = 1.0;  // CPU-bound: the GPU hides behind the CPU instead
  EXPECT_LT(rel(cost_with(made, cl, "decode:32@2000", &e).total_s, 40e-6 + 1.0 + 32 * 3e-6), 1e-12);
  const auto pp2 = plan_on(m, cl, layout(2, 2));  // overlap_with_pp false: added again
  EXPECT_LT(rel(cost_with(pp2, cl, "decode:32@2000", &e).total_s,
                cost_with(pp2, cl, "decode:32@2000", nullptr).total_s + 40e-6 + 1.0 + 32 * 3e-6),
            1e-12);
}

// Property: a decode step replayed from a CUDA graph costs its GPU time; launched kernel by kernel, the GPU cannot
// finish before the host has issued every kernel, so it costs max(GPU, kernels x launch_s): in the launch-bound
// regime the graph is cheaper by exactly kernels x launch_s - GPU time. Long kernels (a large prefill) hide the
// launches: eager then costs the same as the GPU time. Piecewise graphs launch 2 x attention ops + 1 times.
TEST(Engine, CudaGraphsRemoveTheHostLaunchFloor) {
  const spec::Model m = shipped_model("tiny-llama");
  const spec::Cluster cl = testing::test_cluster(shipped_gpu("h100-sxm"), 1, 8);
  const auto made = plan_on(m, cl, layout(1, 1));
  spec::Engine graph;
  graph.launch_s = 25e-6;
  graph.graphs.decode_max_seqs = 64;
  spec::Engine eager = graph;
  eager.graphs.decode_max_seqs = 0;
  plan::Step step;
  const cost::StepCost g = cost_with(made, cl, "decode:4@100", &graph, &step);
  const cost::StepCost x = cost_with(made, cl, "decode:4@100", &eager);
  const double kernels = static_cast<double>(step.ranks[0].ops.size());
  ASSERT_EQ(g.launch, cost::Launch::kGraph);
  ASSERT_EQ(x.launch, cost::Launch::kEager);
  ASSERT_GT(kernels * 25e-6, g.total_s);  // launch-bound
  EXPECT_LT(rel(x.total_s - g.total_s, kernels * 25e-6 - g.total_s), 1e-12);
  EXPECT_LT(rel(x.launch_floor_s, kernels * 25e-6), 1e-12);
  // Above the captured batch size the same engine launches eagerly.
  EXPECT_EQ(cost_with(made, cl, "decode:65@100", &graph).launch, cost::Launch::kEager);
  // A large prefill: the kernels are longer than their launches.
  const auto big = plan_on(shipped_model("llama-3.1-8b"), cl, layout(1, 1));
  const cost::StepCost pg = cost_with(big, cl, "prefill:4x4096", nullptr);
  const cost::StepCost pe = cost_with(big, cl, "prefill:4x4096", &eager);
  EXPECT_EQ(pe.launch, cost::Launch::kEager);
  EXPECT_LT(pe.launch_floor_s, pg.total_s);
  EXPECT_EQ(pe.total_s, pg.total_s);
  // Piecewise: attention ops launched eagerly between graph pieces.
  spec::Engine piecewise = eager;
  piecewise.graphs.mixed_piecewise = true;
  piecewise.graphs.mixed_max_tokens = 512;
  const cost::StepCost pw = cost_with(made, cl, "prefill:1x100,decode:3@50", &piecewise);
  EXPECT_EQ(pw.launch, cost::Launch::kPiecewise);
  EXPECT_LT(rel(pw.launch_floor_s, (2.0 * static_cast<double>(m.layers) + 1) * 25e-6), 1e-12);
}

int count_kind(const plan::RankProgram& r, OpKind k) {
  int n = 0;
  for (const auto& o : r.ops) n += o.kind == k ? 1 : 0;
  return n;
}

const plan::Op* find_op(const plan::RankProgram& r, const std::string& name) {
  for (const auto& o : r.ops)
    if (o.name == name) return &o;
  return nullptr;
}

// Property: the fusion flags emit exactly the kernels they name, with the traffic of each (h = hidden, T = tokens,
// a = activation bytes): a residual add reads two vectors and writes one, the unfused norm reads and writes one; SiLU
// then multiply move 2 + 3 vectors of the FFN width instead of 3; RoPE fused into the KV write saves re-reading k;
// an all-reduce that fuses the residual add and the norm leaves no norm kernel after it.
TEST(Engine, FusionFlagsShapeTheOps) {
  const spec::Model m = shipped_model("llama-3.1-8b");
  const spec::Cluster cl = testing::test_cluster(shipped_gpu("h100-sxm"), 1, 8);
  const auto made = plan_on(m, cl, layout(2, 1));
  const plan::Batch b = plan::parse_batch_spec("decode:8@512");
  const plan::Step base = plan::build_step(made.plan, 0, b);
  plan::StepOptions o;
  o.fusion.residual_rmsnorm = false;
  o.fusion.silu_mul = false;
  const plan::Step split = plan::build_step(made.plan, 0, b, o);
  const auto& r0 = split.ranks[0];
  const double T = 8, h = static_cast<double>(m.hidden), a = 2;
  const plan::Op* add = find_op(r0, "L3.attn_norm.residual_add");
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->kind, OpKind::kActivation);
  EXPECT_EQ(add->bytes, 3 * T * h * a);
  EXPECT_EQ(find_op(r0, "L3.attn_norm")->bytes, 2 * T * h * a + h * 2);
  EXPECT_EQ(find_op(base.ranks[0], "L3.attn_norm")->bytes, 4 * T * h * a + h * 2);
  const double f = static_cast<double>(m.ffn) / 2;  // this rank's FFN share at tp 2
  EXPECT_EQ(find_op(r0, "L3.mlp.act.silu")->bytes, 2 * T * f * a);
  EXPECT_EQ(find_op(r0, "L3.mlp.act.mul")->bytes, 3 * T * f * a);
  EXPECT_EQ(find_op(base.ranks[0], "L3.mlp.act")->bytes, 3 * T * f * a);
  // TensorRT-LLM's fusions.
  const spec::Engine trt = shipped_engine("trtllm");
  const plan::Step fused = plan::build_step(made.plan, 0, b, plan::step_options(trt, made.plan, 0, cl));
  const auto& f0 = fused.ranks[0];
  EXPECT_EQ(count_kind(f0, OpKind::kRope), 0);
  const plan::Op* rk = find_op(f0, "L3.attn.rope_kv_append");
  ASSERT_NE(rk, nullptr);
  const double hq = static_cast<double>(m.heads) / 2, hkv = static_cast<double>(m.kv_heads) / 2, hd = 128;
  EXPECT_EQ(rk->bytes, T * hd * ((2 * hq + 2 * hkv) * a + 2 * hkv * a));
  EXPECT_EQ(rk->bytes + 2 * T * hkv * hd * a,
            find_op(base.ranks[0], "L3.attn.rope")->bytes + find_op(base.ranks[0], "L3.attn.kv_append")->bytes);
  // Norms: layer 0's attention norm follows the embedding (kept); every other residual norm follows a layer's TP
  // all-reduce of T x h x a bytes (below 64 MiB) and is gone.
  EXPECT_EQ(count_kind(base.ranks[0], OpKind::kRmsNorm), 2 * m.layers + 1);
  EXPECT_EQ(count_kind(f0, OpKind::kRmsNorm), 1);
  EXPECT_NE(find_op(f0, "L0.attn_norm"), nullptr);
  EXPECT_EQ(find_op(f0, "L0.mlp_norm"), nullptr);
  EXPECT_EQ(find_op(f0, "final_norm"), nullptr);
  // The executor's program is the default one.
  EXPECT_EQ(base.ranks[0].ops.size(), plan::build_step(made.plan, 0, b, plan::StepOptions{}).ranks[0].ops.size());
}

// The dispatch of one MoE layer of qwen3-235b-a22b (E = 128 experts, top-8, hidden 4096) over R EP ranks
// (attention-DP R, tp 1: the all-to-all form), 16 decode tokens per rank under uniform routing (every expert gets
// exactly Ts x k / E tokens).
struct MoeCase {
  spec::Model m = shipped_model("qwen3-235b-a22b");
  spec::Cluster cl;
  plan::MadePlan made;
  int R;
  explicit MoeCase(int nodes) : cl(testing::test_cluster(shipped_gpu("h200-sxm"), nodes, 8)), R(8 * nodes) {
    made = plan_on(m, cl, layout(1, 1, R, R));
  }
  plan::Step build(const plan::StepOptions& o) const {
    return plan::build_step(made.plan, 0, plan::parse_batch_spec("decode:" + std::to_string(16 * R) + "@512", R), o);
  }
  const plan::Op& dispatch(const plan::Step& s, int rank) const {
    for (const auto& o : s.ranks[static_cast<size_t>(rank)].ops)
      if (o.name == "L5.moe.dispatch") return o;
    throw Error("no dispatch");
  }
};

// Property: with one copy per destination rank, a token reaches R (1 - C(E - E/R, k) / C(E, k)) ranks in expectation
// (the probability that a rank holds at least one of its k experts, summed over ranks); one copy per pair sends k.
// fp8 halves the payload, plus one fp32 scale per 128 channels. The combine sends the same copies back in bf16.
TEST(Engine, MoeDispatchBytesEqualTheClosedFormForUniformRouting) {
  const MoeCase c(1);
  ASSERT_TRUE(c.made.feasibility.ok);
  const double E = 128, k = 8, R = c.R, Ts = 16 * R, h = 4096, a = 2;
  const double ranks_per_token = R * (1 - binom(128 - 128 / c.R, 8) / binom(128, 8));
  plan::StepOptions pair, rank, fp8;
  rank.dispatch.per_rank = true;
  fp8.dispatch.per_rank = true;
  fp8.dispatch.fp8 = true;
  double sum_pair = 0, sum_rank = 0, sum_fp8 = 0, sum_combine = 0;
  const plan::Step sp = c.build(pair), sr = c.build(rank), sf = c.build(fp8);
  for (int j = 0; j < c.R; ++j) {
    sum_pair += c.dispatch(sp, j).comm_bytes;
    sum_rank += c.dispatch(sr, j).comm_bytes;
    sum_fp8 += c.dispatch(sf, j).comm_bytes;
    for (const auto& o : sf.ranks[static_cast<size_t>(j)].ops)
      if (o.name == "L5.moe.combine") sum_combine += o.comm_bytes;
  }
  EXPECT_LT(rel(sum_pair, Ts * k * h * a), 1e-12);
  EXPECT_LT(rel(sum_rank, Ts * ranks_per_token * h * a), 1e-12);
  EXPECT_LT(rel(sum_fp8, Ts * ranks_per_token * (h + h / 128 * 4)), 1e-12);
  EXPECT_LT(rel(sum_combine, sum_rank), 1e-12);
  EXPECT_LT(ranks_per_token, k);
  (void)E;
}

// Property (spec::MoeExperts): in the gather form (every rank of the MoE group sees every token: EP with a TP share of
// each expert), a Triton fused-MoE kernel sees all T x top_k routed pairs: its expert GEMMs compute only the local
// experts' rows but write zero rows for the others (tokens = T k), the activation and the combine run over all T k
// pairs, and the routing ids replace the permuted copy. Other kernels see only the local pairs. With one EP rank
// (every pair local) the two differ only in the permute.
TEST(Engine, TritonExpertsSeeEveryRoutedPairInTheGatherForm) {
  const spec::Model m = shipped_model("mixtral-8x7b");
  const spec::Cluster cl = testing::test_cluster(shipped_gpu("h100-sxm"), 1, 8);
  const double T = 24, k = static_cast<double>(m.moe.top_k), h = static_cast<double>(m.hidden), a = 2;
  const plan::Batch b = plan::parse_batch_spec("decode:24@512");
  for (int ep : {1, 2}) {
    plan::ParallelConfig c = layout(4, 1);
    c.ep = ep;  // moe_tp = 4 / ep > 1: the gather form
    const auto made = plan_on(m, cl, c);
    plan::StepOptions triton, other;
    triton.triton_experts = true;
    const plan::Step st = plan::build_step(made.plan, 0, b, triton), so = plan::build_step(made.plan, 0, b, other);
    const double ef = static_cast<double>(m.moe.expert_ffn) / (4 / ep);
    for (size_t r = 0; r < st.ranks.size(); ++r) {
      const plan::Op* gu = find_op(st.ranks[r], "L1.moe.experts.gate_up");
      const plan::Op* act = find_op(st.ranks[r], "L1.moe.experts.act");
      const plan::Op* comb = find_op(st.ranks[r], "L1.moe.unpermute");
      const plan::Op* perm = find_op(st.ranks[r], "L1.moe.permute");
      const plan::Op* gu_o = find_op(so.ranks[r], "L1.moe.experts.gate_up");
      const plan::Op* act_o = find_op(so.ranks[r], "L1.moe.experts.act");
      ASSERT_TRUE(gu && act && comb && perm && gu_o && act_o);
      EXPECT_EQ(gu->m, gu_o->m);  // the same local rows computed
      EXPECT_EQ(gu->tokens, static_cast<int64_t>(T * k));
      EXPECT_EQ(gu_o->tokens, gu_o->m);
      EXPECT_EQ(act->tokens, static_cast<int64_t>(T * k));
      EXPECT_EQ(act_o->tokens, gu_o->m);
      EXPECT_EQ(act->bytes, 3 * T * k * ef * a);
      EXPECT_EQ(comb->flops, 2 * T * k * h);
      EXPECT_EQ(perm->bytes, T * k * 8);
      EXPECT_EQ(gu->bytes - gu_o->bytes, (T * k - static_cast<double>(gu->m)) * 2 * ef * a);
      if (ep == 1) {
        EXPECT_EQ(gu->m, static_cast<int64_t>(T * k));  // every pair local
      }
    }
    // The cost model charges the zero rows: equal with one EP rank, more with two.
    const spec::Gpu gpu = shipped_gpu("h100-sxm");
    const double t_tri = cost::op_time(*find_op(st.ranks[0], "L1.moe.experts.down"), gpu).time_s;
    const double t_oth = cost::op_time(*find_op(so.ranks[0], "L1.moe.experts.down"), gpu).time_s;
    if (ep == 1) {
      EXPECT_EQ(t_tri, t_oth);
    } else {
      EXPECT_GT(t_tri, t_oth);
    }
  }
  // The shipped vLLM profile runs 16-bit experts in Triton, fp8 ones not.
  const spec::Engine v = shipped_engine("vllm");
  EXPECT_TRUE(v.moe_experts.is_triton(DType::kBf16));
  EXPECT_FALSE(v.moe_experts.is_triton(DType::kFp8));
}

// Property: node forwarding sends a token once to each other domain that holds one of its experts (probability
// 1 - C(E - E/N, k) / C(E, k) per domain of E/N experts), to the member with the sender's index there, and nothing
// to that domain's other members; the relay forwards it over NVLink.
TEST(Engine, NodeForwardingSendsOneCopyPerDestinationDomain) {
  const MoeCase c(2);
  ASSERT_TRUE(c.made.feasibility.ok);
  const spec::Engine sgl = shipped_engine("sglang");
  ASSERT_TRUE(sgl.moe_dispatch.node_forwarding);
  plan::StepOptions o = plan::step_options(sgl, c.made.plan, 0, c.cl);
  o.dispatch.fp8 = false;
  const plan::Step s = c.build(o);
  const double per_rank_tokens = 16, h = 4096, a = 2;
  const double node_p = 1 - binom(64, 8) / binom(128, 8);
  for (int j : {0, 5, 11}) {
    const auto& v = c.dispatch(s, j).a2a_send_bytes;
    ASSERT_EQ(v.size(), 16u);
    const int other = j < 8 ? 8 : 0, relay = other + j % 8;
    for (int x = other; x < other + 8; ++x) {
      if (x == relay)
        EXPECT_LT(rel(v[static_cast<size_t>(x)], per_rank_tokens * node_p * h * a), 1e-12) << j << " -> " << x;
      else
        EXPECT_EQ(v[static_cast<size_t>(x)], 0.0) << j << " -> " << x;
    }
  }
  // Inside a domain, a rank sends its own tokens plus those it relays (one other-domain rank's).
  const double rank_p = 1 - binom(120, 8) / binom(128, 8);
  EXPECT_LT(rel(c.dispatch(s, 0).a2a_send_bytes[3], 2 * per_rank_tokens * rank_p * h * a), 1e-12);
}

}  // namespace
}  // namespace parasol

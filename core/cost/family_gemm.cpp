// The GEMM, MoE-expert and element-wise families of the calibration (fit_family.hpp), costed by gemm_cost.hpp.
//   gemm (bfloat16 rows) and gemm_fp8 (fp8 rows): AIConfigurator gemm_perf.csv, one row = one GEMM C[m,n] = A[m,k] B[k,n] as the engine's linear layer runs it
//     (vLLM: torch linear = cuBLAS for bfloat16, CUTLASS scaled_mm for fp8 with the activation's per-tensor
//     quantization). Modelled dtypes: bfloat16 and fp8 (per-tensor). Skipped: fp8_block (block-scaled: the planner
//     has no such dtype), nvfp4 and every other dtype.
//   moe: AIConfigurator moe_perf.csv, one row = the expert compute of one MoE layer on one GPU (vLLM fused_experts:
//     EP rank 0's experts, E / moe_ep_size of them, each with inter_size / moe_tp_size columns; all num_tokens tokens
//     are routed, only the local experts' pairs are computed). It becomes the ops build_step emits for the expert
//     compute of one layer on one GPU in its gather form (no all-to-all): moe.permute (kMoeDispatch), the grouped
//     gate_up GEMM, the SiLU-and-mul activation, the grouped down GEMM, moe.unpermute (kMoeCombine), with the same
//     FLOPs and bytes. Tokens per local expert follow the collector's routing (collector/helper.py of
//     ai-dynamo/aiconfigurator, MANIFEST commit): `balanced` is its balanced_logits assignment, exactly (token t's
//     i-th expert is (t + i stride) mod E, stride = ceil(E / topk)); `power_law_<a>` is its power_law_logits_v3
//     sampler (per-expert counts drawn from a power law of exponent a on [1, 0.8 num_tokens], scaled to
//     num_tokens x topk, each clamped to num_tokens with the excess and the rounding's remainder handed out one pair
//     at a time to each EP rank in turn, and the EP rank with the most pairs swapped to rank 0), averaged over 5
//     draws as the collector averages 5 routings: the sample holds the 5 draws' ops and 5 x the measured time. The
//     draws come from a generator seeded by the row's shape (deterministic). The planner's zipf routing is not used:
//     it is a fixed rank^-s popularity, not this sampler, and does not put the heaviest EP rank on the measured GPU.
//     Modelled dtypes: bfloat16 and fp8 (per-tensor); skipped: fp8_block, int4_wo, nvfp4, the mxfp4 kinds.
//   elementwise: no AIConfigurator table; its parameters exist so that executor profiles (`parasol calibrate
//     --profile`) can fit them.
// Fit split (in this order): gemm fits the tile model and cuBLAS's terms; gemm_fp8 only what the fp8 library changes
// (gemm.fp8_*); moe only what grouped expert GEMMs and the MoE dispatch and combine add (gemm.grouped_*,
// elementwise.memory.moe_*). Fitting a later family never moves an earlier one's parameters.
// Thread behaviour: the registry is immutable; readers keep no state between calls.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/common/error.hpp"
#include "core/common/hash.hpp"
#include "core/cost/attention_cost.hpp"
#include "core/cost/fit_family.hpp"
#include "core/cost/gemm_cost.hpp"

namespace parasol::cost {
namespace {

constexpr double kMs = 1e-3;  // AIConfigurator latencies are in milliseconds
// The collector's power-law routing: draws averaged per measurement (collect_moe.py: num_iter = 5).
constexpr int kPowerLawDraws = 5;
constexpr double kActBytes = 2.0;  // bf16 activations in every row

double op_seconds(const plan::Op& op, const spec::Gpu& gpu) {
  using plan::OpKind;
  if (op.kind == OpKind::kGemm || op.kind == OpKind::kMoeGate) return gemm_op_time(op, gpu).time_s;
  if (op.kind == OpKind::kAttention || op.kind == OpKind::kMlaAttention) return attention_op_time(op, gpu).time_s;
  if (plan::is_communication(op.kind)) return 0.0;
  return elementwise_op_time(op, gpu).time_s;
}

double predict_ops(const Sample& s, const spec::Gpu& gpu) {
  double t = 0;
  for (const auto& op : s.ops) t += op_seconds(op, gpu);
  return t;
}

bool modelled_dtype(const std::string& name, DType& out) {
  if (name == "bfloat16") return out = DType::kBf16, true;
  if (name == "fp8") return out = DType::kFp8, true;
  return false;
}

// build_step's GEMM op (Impl::gemm): FLOPs 2 m n k, bytes A + C in activations, B in the weights' dtype.
plan::Op dense_gemm(int64_t m, int64_t n, int64_t k, DType dt) {
  plan::Op o;
  o.kind = plan::OpKind::kGemm;
  o.name = "gemm";
  o.dtype = dt;
  o.m = m, o.n = n, o.k = k, o.batch = 1, o.tokens = m;
  const double M = static_cast<double>(m), N = static_cast<double>(n), K = static_cast<double>(k);
  o.flops = 2.0 * M * N * K;
  o.bytes = M * K * kActBytes + M * N * kActBytes + K * N * dtype_bytes(dt);
  return o;
}

// The rows of `want` (bfloat16 or fp8).
void read_gemm(const CsvTable& t, const std::string& gpu, std::vector<Sample>& out, DType want) {
  for (size_t r = 0; r < t.rows(); ++r) {
    DType dt;
    const std::string& dname = t.str(r, "gemm_dtype");
    if (!modelled_dtype(dname, dt) || dt != want) continue;
    const int64_t m = t.integer(r, "m", 1), n = t.integer(r, "n", 1), k = t.integer(r, "k", 1);
    const double ms = t.number(r, "latency", 0.0);
    Sample s;
    s.family = want == DType::kFp8 ? "gemm_fp8" : "gemm";
    s.gpu = gpu;
    s.where = t.where(r);
    s.key = "aic/" + dname + "/" + std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
    s.ops.push_back(dense_gemm(m, n, k, dt));
    s.time_s = ms * kMs;
    out.push_back(std::move(s));
  }
}

// ---- MoE rows ----

struct MoeRow {
  int64_t tokens, hidden, inter, topk, experts, tp, ep;
  DType dt;
  bool zero_fill;  // the kernel writes zero rows for the pairs of other ranks' experts (Triton fused MoE)
  bool early_collector;  // the table's collector predates the sampler's clamp and the non-gated experts (read_moe)
  bool gated;      // the experts' first GEMM yields gate and up (2 x inter columns) for an activation-and-multiply
};

// The collector's MoE shapes of models whose experts are not gated: NVIDIA Nemotron-3 (model_type nemotron_h) runs
// its experts with squared ReLU and no multiply (ai-dynamo/aiconfigurator collector/vllm/collect_moe.py,
// _resolve_moe_runtime_config: activation = mlp_hidden_act + "_no_mul"; vLLM sizes w13 with one shard when the
// activation is not act-and-mul). Their shapes (hidden_size, inter_size, topk, num_experts) from the packaged configs
// (aic-core/src/aiconfigurator_core/model_configs/nvidia--NVIDIA-Nemotron-3-*_config.json: hidden_size or, where
// set, moe_latent_size; moe_intermediate_size; num_experts_per_tok; n_routed_experts): Nano/Lightning, Super, Ultra.
// The table carries no model column, so the shape identifies the model.
bool non_gated_shape(int64_t hidden, int64_t inter, int64_t topk, int64_t experts) {
  constexpr int64_t kShapes[][4] = {{2688, 1856, 6, 128}, {1024, 2688, 22, 512}, {2048, 5120, 22, 512}};
  for (const auto& v : kShapes)
    if (hidden == v[0] && inter == v[1] && topk == v[2] && experts == v[3]) return true;
  return false;
}

// Tokens of each expert under the collector's balanced_logits: token t's i-th choice is (t + i stride) mod E when
// tokens >= stride, else (t stride / tokens + i stride) mod E truncated; stride = ceil(E / topk).
std::vector<int64_t> balanced_counts(const MoeRow& r) {
  const int64_t E = r.experts, T = r.tokens, stride = (E + r.topk - 1) / r.topk;
  std::vector<int64_t> c(static_cast<size_t>(E), 0);
  if (T >= stride) {
    const int64_t base = T / E, extra = T % E;
    for (int64_t i = 0; i < r.topk; ++i) {
      const int64_t off = (i * stride) % E;
      for (int64_t e = 0; e < E; ++e) {
        const int64_t pos = ((e - off) % E + E) % E;  // t = pos (mod E) reaches e
        c[static_cast<size_t>(e)] += base + (pos < extra ? 1 : 0);
      }
    }
  } else {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < r.topk; ++i) {
        // float32 arithmetic as in the collector's tensor, then truncation
        const float v = static_cast<float>(static_cast<double>(t) * static_cast<double>(stride) /
                                               static_cast<double>(T) +
                                           static_cast<double>(i * stride));
        const int64_t e = static_cast<int64_t>(std::fmod(v, static_cast<float>(E)));
        c[static_cast<size_t>(std::clamp<int64_t>(e, 0, E - 1))] += 1;
      }
  }
  return c;
}

// The collector's _round_robin_adjust_per_rank: `remaining` single steps of `step` (+1 or -1), one EP rank at a
// time in rank order, each to the rank's first local expert of least (step +1: among those below `bound`) or most
// (step -1: among those above 0) count; stops early when no rank can take a step.
void round_robin_adjust(std::vector<int64_t>& c, int64_t ep, int64_t remaining, int step, int64_t bound) {
  const int64_t g = static_cast<int64_t>(c.size()) / ep;
  while (remaining > 0) {
    bool progressed = false;
    for (int64_t q = 0; q < ep && remaining > 0; ++q) {
      int64_t pick = -1;
      for (int64_t e = q * g; e < (q + 1) * g; ++e) {
        const int64_t v = c[static_cast<size_t>(e)];
        if (step > 0 ? v >= bound : v <= 0) continue;
        if (pick < 0 || (step > 0 ? v < c[static_cast<size_t>(pick)] : v > c[static_cast<size_t>(pick)])) pick = e;
      }
      if (pick < 0) continue;
      c[static_cast<size_t>(pick)] += step;
      --remaining;
      progressed = true;
    }
    if (!progressed) break;
  }
}

// One draw of the collector's _generate_power_law_distribution: counts per expert (each at most num_tokens: a token
// picks an expert once), with EP rank 0 the heaviest.
std::vector<int64_t> power_law_counts(const MoeRow& r, double alpha, std::mt19937_64& rng) {
  const int64_t E = r.experts, T = r.tokens;
  const bool many = T * r.topk > E;
  const double lo = many ? 1.0 : 0.01, hi = many ? 0.8 * static_cast<double>(T) : 2.0;
  const double a1 = 1.0 - alpha;
  std::vector<double> x(static_cast<size_t>(E));
  double sum = 0;
  for (auto& v : x) {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    v = std::pow((std::pow(hi, a1) - std::pow(lo, a1)) * u + std::pow(lo, a1), 1.0 / a1);
    sum += v;
  }
  const int64_t target = T * r.topk;
  std::vector<int64_t> c(static_cast<size_t>(E));
  int64_t overflow = 0;
  for (size_t e = 0; e < x.size(); ++e) {
    c[e] = static_cast<int64_t>(std::nearbyint(x[e] / sum * static_cast<double>(target)));  // torch.round: half-even
    if (!r.early_collector && c[e] > T) overflow += c[e] - T, c[e] = T;  // at most num_tokens; the excess below
  }
  if (!r.early_collector) {
    round_robin_adjust(c, r.ep, overflow, +1, T);
    int64_t total = 0;
    for (int64_t v : c) total += v;
    const int64_t delta = target - total;
    if (delta > 0) round_robin_adjust(c, r.ep, delta, +1, T);
    if (delta < 0) round_robin_adjust(c, r.ep, -delta, -1, T);
  } else {
    // The earlier collector: no clamp; the rounding's remainder is added from the most-loaded expert down, or taken
    // from the least-loaded up (the order of counts after rounding).
    std::vector<size_t> order(c.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&c](size_t a, size_t b) { return c[a] > c[b]; });
    int64_t total = 0;
    for (int64_t v : c) total += v;
    const int64_t delta = target - total, n = E;
    for (int64_t i = 0; i < delta; ++i) c[order[static_cast<size_t>(i % n)]] += 1;
    for (int64_t i = 0; i < -delta; ++i) {
      const size_t idx = order[static_cast<size_t>(n - 1 - (i % n))];
      if (c[idx] > 0)
        c[idx] -= 1;
      else
        *std::max_element(c.begin(), c.end()) -= 1;
    }
  }
  // The EP group (E / ep consecutive experts) with the most pairs becomes rank 0's.
  const int64_t g = E / r.ep;
  int64_t best = 0, best_sum = -1;
  for (int64_t q = 0; q < r.ep; ++q) {
    int64_t s = 0;
    for (int64_t e = q * g; e < (q + 1) * g; ++e) s += c[static_cast<size_t>(e)];
    if (s > best_sum) best_sum = s, best = q;
  }
  if (best != 0)
    for (int64_t e = 0; e < g; ++e) std::swap(c[static_cast<size_t>(e)], c[static_cast<size_t>(best * g + e)]);
  return c;
}

// build_step's expert-compute ops of one MoE layer (emit_moe, gather form) for rank 0's experts with `counts`.
void moe_ops(const MoeRow& r, const std::vector<int64_t>& counts, std::vector<plan::Op>& ops) {
  const int64_t El = r.experts / r.ep, ef = r.inter / r.tp;
  const double h = static_cast<double>(r.hidden), a = kActBytes, wb = dtype_bytes(r.dt);
  std::vector<int64_t> local(counts.begin(), counts.begin() + El);
  int64_t pairs = 0, active = 0;
  for (int64_t v : local) pairs += v, active += v > 0 ? 1 : 0;
  // The pairs the activation and the combine run over (and the expert GEMMs' `tokens`): every routed pair when the
  // kernel zero-fills other ranks' pairs, else this rank's.
  const int64_t seen = r.zero_fill ? r.tokens * r.topk : pairs;
  const double T = static_cast<double>(r.tokens), P = static_cast<double>(pairs), PS = static_cast<double>(seen);
  {
    plan::Op o;
    o.kind = plan::OpKind::kMoeDispatch;
    o.name = "moe.permute";
    o.tokens = r.tokens;
    o.bytes = r.zero_fill ? T * static_cast<double>(r.topk) * 8.0 : (T + P) * h * a;
    ops.push_back(std::move(o));
  }
  auto experts = [&](const char* what, int64_t N, int64_t K) {
    plan::Op o;
    o.kind = plan::OpKind::kGemm;
    o.name = what;
    o.dtype = r.dt;
    o.expert_tokens = local;
    o.m = pairs, o.n = N, o.k = K, o.batch = El, o.tokens = seen;
    o.flops = 2.0 * P * static_cast<double>(N) * static_cast<double>(K);
    o.bytes = P * static_cast<double>(K + N) * a + (PS - P) * static_cast<double>(N) * a +
              static_cast<double>(active) * static_cast<double>(K) * static_cast<double>(N) * wb;
    ops.push_back(std::move(o));
  };
  experts("moe.experts.gate_up", r.gated ? 2 * ef : ef, r.hidden);
  {
    // Fused SiLU-and-mul (build_step's activation with fusion.silu_mul): reads gate and up, writes one; a non-gated
    // expert's activation reads and writes one.
    plan::Op o;
    o.kind = plan::OpKind::kActivation;
    o.name = "moe.experts.act";
    o.tokens = seen, o.n = ef;
    o.flops = (r.gated ? 5.0 : 2.0) * PS * static_cast<double>(ef);
    o.bytes = (r.gated ? 3.0 : 2.0) * PS * static_cast<double>(ef) * a;
    ops.push_back(std::move(o));
  }
  experts("moe.experts.down", r.hidden, ef);
  {
    plan::Op o;
    o.kind = plan::OpKind::kMoeCombine;
    o.name = "moe.unpermute";
    o.tokens = r.tokens;
    o.flops = 2.0 * PS * h;
    o.bytes = (T + PS) * h * a;
    ops.push_back(std::move(o));
  }
}

// FlashInfer's MoE kernels on Blackwell: vLLM runs the TensorRT-LLM ones unless told otherwise (vllm/envs.py:
// VLLM_FLASHINFER_MOE_BACKEND defaults to "latency", "Uses TensorRT-LLM kernels"; "throughput" picks CUTLASS). A
// table that has TensorRT-LLM rows for a dtype is modelled by them; its FlashInfer CUTLASS rows of that dtype are
// skipped.
bool is_flashinfer_trtllm(const std::string& src) { return src.find("_flashinfer_trtllm_") != std::string::npos; }
bool is_flashinfer_cutlass(const std::string& src) { return src.find("_flashinfer_cutlass_") != std::string::npos; }

void read_moe(const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) {
  std::vector<std::string> trtllm_dtypes;
  for (size_t row = 0; row < t.rows(); ++row)
    if (is_flashinfer_trtllm(t.str(row, "kernel_source"))) {
      const std::string& d = t.str(row, "moe_dtype");
      if (std::find(trtllm_dtypes.begin(), trtllm_dtypes.end(), d) == trtllm_dtypes.end()) trtllm_dtypes.push_back(d);
    }
  for (size_t row = 0; row < t.rows(); ++row) {
    MoeRow r{};
    const std::string& dname = t.str(row, "moe_dtype");
    if (!modelled_dtype(dname, r.dt)) continue;
    if (is_flashinfer_cutlass(t.str(row, "kernel_source")) &&
        std::find(trtllm_dtypes.begin(), trtllm_dtypes.end(), dname) != trtllm_dtypes.end())
      continue;
    r.tokens = t.integer(row, "num_tokens", 1);
    r.hidden = t.integer(row, "hidden_size", 1);
    r.inter = t.integer(row, "inter_size", 1);
    r.topk = t.integer(row, "topk", 1);
    r.experts = t.integer(row, "num_experts", 1);
    r.tp = t.integer(row, "moe_tp_size", 1);
    r.ep = t.integer(row, "moe_ep_size", 1, r.experts);
    // The vLLM 0.14 table (A100, committed 2026-02-19 from an auto-collector pipeline run) comes from the collector
    // before the sampler's clamp to num_tokens (collector/helper.py, 2026-02-10, #335; the per-rank round-robin came
    // 2026-04-19, #876), and before its vLLM collector resolved a model's activation (that collect_moe.py builds
    // FusedMoE with the default SiLU-and-mul for every shape, Nemotron's included). It fits that sampler best.
    r.early_collector = t.str(row, "version") == "0.14.0";
    r.gated = r.early_collector || !non_gated_shape(r.hidden, r.inter, r.topk, r.experts);
    const std::string dist = t.str(row, "distribution");
    // vLLM's Triton fused MoE (kernel_source `vllm_fused_moe` in 0.14, `..._triton_tritonexperts` in 0.24) with an
    // expert map: fused_moe.py's kernel writes zeros for the blocks of experts mapped to -1 (write_zeros_to_output),
    // and SiLU-and-mul and moe_sum run over the whole [num_tokens, topk] workspace. FlashInfer's CUTLASS and TRT-LLM
    // MoE compute only the local experts' pairs.
    const std::string& src = t.str(row, "kernel_source");
    r.zero_fill = src == "vllm_fused_moe" || src.find("_triton_") != std::string::npos;
    const double ms = t.number(row, "latency", 0.0);
    if (r.experts % r.ep != 0 || r.inter % r.tp != 0 || r.inter / r.tp == 0) continue;  // not a valid sharding
    Sample s;
    s.family = "moe";
    s.gpu = gpu;
    s.where = t.where(row);
    s.key = "aic/" + src + "/" + dname + "/" + std::to_string(r.tokens) + "/" +
            std::to_string(r.hidden) + "x" + std::to_string(r.inter) + "/k" + std::to_string(r.topk) + "/e" +
            std::to_string(r.experts) + "/tp" + std::to_string(r.tp) + "/ep" + std::to_string(r.ep) + "/" + dist;
    if (dist == "balanced") {
      moe_ops(r, balanced_counts(r), s.ops);
      s.time_s = ms * kMs;
    } else if (dist.rfind("power_law_", 0) == 0) {
      char* end = nullptr;
      const std::string tail = dist.substr(10);
      const double alpha = std::strtod(tail.c_str(), &end);
      if (tail.empty() || *end != '\0' || !(alpha > 0) || alpha == 1.0)
        throw ConfigError(t.name(), t.line(row), 0, "distribution", "balanced or power_law_<exponent != 1>", dist);
      std::mt19937_64 rng(fnv1a64(s.key));
      for (int d = 0; d < kPowerLawDraws; ++d) moe_ops(r, power_law_counts(r, alpha, rng), s.ops);
      s.time_s = ms * kMs * kPowerLawDraws;  // the collector's time is the mean over its draws
    } else {
      continue;  // a routing the collector did not document here
    }
    out.push_back(std::move(s));
  }
}

// ---- Parameters ----

FitParam gemm_param(const char* name, double spec::GemmParams::*field, double lo, double hi, bool time = false) {
  return {name, [field](spec::Gpu& g) -> double& { return g.gemm.*field; }, lo, hi, time};
}

// A bandwidth fraction that falls back to another when unset (0): it starts from that one, as the cost model reads it.
FitParam fallback_memory_param(const char* name, double spec::GemmParams::*field, double spec::GemmParams::*dense) {
  return {name,
          [field, dense](spec::Gpu& g) -> double& {
            if (g.gemm.*field <= 0) g.gemm.*field = g.gemm.*dense;
            return g.gemm.*field;
          },
          0.05, 1.0, false};
}

FitParam elementwise_kind(const std::string& kind, double lo, double hi) {
  return {"elementwise.memory." + kind,
          [kind](spec::Gpu& g) -> double& {
            auto it = g.elementwise.memory.find(kind);
            if (it == g.elementwise.memory.end()) it = g.elementwise.memory.emplace(kind, g.elementwise.default_memory).first;
            return it->second;
          },
          lo, hi, false};
}

}  // namespace

std::vector<Family> gemm_families() {
  std::vector<Family> v;
  {
    Family f;  // bfloat16 rows (and every GEMM of an executor profile)
    f.name = "gemm";
    f.tables = {"gemm_perf.csv"};
    using P = spec::GemmParams;
    f.params = {gemm_param("gemm.max_efficiency", &P::max_efficiency, 0.2, 1.0),
                gemm_param("gemm.tile_intensity", &P::tile_intensity, 0.5, 1000),
                gemm_param("gemm.k_half", &P::k_half, 1, 8192),
                gemm_param("gemm.k_step", &P::k_step_s, 1e-12, 1e-7, true),
                gemm_param("gemm.memory", &P::memory, 0.3, 1.0),
                gemm_param("gemm.overlap", &P::overlap, 1.0, 32.0),
                gemm_param("gemm.fixed", &P::fixed_s, 1e-7, 1e-4, true),
                gemm_param("gemm.split_k_min", &P::split_k_min, 32, 65536),
                gemm_param("gemm.split_k_fixed", &P::split_k_fixed_s, 1e-8, 1e-4, true)};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) {
      read_gemm(t, gpu, out, DType::kBf16);
    };
    f.predict = predict_ops;
    v.push_back(std::move(f));
  }
  {
    Family f;  // fp8 (per-tensor) rows: what the fp8 library adds; the tile model's shared terms come from "gemm"
    f.name = "gemm_fp8";
    f.tables = {"gemm_perf.csv"};
    using P = spec::GemmParams;
    f.params = {gemm_param("gemm.fp8_max_efficiency", &P::fp8_max_efficiency, 0.2, 1.0),
                gemm_param("gemm.fp8_memory", &P::fp8_memory, 0.3, 1.0),
                gemm_param("gemm.fp8_k_step", &P::fp8_k_step_s, 1e-12, 1e-7, true),
                gemm_param("gemm.fp8_fixed", &P::fp8_fixed_s, 1e-7, 1e-4, true),
                gemm_param("gemm.fp8_quant_fixed", &P::fp8_quant_fixed_s, 1e-8, 1e-4, true),
                gemm_param("gemm.fp8_quant_row", &P::fp8_quant_row_s, 1e-12, 1e-7, true),
                gemm_param("gemm.fp8_quant_pass", &P::fp8_quant_pass_s, 1e-12, 1e-7, true)};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) {
      read_gemm(t, gpu, out, DType::kFp8);
    };
    f.predict = predict_ops;
    v.push_back(std::move(f));
  }
  {
    Family f;
    f.name = "moe";
    f.tables = {"moe_perf.csv"};
    using P = spec::GemmParams;
    f.params = {gemm_param("gemm.grouped_efficiency", &P::grouped_efficiency, 0.1, 4.0),
                gemm_param("gemm.grouped_fixed", &P::grouped_fixed_s, 1e-7, 1e-4, true),
                gemm_param("gemm.fp8_grouped_efficiency", &P::fp8_grouped_efficiency, 0.05, 4.0),
                gemm_param("gemm.fp8_grouped_fixed", &P::fp8_grouped_fixed_s, 1e-7, 1e-4, true),
                fallback_memory_param("gemm.grouped_memory", &P::grouped_memory, &P::memory),
                gemm_param("gemm.grouped_expert", &P::grouped_expert_s, 1e-10, 1e-5, true),
                gemm_param("gemm.fp8_grouped_expert", &P::fp8_grouped_expert_s, 1e-10, 1e-5, true),
                fallback_memory_param("gemm.fp8_grouped_memory", &P::fp8_grouped_memory, &P::fp8_memory),
                elementwise_kind("moe_dispatch", 0.02, 1.0), elementwise_kind("moe_combine", 0.02, 1.0)};
    f.read = read_moe;
    f.predict = predict_ops;
    f.copy_structure = [](const spec::Gpu& from, spec::Gpu& to) {
      to.gemm.fp8_grouped_min_bm = from.gemm.fp8_grouped_min_bm;
    };
    v.push_back(std::move(f));
  }
  {
    Family f;
    f.name = "elementwise";
    f.params = {{"elementwise.fixed", [](spec::Gpu& g) -> double& { return g.elementwise.fixed_s; }, 1e-8, 1e-4, true},
                {"elementwise.default_memory", [](spec::Gpu& g) -> double& { return g.elementwise.default_memory; },
                 0.02, 1.0, false},
                elementwise_kind("rmsnorm", 0.02, 1.0), elementwise_kind("activation", 0.02, 1.0),
                elementwise_kind("rope", 0.02, 1.0), elementwise_kind("kv_append", 0.02, 1.0),
                elementwise_kind("embedding", 0.02, 1.0), elementwise_kind("sample", 0.02, 1.0)};
    f.predict = predict_ops;
    v.push_back(std::move(f));
  }
  return v;
}

}  // namespace parasol::cost

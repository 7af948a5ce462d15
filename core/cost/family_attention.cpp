// The attention families of the calibration (fit_family.hpp): context_attention, generation_attention (MHA/GQA kernel
// tables), context_mla and generation_mla (DeepSeek MLA: the kernel tables of vLLM 0.14 and the attention-module
// tables of vLLM 0.24), mla_bmm (the absorbed MLA batched GEMMs, costed by the GEMM model; fits gemm.batched_*).
// Each row becomes the ops build_step emits for it: a one-layer model of the row's shape (heads, KV heads, head dim
// per GPU; MLA: DeepSeek-V3's latent dims) is built by plan::StepBuilder and the row's ops are taken from layer 0, so
// FLOPs, bytes and shapes follow the planner's conventions exactly.
//   context tables: batch_size prompts of isl tokens, empty cache (causal); generation tables: batch_size sequences
//   decoding one token over isl + step keys. MLA kernel tables (impl.forward of the backend): prefill = kv_b GEMM +
//   attention, decode = q_absorb BMM + attention + v_absorb BMM; module tables (DeepseekV2MLAAttention.forward):
//   every op of layer 0's attention block (qkv_a ... o).
// Rows the families do not model are skipped: sliding-window rows (window_size > 0: the planner emits no windowed
// attention), beam search, non-bf16 attention math, fp4 GEMMs, and in kernel tables every kernel but the table's
// main one (a context table's rows that the engine ran with its decode kernel, fallback kernels for odd head dims).
// AIConfigurator samples carry the key prefix "aic/": their predictions add the harness's conditions
// (cost::AttentionBench, AttentionParams::bench_*); other samples (executor profiles) are costed as in serving.
// Thread behaviour: the registry is immutable; readers keep no state between calls.
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "core/common/error.hpp"
#include "core/cost/attention_cost.hpp"
#include "core/cost/fit_family.hpp"
#include "core/cost/gemm_cost.hpp"
#include "core/plan/build_step.hpp"

namespace parasol::cost {
namespace {

constexpr const char* kAicPrefix = "aic/";
// The AIConfigurator vLLM collectors allocate the paged KV cache in 64-token blocks (collector/vllm/collect_attn.py,
// collect_mla_module.py: block_size = 64).
constexpr double kAicKvBlockTokens = 64;

bool from_aic(const Sample& s) { return s.key.rfind(kAicPrefix, 0) == 0; }

// The time of one compute op under the sample's conditions.
double op_seconds(const plan::Op& op, const spec::Gpu& gpu, bool aic) {
  using plan::OpKind;
  if (op.kind == OpKind::kAttention || op.kind == OpKind::kMlaAttention) {
    AttentionBench bench;
    if (aic) bench.repeated = true, bench.kv_block_tokens = kAicKvBlockTokens;
    return attention_time(op, gpu, bench).time_s;
  }
  if (op.kind == OpKind::kGemm || op.kind == OpKind::kMoeGate) return gemm_op_time(op, gpu).time_s;
  return elementwise_op_time(op, gpu).time_s;
}

double predict_ops(const Sample& s, const spec::Gpu& gpu, double aic_overhead_s) {
  const bool aic = from_aic(s);
  double t = aic ? aic_overhead_s : 0.0;
  for (const auto& op : s.ops) t += op_seconds(op, gpu, aic);
  return t;
}

DType kv_dtype_of(const std::string& text) { return text == "fp8" ? DType::kFp8 : DType::kBf16; }

// DeepSeek-V3's attention (config.json of deepseek-ai/DeepSeek-V3; the MLA collectors use the same latent dims).
spec::Model deepseek_v3_attention(int64_t heads) {
  spec::Model m;
  m.name = "aic-mla";
  m.hidden = 7168;
  m.layers = 1;
  m.heads = heads;
  m.kv_heads = heads;
  m.head_dim = 192;
  m.ffn = 256;
  m.vocab = 256;
  m.attention = spec::AttentionKind::kMla;
  m.mla = spec::MlaSpec{1536, 512, 128, 64, 128};
  return m;
}

spec::Model gqa_attention(int64_t heads, int64_t kv_heads, int64_t head_dim) {
  spec::Model m;
  m.name = "aic-gqa";
  m.hidden = heads * head_dim;
  m.layers = 1;
  m.heads = heads;
  m.kv_heads = kv_heads;
  m.head_dim = head_dim;
  m.ffn = 256;
  m.vocab = 256;
  return m;
}

// Layer 0's ops for a batch, from one StepBuilder per model shape (tp 1: the heads are the GPU's own).
class LayerOps {
 public:
  const std::vector<plan::Op>& build(const spec::Model& m, DType weights, DType kv, const plan::Batch& batch) {
    const auto key = std::make_tuple(m.attention == spec::AttentionKind::kMla, m.heads, m.kv_heads, m.head_dim,
                                     static_cast<int>(weights), static_cast<int>(kv));
    auto it = builders_.find(key);
    if (it == builders_.end()) {
      plan::Plan plan;
      plan.model = m;
      plan.model.weight_dtype = weights;
      plan.model.kv_dtype = kv;
      plan.weight_dtype = weights;
      plan.kv_dtype = kv;
      plan.pools.emplace_back();
      it = builders_.emplace(key, std::make_unique<plan::StepBuilder>(plan, 0)).first;
    }
    it->second->build_ranks(batch, {0}, step_);
    return step_.ranks.at(0).ops;
  }

 private:
  std::map<std::tuple<bool, int64_t, int64_t, int64_t, int, int>, std::unique_ptr<plan::StepBuilder>> builders_;
  plan::Step step_;
};

plan::Batch uniform_batch(int64_t seqs, int64_t new_tokens, int64_t context) {
  plan::Batch b;
  b.seqs.resize(static_cast<size_t>(seqs));
  for (int64_t i = 0; i < seqs; ++i) {
    auto& s = b.seqs[static_cast<size_t>(i)];
    s.seq_id = i, s.new_tokens = new_tokens, s.context = context;
  }
  return b;
}

// The kernel_source that most rows of `t` name (the engine's main kernel for the table).
std::string main_kernel(const CsvTable& t) {
  std::map<std::string, size_t> count;
  for (size_t r = 0; r < t.rows(); ++r) ++count[t.str(r, "kernel_source")];
  std::string best;
  size_t n = 0;
  for (const auto& [k, c] : count)
    if (c > n) best = k, n = c;
  return best;
}

int64_t int_or(const CsvTable& t, size_t r, const std::string& col, int64_t def) {
  return t.has(col) ? t.integer(r, col) : def;
}

std::string key_of(const CsvTable& t, const std::vector<std::pair<const char*, std::string>>& fields) {
  std::string base = t.name();
  const size_t slash = base.find_last_of('/');
  if (slash != std::string::npos) base = base.substr(slash + 1);
  std::string k = std::string(kAicPrefix) + base + ":";
  for (const auto& [name, value] : fields) k += std::string(name) + "=" + value + ",";
  return k;
}

void append(std::vector<Sample>& out, const CsvTable& t, size_t r, const std::string& gpu, std::string key,
            std::vector<plan::Op> ops) {
  Sample s;
  s.gpu = gpu;
  s.where = t.where(r);
  s.key = std::move(key);
  s.ops = std::move(ops);
  s.time_s = t.number(r, "latency", 0.0) * 1e-3;  // milliseconds
  if (s.time_s > 0) out.push_back(std::move(s));
}

// context_attention_perf.csv / generation_attention_perf.csv.
void read_gqa(const CsvTable& t, const std::string& gpu, std::vector<Sample>& out, bool context) {
  const std::string kernel = main_kernel(t);
  LayerOps layer;
  for (size_t r = 0; r < t.rows(); ++r) {
    if (t.str(r, "kernel_source") != kernel) continue;
    if (int_or(t, r, "window_size", 0) != 0 || int_or(t, r, "beam_width", 1) != 1) continue;
    if (t.str(r, "attn_dtype") != "bfloat16" && t.str(r, "attn_dtype") != "float16") continue;
    const std::string kvd = t.str(r, "kv_cache_dtype");
    if (kvd != "fp8" && kvd != "bfloat16" && kvd != "float16") continue;
    const int64_t b = t.integer(r, "batch_size", 1, 1 << 20), isl = t.integer(r, "isl", 1, 1 << 24);
    const int64_t hq = t.integer(r, "num_heads", 1, 4096), hkv = t.integer(r, "num_key_value_heads", 1, 4096);
    const int64_t hd = t.integer(r, "head_dim", 1, 4096), step = t.integer(r, "step", 0, 1 << 24);
    if (hq % hkv != 0) continue;
    const plan::Batch batch = context ? uniform_batch(b, isl, 0) : uniform_batch(b, 1, isl + step - 1);
    std::vector<plan::Op> ops;
    for (const auto& op : layer.build(gqa_attention(hq, hkv, hd), DType::kBf16, kv_dtype_of(kvd), batch))
      if (op.kind == plan::OpKind::kAttention) ops.push_back(op);
    if (ops.size() != 1) continue;
    append(out, t, r, gpu,
           key_of(t, {{"b", std::to_string(b)},
                      {"isl", std::to_string(isl)},
                      {"step", std::to_string(step)},
                      {"hq", std::to_string(hq)},
                      {"hkv", std::to_string(hkv)},
                      {"hd", std::to_string(hd)},
                      {"kv", kvd}}),
           std::move(ops));
  }
}

// The MLA tables: context_mla_perf / generation_mla_perf (kernel) and mla_context_module_perf /
// mla_generation_module_perf (module).
void read_mla(const CsvTable& t, const std::string& gpu, std::vector<Sample>& out, bool context) {
  const bool module = t.has("gemm_type");
  const std::string kernel = context ? main_kernel(t) : "";
  LayerOps layer;
  for (size_t r = 0; r < t.rows(); ++r) {
    if (!kernel.empty() && t.str(r, "kernel_source") != kernel) continue;
    if (t.str(r, "mla_dtype") != "bfloat16") continue;
    const std::string kvd = t.str(r, "kv_cache_dtype");
    if (kvd != "fp8" && kvd != "bfloat16") continue;
    DType weights = DType::kBf16;
    std::string gemm = "bfloat16";
    if (module) {
      gemm = t.str(r, "gemm_type");
      if (gemm == "fp8_block")
        weights = DType::kFp8;
      else if (gemm != "bfloat16")
        continue;
      if (t.has("tp_size") && t.integer(r, "tp_size") != 1) continue;
    }
    const int64_t heads = t.integer(r, "num_heads", 1, 4096), b = t.integer(r, "batch_size", 1, 1 << 20);
    const int64_t isl = t.integer(r, "isl", 1, 1 << 24), step = t.integer(r, "step", 0, 1 << 24);
    const plan::Batch batch = context ? uniform_batch(b, isl, 0) : uniform_batch(b, 1, isl + step - 1);
    std::vector<plan::Op> ops;
    for (const auto& op : layer.build(deepseek_v3_attention(heads), weights, kv_dtype_of(kvd), batch)) {
      if (op.layer != 0 || op.name.rfind("L0.attn.", 0) != 0 || plan::is_communication(op.kind)) continue;
      if (!module) {  // the backend's forward: the up-projection or the absorbed BMMs around the kernel
        static const char* const kKernelOps[] = {"L0.attn.kv_b", "L0.attn.prefill", "L0.attn.q_absorb",
                                                 "L0.attn.decode", "L0.attn.v_absorb"};
        if (std::find_if(std::begin(kKernelOps), std::end(kKernelOps), [&](const char* n) { return op.name == n; }) ==
            std::end(kKernelOps))
          continue;
      }
      ops.push_back(op);
    }
    if (ops.empty()) continue;
    append(out, t, r, gpu,
           key_of(t, {{"b", std::to_string(b)},
                      {"isl", std::to_string(isl)},
                      {"step", std::to_string(step)},
                      {"heads", std::to_string(heads)},
                      {"kv", kvd},
                      {"gemm", gemm}}),
           std::move(ops));
  }
}

// mla_bmm_perf.csv: mla_gen_pre (q_nope x W_UK) and mla_gen_post (x W_UV) for num_tokens decode tokens.
void read_mla_bmm(const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) {
  LayerOps layer;
  for (size_t r = 0; r < t.rows(); ++r) {
    if (t.str(r, "bmm_dtype") != "bfloat16") continue;
    const std::string what = t.str(r, "op_name");
    const char* name = what == "mla_gen_pre" ? "L0.attn.q_absorb" : what == "mla_gen_post" ? "L0.attn.v_absorb" : nullptr;
    if (!name) continue;
    const int64_t tokens = t.integer(r, "num_tokens", 1, 1 << 24), heads = t.integer(r, "num_heads", 1, 4096);
    std::vector<plan::Op> ops;
    for (const auto& op : layer.build(deepseek_v3_attention(heads), DType::kBf16, DType::kBf16,
                                      uniform_batch(tokens, 1, 1)))
      if (op.name == name) ops.push_back(op);
    if (ops.size() != 1) continue;
    append(out, t, r, gpu, key_of(t, {{"op", what}, {"tokens", std::to_string(tokens)}, {"heads", std::to_string(heads)}}),
           std::move(ops));
  }
}

FitParam param(const char* name, double spec::AttentionParams::*field, double lo, double hi, bool time = false) {
  FitParam p;
  p.name = std::string("attention.") + name;
  p.field = [field](spec::Gpu& g) -> double& { return g.attention.*field; };
  p.lo = lo, p.hi = hi, p.time = time;
  return p;
}

}  // namespace

std::vector<Family> attention_families() {
  using A = spec::AttentionParams;
  std::vector<Family> v;
  {
    Family f;
    f.name = "context_attention";
    f.tables = {"context_attention_perf.csv"};
    f.params = {param("prefill_fixed", &A::prefill_fixed_s, 1e-6, 1e-4, true),
                param("prefill_max_efficiency", &A::prefill_max_efficiency, 0.2, 1.0),
                param("prefill_sm_efficiency", &A::prefill_sm_efficiency, 0.3, 1.0),
                param("prefill_d_half", &A::prefill_d_half, 1, 2000),
                param("prefill_per_tile", &A::prefill_per_tile_s, 1e-9, 1e-4, true),
                param("prefill_per_kv_token", &A::prefill_per_kv_token_s, 1e-12, 1e-5, true),
                param("prefill_memory", &A::prefill_memory, 0.2, 1.0),
                param("prefill_overlap", &A::prefill_overlap, 1.0, 16.0),
                param("prefill_softmax_overlap", &A::prefill_softmax_overlap, 1.0, 16.0),
                param("prefill_tail", &A::prefill_tail, 1.0, 16.0),
                param("prefill_fp8_tile", &A::prefill_fp8_tile, 0.3, 3.0),
                param("prefill_fp8_tile_slope", &A::prefill_fp8_tile_slope, -1.0, 2.0),
                param("prefill_fp8_overhead", &A::prefill_fp8_overhead, 0.5, 5.0),
                param("prefill_fp8_fixed", &A::prefill_fp8_fixed_s, 1e-9, 3e-5, true),
                param("prefill_fp8_kv_write", &A::prefill_fp8_kv_write, 0.3, 5.0)};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) { read_gqa(t, gpu, out, true); };
    f.predict = [](const Sample& s, const spec::Gpu& gpu) { return predict_ops(s, gpu, 0.0); };
    v.push_back(std::move(f));
  }
  {
    Family f;
    f.name = "generation_attention";
    f.tables = {"generation_attention_perf.csv"};
    f.params = {param("decode_fixed", &A::decode_fixed_s, 1e-6, 1e-4, true),
                param("decode_fp8_fixed", &A::decode_fp8_fixed_s, 1e-9, 3e-5, true),
                param("decode_memory", &A::decode_memory, 0.3, 1.0),
                param("decode_sm_bandwidth", &A::decode_sm_bandwidth, 0.5, 50),
                param("decode_mma_efficiency", &A::decode_mma_efficiency, 0.02, 1.0),
                param("decode_fp8_mma", &A::decode_fp8_mma, 0.5, 3.0),
                param("per_cta", &A::per_cta_s, 1e-9, 1e-4, true),
                param("per_cta_dim", &A::per_cta_dim_s, 1e-12, 1e-7, true),
                param("per_block", &A::per_block_s, 1e-12, 1e-5, true),
                param("per_seq", &A::per_seq_s, 1e-12, 1e-5, true),
                param("split", &A::split_s, 1e-8, 5e-5, true),
                param("decode_overlap", &A::decode_overlap, 1.0, 16.0),
                param("bench_l2_fraction", &A::bench_l2_fraction, 0.2, 2.0),
                param("bench_l2_speedup", &A::bench_l2_speedup, 1.0, 6.0),
                param("bench_l2_bytes", &A::bench_l2_bytes, 1e6, 1e9)};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) { read_gqa(t, gpu, out, false); };
    f.predict = [](const Sample& s, const spec::Gpu& gpu) { return predict_ops(s, gpu, 0.0); };
    v.push_back(std::move(f));
  }
  {
    Family f;
    f.name = "mla_bmm";
    f.tables = {"mla_bmm_perf.csv"};
    f.params = {{"gemm.batched_efficiency", [](spec::Gpu& g) -> double& { return g.gemm.batched_efficiency; }, 0.05, 4.0,
                 false},
                {"gemm.batched_fixed", [](spec::Gpu& g) -> double& { return g.gemm.batched_fixed_s; }, 1e-7, 1e-4, true},
                {"gemm.bench_l2_fraction", [](spec::Gpu& g) -> double& { return g.gemm.bench_l2_fraction; }, 0.2, 2.0,
                 false},
                {"gemm.bench_l2_speedup", [](spec::Gpu& g) -> double& { return g.gemm.bench_l2_speedup; }, 1.0, 6.0,
                 false}};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) { read_mla_bmm(t, gpu, out); };
    // The collector repeats each BMM on the same tensors: the GEMM model's bench conditions (L2 residency).
    f.predict = [](const Sample& s, const spec::Gpu& gpu) {
      GemmBench bench;
      bench.repeated = from_aic(s);
      double t = 0;
      for (const auto& op : s.ops)
        t += op.kind == plan::OpKind::kGemm ? gemm_time(op, gpu, bench).time_s : op_seconds(op, gpu, bench.repeated);
      return t;
    };
    v.push_back(std::move(f));
  }
  {
    Family f;
    f.name = "context_mla";
    f.tables = {"context_mla_perf.csv", "mla_context_module_perf.csv"};
    f.params = {param("mla_prefill_factor", &A::mla_prefill_factor, 0.2, 5.0),
                param("mla_prefill_max_efficiency", &A::mla_prefill_max_efficiency, 0.1, 1.0),
                param("mla_prefill_per_token", &A::mla_prefill_per_token_s, 1e-12, 1e-5, true),
                param("bench_mla_context", &A::bench_mla_context_s, 1e-9, 1e-3, true)};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) { read_mla(t, gpu, out, true); };
    f.predict = [](const Sample& s, const spec::Gpu& gpu) {
      return predict_ops(s, gpu, gpu.attention.bench_mla_context_s);
    };
    v.push_back(std::move(f));
  }
  {
    Family f;
    f.name = "generation_mla";
    f.tables = {"generation_mla_perf.csv", "mla_generation_module_perf.csv"};
    f.params = {param("mla_decode_mma_efficiency", &A::mla_decode_mma_efficiency, 0.02, 1.0),
                param("mla_decode_sm_bandwidth", &A::mla_decode_sm_bandwidth, 0.1, 50),
                param("mla_decode_reread", &A::mla_decode_reread, 0.0, 1.0),
                param("mla_decode_single_head", &A::mla_decode_single_head, 0.5, 20.0),
                param("mla_decode_fp8", &A::mla_decode_fp8, 0.3, 3.0),
                param("mla_decode_per_row", &A::mla_decode_per_row_s, 1e-10, 1e-5, true),
                param("mla_decode_fixed", &A::mla_decode_fixed_s, 1e-7, 1e-4, true),
                param("bench_mla_generation", &A::bench_mla_generation_s, 1e-9, 1e-3, true)};
    f.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) { read_mla(t, gpu, out, false); };
    f.predict = [](const Sample& s, const spec::Gpu& gpu) {
      return predict_ops(s, gpu, gpu.attention.bench_mla_generation_s);
    };
    v.push_back(std::move(f));
  }
  return v;
}

}  // namespace parasol::cost

// Feasibility checks and the per-rank memory model. Element counts follow the HF module shapes; see
// docs/cost-model.md for the memory formula.
#include "core/plan/feasibility.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/common/units.hpp"

namespace parasol::plan {
namespace {

constexpr double kNormBytes = 2.0;  // norms and router weights are kept in bf16

double embed_elem_bytes(DType weight_dtype) { return std::max(dtype_bytes(weight_dtype), 2.0); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements of one layer's attention GEMM weights held by one rank (norms excluded).
double attention_elems(const spec::Model& m, int tp, const HeadSharding& hs) {
  double h = static_cast<double>(m.hidden);
  if (m.attention == spec::AttentionKind::kMla && m.mla) {
    const auto& a = *m.mla;
    double hq = static_cast<double>(hs.q_heads);
    double qk = static_cast<double>(a.qk_nope_head_dim + a.qk_rope_head_dim);
    double e = 0;
    if (a.q_lora_rank > 0)
      e += h * a.q_lora_rank + a.q_lora_rank * hq * qk;
    else
      e += h * hq * qk;
    e += h * (a.kv_lora_rank + a.qk_rope_head_dim);                                      // kv_a (replicated)
    e += static_cast<double>(a.kv_lora_rank) * hq * (a.qk_nope_head_dim + a.v_head_dim);  // kv_b
    e += hq * a.v_head_dim * h;                                                          // o
    return e;
  }
  double qd = static_cast<double>(hs.q_heads * m.head_dim);
  double kvd = static_cast<double>(hs.kv_heads * m.head_dim);
  double e = h * (qd + 2 * kvd) + qd * h;
  if (m.qkv_bias) e += qd + 2 * kvd;
  (void)tp;
  return e;
}

double attention_norm_elems(const spec::Model& m) {
  double e = 0;
  if (m.attention == spec::AttentionKind::kMla && m.mla) e += m.mla->q_lora_rank + m.mla->kv_lora_rank;
  if (m.qk_norm) e += 2.0 * m.head_dim;
  return e;
}

}  // namespace

HeadSharding shard_heads(const spec::Model& m, int tp) {
  HeadSharding hs;
  hs.q_heads = std::max<int64_t>(1, m.heads / tp);
  if (m.attention == spec::AttentionKind::kMla) {
    hs.kv_heads = 1;  // one shared latent
    hs.kv_replicas = tp;
    return hs;
  }
  int64_t kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
  if (tp <= kv) {
    hs.kv_heads = std::max<int64_t>(1, kv / tp);
    hs.kv_replicas = 1;
  } else {
    hs.kv_heads = 1;
    hs.kv_replicas = tp / kv;
  }
  return hs;
}

std::vector<std::pair<int64_t, int64_t>> split_layers(int64_t layers, int pp) {
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t base = layers / pp, extra = layers % pp, first = 0;
  for (int s = 0; s < pp; ++s) {
    int64_t n = base + (s < extra ? 1 : 0);
    out.emplace_back(first, first + n);
    first += n;
  }
  return out;
}

double rank_weight_bytes(const spec::Model& m, const ParallelConfig& c, DType weight_dtype,
                         std::pair<int64_t, int64_t> layers, bool first_stage, bool last_stage) {
  const double wb = dtype_bytes(weight_dtype);
  const double h = static_cast<double>(m.hidden);
  const HeadSharding hs = shard_heads(m, c.tp);
  const double attn = attention_elems(m, c.tp, hs) * wb + attention_norm_elems(m) * kNormBytes;
  const double dense = 3.0 * h * static_cast<double>(ceil_div(m.ffn, c.tp)) * wb;
  double moe = 0;
  if (m.is_moe()) {
    const auto& e = m.moe;
    double expert = 3.0 * h * static_cast<double>(e.expert_ffn) * wb;
    moe += h * e.num_experts * kNormBytes;  // router
    moe += static_cast<double>(e.num_experts / c.ep) * expert / c.moe_tp();
    double shared = static_cast<double>(e.num_shared_experts) * expert;
    moe += moe_all_to_all(c) ? shared : shared / c.ranks_per_stage();
  }
  double bytes = 0;
  for (int64_t l = layers.first; l < layers.second; ++l) {
    bytes += attn + 2.0 * h * kNormBytes;
    bytes += m.is_moe_layer(l) ? moe : dense;
  }
  const double embed = static_cast<double>(ceil_div(m.vocab, c.tp)) * h * embed_elem_bytes(weight_dtype);
  if (first_stage) bytes += embed;
  if (last_stage) {
    bytes += h * kNormBytes;  // final norm
    if (!(m.tie_embeddings && first_stage)) bytes += embed;
  }
  return bytes;
}

double rank_kv_bytes_per_token(const spec::Model& m, int tp, DType kv_dtype, std::pair<int64_t, int64_t> layers) {
  const double n = static_cast<double>(layers.second - layers.first);
  if (m.attention == spec::AttentionKind::kMla && m.mla)
    return n * static_cast<double>(m.mla->kv_lora_rank + m.mla->qk_rope_head_dim) * dtype_bytes(kv_dtype);
  const HeadSharding hs = shard_heads(m, tp);
  return n * 2.0 * static_cast<double>(hs.kv_heads * m.head_dim) * dtype_bytes(kv_dtype);
}

double rank_activation_bytes(const spec::Model& m, const ParallelConfig& c, const PlanOptions& o) {
  const double a = dtype_bytes(m.act_dtype);
  const double t = static_cast<double>(o.max_batch_tokens);
  const double h = static_cast<double>(m.hidden);
  const HeadSharding hs = shard_heads(m, c.tp);
  const double base = 4.0 * t * h * a;  // residual, hidden, normed, block output
  double attn = 0;
  if (m.attention == spec::AttentionKind::kMla && m.mla) {
    const auto& l = *m.mla;
    double qk = static_cast<double>(l.qk_nope_head_dim + l.qk_rope_head_dim);
    attn = t * a * (l.q_lora_rank + l.kv_lora_rank + l.qk_rope_head_dim + hs.q_heads * qk +
                    2.0 * hs.q_heads * (l.qk_nope_head_dim + l.v_head_dim) + hs.q_heads * l.v_head_dim);
  } else {
    attn = t * a * static_cast<double>((2 * hs.q_heads + 2 * hs.kv_heads) * m.head_dim);
  }
  double mlp = 3.0 * t * static_cast<double>(ceil_div(m.ffn, c.tp)) * a;
  if (m.is_moe()) {
    double pairs = t * c.attn_dp * static_cast<double>(m.moe.top_k) / c.ep;
    double ef = static_cast<double>(m.moe.expert_ffn) / c.moe_tp();
    mlp = std::max(mlp, pairs * a * (2.0 * h + 3.0 * ef) + t * c.attn_dp * h * a);
  }
  const double logits = static_cast<double>(o.max_batch_seqs) * static_cast<double>(ceil_div(m.vocab, c.tp)) * 4.0;
  return base + std::max(attn, mlp) + logits;
}

FeasibilityResult check_feasibility(const spec::Model& m, const spec::Gpu& gpu, const ParallelConfig& c,
                                    const PlanOptions& o) {
  FeasibilityResult r;
  Feasibility& f = r.feasibility;
  if (auto why = c.invalid_reason(); !why.empty()) {
    f.fail(why);
    return r;
  }
  auto num = [](int64_t v) { return std::to_string(v); };
  if (m.heads % c.tp != 0) f.fail("heads " + num(m.heads) + " not divisible by tp " + num(c.tp));
  if (m.attention != spec::AttentionKind::kMla) {
    int64_t kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
    if (c.tp <= kv && kv % c.tp != 0) f.fail("kv heads " + num(kv) + " not divisible by tp " + num(c.tp));
    if (c.tp > kv && c.tp % kv != 0) f.fail("tp " + num(c.tp) + " not a multiple of kv heads " + num(kv));
    if (c.tp > kv && c.tp % kv == 0)
      f.reasons.push_back("note: kv heads replicated " + num(c.tp / kv) + "x (tp " + num(c.tp) + " > kv heads " +
                          num(kv) + ")");
  }
  if (m.layers < c.pp) f.fail("pp " + num(c.pp) + " exceeds layers " + num(m.layers));
  if (m.ffn > 0 && m.ffn % c.tp != 0) f.fail("ffn " + num(m.ffn) + " not divisible by tp " + num(c.tp));
  if (!m.is_moe()) {
    if (c.ep > 1) f.fail("ep " + num(c.ep) + " > 1 needs an MoE model");
    if (c.attn_dp > 1) f.fail("attention-DP " + num(c.attn_dp) + " > 1 needs an MoE model (use dp)");
  } else {
    if (m.moe.num_experts % c.ep != 0)
      f.fail("experts " + num(m.moe.num_experts) + " not divisible by ep " + num(c.ep));
    if (m.moe.expert_ffn % c.moe_tp() != 0)
      f.fail("expert ffn " + num(m.moe.expert_ffn) + " not divisible by expert tp " + num(c.moe_tp()));
    if (!moe_all_to_all(c) && m.moe.num_shared_experts > 0 && m.moe.expert_ffn % c.ranks_per_stage() != 0)
      f.fail("shared expert ffn " + num(m.moe.expert_ffn) + " not divisible by tp x attn_dp " +
             num(c.ranks_per_stage()));
  }
  if (!f.ok) return r;

  r.stage_layers = split_layers(m.layers, c.pp);
  if (m.layers % c.pp != 0)
    f.reasons.push_back("note: uneven layer split " + num(m.layers) + " over pp " + num(c.pp) + " (stages of " +
                        num(r.stage_layers.front().second - r.stage_layers.front().first) + " and " +
                        num(r.stage_layers.back().second - r.stage_layers.back().first) + " layers)");

  const DType wd = o.weight_dtype_set ? o.weight_dtype : m.weight_dtype;
  const DType kd = o.kv_dtype_set ? o.kv_dtype : m.kv_dtype;
  MemoryBudget& mb = r.memory;
  mb.capacity_bytes = gpu.hbm_bytes;
  mb.usable_bytes = gpu.hbm_bytes * o.target_utilization;
  mb.reserve_bytes = o.runtime_reserve_bytes;
  mb.activation_bytes = rank_activation_bytes(m, c, o);
  mb.kv_block_tokens = o.kv_block_tokens;
  int64_t kv_tokens = INT64_MAX;
  double kv_bytes = 0;
  for (int s = 0; s < c.pp; ++s) {
    const auto layers = r.stage_layers[static_cast<size_t>(s)];
    double w = rank_weight_bytes(m, c, wd, layers, s == 0, s == c.pp - 1);
    mb.weight_bytes = std::max(mb.weight_bytes, w);
    double free = mb.usable_bytes - w - mb.activation_bytes - mb.reserve_bytes;
    if (free <= 0) {
      std::ostringstream os;
      os << "memory: stage " << s << " needs weights " << format_bytes(w) << " + activations "
         << format_bytes(mb.activation_bytes) << " + reserve " << format_bytes(mb.reserve_bytes)
         << " per GPU, more than the usable " << format_bytes(mb.usable_bytes) << " (" << format_bytes(gpu.hbm_bytes)
         << " x " << o.target_utilization << ")";
      f.fail(os.str());
      continue;
    }
    double per_token = rank_kv_bytes_per_token(m, c.tp, kd, layers);
    int64_t tokens = per_token > 0 ? static_cast<int64_t>(std::floor(free / per_token)) : INT64_MAX / 2;
    tokens = tokens / o.kv_block_tokens * o.kv_block_tokens;
    if (tokens < kv_tokens) {
      kv_tokens = tokens;
      kv_bytes = free;
    }
  }
  if (!f.ok) return r;
  mb.kv_tokens = kv_tokens;
  mb.kv_bytes = kv_bytes;
  if (kv_tokens < o.min_kv_tokens)
    f.fail("memory: the KV cache holds " + num(kv_tokens) + " tokens per instance, fewer than the minimum " +
           num(o.min_kv_tokens));
  return r;
}

}  // namespace parasol::plan

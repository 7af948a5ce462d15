// ModelRunner's construction: the Plan its Steps come from, the communicator groups, and this rank's weights (read
// through the WeightSource as RankLayout slices them) and KV cache.
#include <algorithm>
#include <cmath>

#include "core/common/error.hpp"
#include "exec/runner_impl.hpp"

namespace parasol::exec {
namespace {

DType dtype_of(ElemType t) {
  switch (t) {
    case ElemType::kBf16:
      return DType::kBf16;
    case ElemType::kF16:
      return DType::kFp16;
    default:
      return DType::kFp32;
  }
}

}  // namespace

std::vector<float> rope_inv_freq(const spec::Model& m, int64_t rot_dim) {
  std::vector<float> inv(static_cast<size_t>(rot_dim / 2));
  const float base = static_cast<float>(m.rope_theta);
  for (int64_t i = 0; i < rot_dim / 2; ++i)
    inv[i] = 1.0f / std::pow(base, static_cast<float>(2 * i) / static_cast<float>(rot_dim));
  const auto& s = m.rope_scaling;
  if (s.type == "llama3") {
    const float pi = 3.14159265358979323846f;
    float factor = static_cast<float>(s.factor), lo_ff = static_cast<float>(s.low_freq_factor),
          hi_ff = static_cast<float>(s.high_freq_factor), L0 = static_cast<float>(s.original_max_position);
    float lo_wavelen = L0 / lo_ff, hi_wavelen = L0 / hi_ff;
    for (auto& f : inv) {
      float wavelen = 2.0f * pi / f;
      if (wavelen > lo_wavelen) {
        f = f / factor;
      } else if (wavelen >= hi_wavelen) {
        float smooth = (L0 / wavelen - lo_ff) / (hi_ff - lo_ff);
        f = (1.0f - smooth) * f / factor + smooth * f;
      }
    }
  } else if (s.type != "none" && s.type != "default" && s.type != "yarn") {
    throw ConfigError("rope scaling '" + s.type + "' is not supported by the executor (none, llama3)");
  }
  return inv;
}

ModelRunner::Impl::Impl(const spec::Model& m, const RankLayout& l, Backend& b, Communicator& c, const WeightSource& w,
                        const RunnerOptions& o)
    : model(m), layout(l), be(b), world(c), weights(w), opt(o) {
  if (!b.host_memory() && c.name() != "nccl")
    throw ConfigError("communicator '" + c.name() + "' needs a host-memory backend, not '" + b.name() + "'");
  if (c.size() != l.config.instance_size())
    throw ConfigError("the communicator has " + std::to_string(c.size()) + " ranks, the layout " +
                      std::to_string(l.config.instance_size()));
  if (m.qkv_bias || m.qk_norm) throw ConfigError("model '" + m.name + "': qkv bias and qk-norm are not supported yet");
  const auto& cfg = l.config;

  // The Plan of the Steps: the caller's, or one made of this model and layout.
  if (o.plan) {
    plan = *o.plan;
    if (o.pool < 0 || o.pool >= static_cast<int>(plan.pools.size()))
      throw ConfigError("", 0, 0, "pool", "a pool of the plan", std::to_string(o.pool));
    const auto& pc = plan.pools[static_cast<size_t>(o.pool)].config;
    if (!(pc.tp == cfg.tp && pc.pp == cfg.pp && pc.ep == cfg.ep && pc.attn_dp == cfg.attn_dp))
      throw ConfigError("", 0, 0, "layout", "the plan's layout " + pc.label(), cfg.label());
    const auto& sl = plan.pools[static_cast<size_t>(o.pool)].stage_layers;
    if (!sl.empty() && sl != l.stage_layers)
      throw ConfigError("", 0, 0, "stage_layers", "the plan's layer split", "another split in the rank layout");
  } else {
    plan.model = m;
    plan::Pool pool;
    pool.config = cfg;
    pool.config.dp = 1;
    pool.stage_layers = l.stage_layers;
    plan.pools.push_back(pool);
    plan.weight_dtype = dtype_of(o.weight_type);
    plan.kv_dtype = dtype_of(o.kv_type);
  }
  builder = std::make_unique<plan::StepBuilder>(plan, o.plan ? o.pool : 0);
  act_bytes = static_cast<double>(dtype_bytes(plan.model.act_dtype));
  weight_bytes = static_cast<double>(dtype_bytes(plan.weight_dtype));

  tp_comm = c.split(l.stage * cfg.attn_dp + l.attn_group, l.tp_index);
  stage_comm = c.split(l.stage, l.stage_rank);
  for (int t = 0; t < cfg.tp; ++t) tp_members.push_back(cfg.rank(l.stage, l.attn_group, t));
  for (int j = 0; j < cfg.ranks_per_stage(); ++j) stage_members.push_back(l.stage * cfg.ranks_per_stage() + j);
  for (int a = 0; a < cfg.attn_dp; ++a)
    if (const int r = cfg.rank(cfg.pp - 1, a, 0); r != 0) token_senders.push_back(r);
  mixtral_names = m.architecture.find("Mixtral") != std::string::npos ||
                  (m.architecture.empty() && m.is_moe() && m.moe.scoring == "softmax");

  const int64_t H = m.hidden;
  ElemType wt = o.weight_type;
  if (l.first_stage())
    embed = load("model.embed_tokens.weight", {m.vocab, H}, {Slice{0, l.vocab.begin, l.vocab.end}}, wt);
  if (l.last_stage()) {
    final_norm = load_full("model.norm.weight", {H}, wt);
    std::string head = m.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    lm_head = load(head, {m.vocab, H}, {Slice{0, l.vocab.begin, l.vocab.end}}, wt);
  }
  int64_t rot = m.mla ? m.mla->qk_rope_head_dim : m.head_dim;
  std::vector<float> inv = rope_inv_freq(m, rot);
  inv_freq = upload(inv, {static_cast<int64_t>(inv.size())}, ElemType::kF32);

  for (int64_t i = l.layer_begin; i < l.layer_end; ++i) {
    layers.emplace_back();
    layers.back().index = i;
    load_layer(layers.back());
  }
  for (int32_t blk = static_cast<int32_t>(o.kv_blocks) - 1; blk >= 0; --blk) free_blocks.push_back(blk);
}

OwnedTensor ModelRunner::Impl::upload(const std::vector<float>& host, const std::vector<int64_t>& shape,
                                      ElemType type) {
  OwnedTensor t(be, type, shape);
  upload_f32(be, host, *t);
  return t;
}

OwnedTensor ModelRunner::Impl::load(const std::string& name, const std::vector<int64_t>& shape,
                                    const std::vector<Slice>& parts, ElemType type) {
  std::vector<float> host;
  std::vector<int64_t> out_shape = shape;
  int64_t dim0 = 0;
  for (const Slice& s : parts) {
    std::vector<float> v = weights.read_slice(name, shape, s);
    host.insert(host.end(), v.begin(), v.end());
    int64_t end = s.end < 0 ? shape[s.dim] : s.end;
    if (s.dim == 0)
      dim0 += end - s.begin;
    else
      out_shape[1] = end - s.begin;
  }
  if (parts.size() == 1 && parts[0].dim == 1) dim0 = shape[0];
  out_shape[0] = dim0;
  return upload(host, out_shape, type);
}

MlpWeights ModelRunner::Impl::load_mlp(const std::string& gate, const std::string& up, const std::string& down,
                                       int64_t ffn, Range r) {
  MlpWeights w;
  w.f = r.size();
  if (w.f == 0) return w;
  const int64_t H = model.hidden;
  std::vector<float> g = weights.read_slice(gate, {ffn, H}, Slice{0, r.begin, r.end});
  std::vector<float> u = weights.read_slice(up, {ffn, H}, Slice{0, r.begin, r.end});
  g.insert(g.end(), u.begin(), u.end());
  w.gate_up = upload(g, {2 * w.f, H}, opt.weight_type);
  w.down = load(down, {H, ffn}, {Slice{1, r.begin, r.end}}, opt.weight_type);
  return w;
}

void ModelRunner::Impl::load_mla(LayerWeights& lw) {
  const auto& m = model;
  const auto& a = *m.mla;
  const int64_t H = m.hidden, slots = opt.kv_blocks * opt.block_tokens;
  const std::string p = layer_prefix(lw.index);
  const ElemType wt = opt.weight_type;
  const Range qh = layout.q_heads;
  const int64_t qk = a.qk_nope_head_dim + a.qk_rope_head_dim, vq = a.qk_nope_head_dim + a.v_head_dim;
  const int64_t L = a.kv_lora_rank, nope = a.qk_nope_head_dim, Hl = qh.size();
  Slice heads_rows{0, qh.begin * qk, qh.end * qk};
  std::vector<float> kv_a =
      weights.read_slice(p + "self_attn.kv_a_proj_with_mqa.weight", {L + a.qk_rope_head_dim, H}, Slice{});
  if (a.q_lora_rank > 0) {
    std::vector<float> qa = weights.read_slice(p + "self_attn.q_a_proj.weight", {a.q_lora_rank, H}, Slice{});
    qa.insert(qa.end(), kv_a.begin(), kv_a.end());
    lw.qkv_a = upload(qa, {a.q_lora_rank + L + a.qk_rope_head_dim, H}, wt);
    lw.q_a_norm = load_full(p + "self_attn.q_a_layernorm.weight", {a.q_lora_rank}, wt);
    lw.q_b = load(p + "self_attn.q_b_proj.weight", {m.heads * qk, a.q_lora_rank}, {heads_rows}, wt);
  } else {
    lw.qkv_a = upload(kv_a, {L + a.qk_rope_head_dim, H}, wt);
    lw.q_b = load(p + "self_attn.q_proj.weight", {m.heads * qk, H}, {heads_rows}, wt);
  }
  lw.kv_a_norm = load_full(p + "self_attn.kv_a_layernorm.weight", {L}, wt);
  std::vector<float> kvb =
      weights.read_slice(p + "self_attn.kv_b_proj.weight", {m.heads * vq, L}, Slice{0, qh.begin * vq, qh.end * vq});
  // W_UK of head h: rows h*vq .. h*vq+nope of kv_b ([nope, L]); transposed to [L, nope] for q_nope x W_UK.
  std::vector<float> uk(static_cast<size_t>(Hl * L * nope));
  for (int64_t h = 0; h < Hl; ++h)
    for (int64_t c = 0; c < L; ++c)
      for (int64_t d = 0; d < nope; ++d) uk[(h * L + c) * nope + d] = kvb[(h * vq + d) * L + c];
  lw.kv_b = upload(kvb, {Hl * vq, L}, wt);
  lw.w_uk_t = upload(uk, {Hl * L, nope}, wt);
  lw.o = load(p + "self_attn.o_proj.weight", {H, m.heads * a.v_head_dim},
              {Slice{1, qh.begin * a.v_head_dim, qh.end * a.v_head_dim}}, wt);
  lw.latent = OwnedTensor(be, opt.kv_type, {slots, L + a.qk_rope_head_dim});
}

void ModelRunner::Impl::load_layer(LayerWeights& lw) {
  const auto& m = model;
  const int64_t H = m.hidden, l = lw.index, slots = opt.kv_blocks * opt.block_tokens;
  const std::string p = layer_prefix(l);
  ElemType wt = opt.weight_type;
  lw.attn_norm = load_full(p + "input_layernorm.weight", {H}, wt);
  lw.mlp_norm = load_full(p + "post_attention_layernorm.weight", {H}, wt);
  const Range qh = layout.q_heads;
  if (m.mla) {
    load_mla(lw);
  } else {
    const int64_t D = m.head_dim, kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
    const Range kh = layout.kv_heads;
    std::vector<float> q =
        weights.read_slice(p + "self_attn.q_proj.weight", {m.heads * D, H}, Slice{0, qh.begin * D, qh.end * D});
    std::vector<float> k =
        weights.read_slice(p + "self_attn.k_proj.weight", {kv * D, H}, Slice{0, kh.begin * D, kh.end * D});
    std::vector<float> v =
        weights.read_slice(p + "self_attn.v_proj.weight", {kv * D, H}, Slice{0, kh.begin * D, kh.end * D});
    q.insert(q.end(), k.begin(), k.end());
    q.insert(q.end(), v.begin(), v.end());
    lw.qkv = upload(q, {(qh.size() + 2 * kh.size()) * D, H}, wt);
    lw.o = load(p + "self_attn.o_proj.weight", {H, m.heads * D}, {Slice{1, qh.begin * D, qh.end * D}}, wt);
    lw.k_cache = OwnedTensor(be, opt.kv_type, {slots, kh.size(), D});
    lw.v_cache = OwnedTensor(be, opt.kv_type, {slots, kh.size(), D});
  }
  lw.moe = m.is_moe_layer(l);
  if (!lw.moe) {
    lw.mlp =
        load_mlp(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight", m.ffn, layout.ffn);
    return;
  }
  const int64_t E = m.moe.num_experts, F = m.moe.expert_ffn;
  std::string moe_p = p + (mixtral_names ? "block_sparse_moe." : "mlp.");
  lw.router = load_full(moe_p + "gate.weight", {E, H}, ElemType::kF32);  // router math in fp32 (HF)
  if (m.moe.scoring == "sigmoid")
    lw.router_bias = load_full(moe_p + "gate.e_score_correction_bias", {E}, ElemType::kF32);
  for (int64_t e = layout.experts.begin; e < layout.experts.end; ++e) {
    std::string ep = moe_p + "experts." + std::to_string(e) + ".";
    if (mixtral_names)
      lw.experts.push_back(load_mlp(ep + "w1.weight", ep + "w3.weight", ep + "w2.weight", F, layout.expert_ffn));
    else
      lw.experts.push_back(
          load_mlp(ep + "gate_proj.weight", ep + "up_proj.weight", ep + "down_proj.weight", F, layout.expert_ffn));
  }
  if (m.moe.num_shared_experts > 0) {
    std::string sp = p + "mlp.shared_experts.";
    lw.shared = load_mlp(sp + "gate_proj.weight", sp + "up_proj.weight", sp + "down_proj.weight",
                         m.moe.num_shared_experts * F, layout.shared_ffn);
  }
}

}  // namespace parasol::exec

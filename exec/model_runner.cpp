// ModelRunner: weights, KV blocks, the step driver, embedding, LM head, pipeline hand-off and sampling. The layer
// blocks (attention, MLA, MLP, MoE) are in model_layers.cpp.
#include <algorithm>
#include <cmath>

#include "core/common/error.hpp"
#include "exec/runner_impl.hpp"

namespace parasol::exec {

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
  tp_comm = c.split(l.stage * cfg.attn_dp + l.attn_group, l.tp_index);
  stage_comm = c.split(l.stage, l.stage_rank);
  mixtral_names = m.architecture.find("Mixtral") != std::string::npos ||
                  (m.architecture.empty() && m.is_moe() && m.moe.scoring == "softmax");

  const int64_t H = m.hidden;
  ElemType wt = o.weight_type;
  if (l.first_stage()) embed = load("model.embed_tokens.weight", {m.vocab, H}, {Slice{0, l.vocab.begin, l.vocab.end}}, wt);
  if (l.last_stage()) {
    final_norm = load_full("model.norm.weight", {H}, wt);
    std::string head = m.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    lm_head = load(head, {m.vocab, H}, {Slice{0, l.vocab.begin, l.vocab.end}}, wt);
  }
  int64_t rot = m.mla ? m.mla->qk_rope_head_dim : m.head_dim;
  std::vector<float> inv = rope_inv_freq(m, rot);
  inv_freq = OwnedTensor(b, ElemType::kF32, {static_cast<int64_t>(inv.size())});
  upload_f32(b, inv, *inv_freq);

  for (int64_t i = l.layer_begin; i < l.layer_end; ++i) {
    layers.emplace_back();
    layers.back().index = i;
    load_layer(layers.back());
  }
  for (int32_t blk = static_cast<int32_t>(o.kv_blocks) - 1; blk >= 0; --blk) free_blocks.push_back(blk);
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
    if (s.dim == 0) dim0 += end - s.begin;
    else out_shape[1] = end - s.begin;
  }
  if (parts.size() == 1 && parts[0].dim == 1) dim0 = shape[0];
  out_shape[0] = dim0;
  OwnedTensor t(be, type, out_shape);
  upload_f32(be, host, *t);
  return t;
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
  w.gate_up = OwnedTensor(be, opt.weight_type, {2 * w.f, H});
  upload_f32(be, g, *w.gate_up);
  w.down = load(down, {H, ffn}, {Slice{1, r.begin, r.end}}, opt.weight_type);
  return w;
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
    const auto& a = *m.mla;
    int64_t qk = a.qk_nope_head_dim + a.qk_rope_head_dim, vq = a.qk_nope_head_dim + a.v_head_dim;
    Slice heads_rows{0, qh.begin * qk, qh.end * qk};
    if (a.q_lora_rank > 0) {
      lw.q_a = load_full(p + "self_attn.q_a_proj.weight", {a.q_lora_rank, H}, wt);
      lw.q_a_norm = load_full(p + "self_attn.q_a_layernorm.weight", {a.q_lora_rank}, wt);
      lw.q_b = load(p + "self_attn.q_b_proj.weight", {m.heads * qk, a.q_lora_rank}, {heads_rows}, wt);
    } else {
      lw.q_b = load(p + "self_attn.q_proj.weight", {m.heads * qk, H}, {heads_rows}, wt);
    }
    lw.kv_a = load_full(p + "self_attn.kv_a_proj_with_mqa.weight", {a.kv_lora_rank + a.qk_rope_head_dim, H}, wt);
    lw.kv_a_norm = load_full(p + "self_attn.kv_a_layernorm.weight", {a.kv_lora_rank}, wt);
    lw.kv_b = load(p + "self_attn.kv_b_proj.weight", {m.heads * vq, a.kv_lora_rank}, {Slice{0, qh.begin * vq, qh.end * vq}},
                   wt);
    lw.o = load(p + "self_attn.o_proj.weight", {H, m.heads * a.v_head_dim},
                {Slice{1, qh.begin * a.v_head_dim, qh.end * a.v_head_dim}}, wt);
    lw.latent = OwnedTensor(be, opt.kv_type, {slots, a.kv_lora_rank + a.qk_rope_head_dim});
  } else {
    const int64_t D = m.head_dim, kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
    const Range kh = layout.kv_heads;
    std::vector<float> q = weights.read_slice(p + "self_attn.q_proj.weight", {m.heads * D, H},
                                              Slice{0, qh.begin * D, qh.end * D});
    std::vector<float> k = weights.read_slice(p + "self_attn.k_proj.weight", {kv * D, H}, Slice{0, kh.begin * D, kh.end * D});
    std::vector<float> v = weights.read_slice(p + "self_attn.v_proj.weight", {kv * D, H}, Slice{0, kh.begin * D, kh.end * D});
    q.insert(q.end(), k.begin(), k.end());
    q.insert(q.end(), v.begin(), v.end());
    lw.qkv = OwnedTensor(be, wt, {(qh.size() + 2 * kh.size()) * D, H});
    upload_f32(be, q, *lw.qkv);
    lw.o = load(p + "self_attn.o_proj.weight", {H, m.heads * D}, {Slice{1, qh.begin * D, qh.end * D}}, wt);
    lw.k_cache = OwnedTensor(be, opt.kv_type, {slots, kh.size(), D});
    lw.v_cache = OwnedTensor(be, opt.kv_type, {slots, kh.size(), D});
  }
  lw.moe = m.is_moe_layer(l);
  if (!lw.moe) {
    lw.mlp = load_mlp(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight", m.ffn,
                      layout.ffn);
    return;
  }
  const int64_t E = m.moe.num_experts, F = m.moe.expert_ffn;
  std::string moe_p = p + (mixtral_names ? "block_sparse_moe." : "mlp.");
  lw.router = load_full(moe_p + "gate.weight", {E, H}, ElemType::kF32);  // router math in fp32 (HF)
  if (m.moe.scoring == "sigmoid") lw.router_bias = load_full(moe_p + "gate.e_score_correction_bias", {E}, ElemType::kF32);
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

plan::Op ModelRunner::Impl::gemm_op(const std::string& name, int layer, int64_t m, int64_t n, int64_t k) const {
  plan::Op op;
  op.kind = plan::OpKind::kGemm;
  op.name = name;
  op.layer = layer;
  op.dtype = opt.weight_type == ElemType::kF32 ? DType::kFp32 : DType::kBf16;
  op.m = m;
  op.n = n;
  op.k = k;
  op.tokens = m;
  op.flops = 2.0 * m * n * k;
  op.bytes = (m * k + m * n) * 4.0 + n * k * static_cast<double>(element_bytes(opt.weight_type));
  return op;
}

void ModelRunner::Impl::run_op(StepState& st, plan::Op op, const std::function<void()>& fn) {
  if (!opt.profile) {
    fn();
    st.ops->push_back({std::move(op), 0.0});
    return;
  }
  auto a = be.create_event(), b = be.create_event();
  be.record(*a);
  fn();
  be.record(*b);
  double t = be.elapsed_s(*a, *b);
  st.ops->push_back({std::move(op), t});
}

void ModelRunner::Impl::gemm(StepState& st, const std::string& name, int layer, const Tensor& x, const Tensor& w,
                             const Tensor& y, bool accumulate) {
  run_op(st, gemm_op(name, layer, x.numel() / std::max<int64_t>(1, x.dim(-1)), w.dim(0), w.dim(1)),
         [&] { be.gemm(x, w, y, accumulate); });
}

void ModelRunner::Impl::all_reduce(StepState& st, Communicator& c, const std::string& name, int layer,
                                   const Tensor& t) {
  if (c.size() == 1) return;
  plan::Op op;
  op.kind = plan::OpKind::kAllReduce;
  op.name = name;
  op.layer = layer;
  op.dtype = DType::kFp32;
  op.comm_bytes = static_cast<double>(t.bytes());
  run_op(st, op, [&] { c.all_reduce(t.data, t.data, t.numel(), t.dtype, name); });
}

void ModelRunner::Impl::all_gather_v(StepState& st, Communicator& c, const std::string& name, int layer,
                                     const Tensor& mine, const std::vector<int64_t>& counts, const Tensor& out) {
  plan::Op op;
  op.kind = plan::OpKind::kAllGather;
  op.name = name;
  op.layer = layer;
  op.dtype = DType::kFp32;
  op.comm_bytes = static_cast<double>(out.bytes());
  run_op(st, op, [&] { c.all_gather_v(mine.data, out.data, counts, mine.dtype, name); });
}

void ModelRunner::Impl::norm(StepState& st, const std::string& name, int layer, const Tensor& w) {
  plan::Op op;
  op.kind = plan::OpKind::kRmsNorm;
  op.name = name;
  op.layer = layer;
  op.tokens = st.T;
  op.n = model.hidden;
  op.bytes = 3.0 * st.T * model.hidden * 4;
  run_op(st, op, [&] {
    if (st.pending) be.add(*st.x, *st.partial, *st.x);
    st.pending = false;
    be.rms_norm(*st.x, w, static_cast<float>(model.rms_eps), *st.h);
  });
}

void ModelRunner::Impl::prepare(StepState& st, const StepRequest& req) {
  st.seqs.block_tokens = opt.block_tokens;
  st.group_tokens.assign(layout.config.attn_dp, 0);
  for (const SeqInput& s : req.seqs)
    if (s.attn_group >= 0 && s.attn_group < layout.config.attn_dp)
      st.group_tokens[s.attn_group] += static_cast<int64_t>(s.tokens.size());
  std::vector<int32_t> pos, slots;
  for (size_t i = 0; i < req.seqs.size(); ++i) {
    const SeqInput& s = req.seqs[i];
    if (s.attn_group < 0 || s.attn_group >= layout.config.attn_dp)
      throw ConfigError("sequence " + std::to_string(s.seq_id) + ": attention group " + std::to_string(s.attn_group) +
                        " outside [0, " + std::to_string(layout.config.attn_dp) + ")");
    if (s.attn_group != layout.attn_group) continue;
    int64_t q = static_cast<int64_t>(s.tokens.size()), ctx = s.context + q;
    auto& table = block_tables[s.seq_id];
    if (static_cast<int64_t>(table.size()) * opt.block_tokens < s.context)
      throw Error("sequence " + std::to_string(s.seq_id) + " claims " + std::to_string(s.context) +
                  " cached tokens but holds " + std::to_string(table.size() * opt.block_tokens));
    while (static_cast<int64_t>(table.size()) * opt.block_tokens < ctx) {
      if (free_blocks.empty()) throw RuntimeFailure("KV cache full (" + std::to_string(opt.kv_blocks) + " blocks)");
      table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    for (int64_t j = 0; j < q; ++j) {
      int64_t p = s.context + j;
      pos.push_back(static_cast<int32_t>(p));
      slots.push_back(static_cast<int32_t>(table[p / opt.block_tokens] * opt.block_tokens + p % opt.block_tokens));
    }
    st.seqs.q_lens.push_back(q);
    st.seqs.ctx_lens.push_back(ctx);
    st.seqs.block_tables.push_back(table);
    st.seq_index.push_back(static_cast<int>(i));
  }
  st.T = static_cast<int64_t>(pos.size());
  const int64_t H = model.hidden;
  st.positions = OwnedTensor(be, ElemType::kI32, {st.T});
  st.slots = OwnedTensor(be, ElemType::kI32, {st.T});
  upload_i32(be, pos, *st.positions);
  upload_i32(be, slots, *st.slots);
  st.x = OwnedTensor(be, ElemType::kF32, {st.T, H});
  st.h = OwnedTensor(be, ElemType::kF32, {st.T, H});
  st.partial = OwnedTensor(be, ElemType::kF32, {st.T, H});
}

void ModelRunner::Impl::embed_or_recv(StepState& st, const StepRequest& req) {
  const int rps = layout.config.ranks_per_stage();
  if (!layout.first_stage()) {
    plan::Op op;
    op.kind = plan::OpKind::kRecv;
    op.name = "pp.recv";
    op.peer = layout.rank - rps;
    op.comm_bytes = static_cast<double>(st.x->bytes());
    run_op(st, op, [&] { world.recv(st.x->data, st.x->numel(), ElemType::kF32, layout.rank - rps, "pp.recv"); });
    return;
  }
  std::vector<int32_t> ids;
  for (int i : st.seq_index) ids.insert(ids.end(), req.seqs[i].tokens.begin(), req.seqs[i].tokens.end());
  for (int32_t id : ids)
    if (id < 0 || id >= model.vocab) throw ConfigError("token id " + std::to_string(id) + " outside the vocabulary");
  OwnedTensor idt(be, ElemType::kI32, {st.T});
  upload_i32(be, ids, *idt);
  plan::Op op;
  op.kind = plan::OpKind::kEmbedding;
  op.name = "embed";
  op.tokens = st.T;
  op.n = model.hidden;
  op.bytes = st.T * model.hidden * 8.0;
  run_op(st, op, [&] { be.embedding(*idt, *embed, layout.vocab.begin, *st.x); });
  all_reduce(st, *tp_comm, "embed.allreduce", -1, *st.x);
}

void ModelRunner::Impl::finish(StepState& st, const StepRequest& req, StepResult& res) {
  const int64_t H = model.hidden, V = model.vocab;
  const int rps = layout.config.ranks_per_stage();
  std::vector<int32_t> sampled;  // (request index, token) pairs this rank reports
  if (!layout.last_stage()) {
    if (st.pending) be.add(*st.x, *st.partial, *st.x);
    st.pending = false;
    plan::Op op;
    op.kind = plan::OpKind::kSend;
    op.name = "pp.send";
    op.peer = layout.rank + rps;
    op.comm_bytes = static_cast<double>(st.x->bytes());
    run_op(st, op, [&] { world.send(st.x->data, st.x->numel(), ElemType::kF32, layout.rank + rps, "pp.send"); });
  } else {
    norm(st, "final_norm", -1, *final_norm);
    std::vector<int32_t> rows;
    int64_t t0 = 0;
    for (size_t s = 0; s < st.seq_index.size(); ++s) {
      const SeqInput& in = req.seqs[st.seq_index[s]];
      int64_t q = st.seqs.q_lens[s];
      for (int64_t j = 0; j < q; ++j)
        if (opt.all_logits || (in.sample && j == q - 1)) {
          rows.push_back(static_cast<int32_t>(t0 + j));
          res.logit_rows.push_back({st.seq_index[s], j});
        }
      t0 += q;
    }
    const int64_t R = static_cast<int64_t>(rows.size()), Vl = layout.vocab.size();
    OwnedTensor idx(be, ElemType::kI32, {R}), hs(be, ElemType::kF32, {R, H}), part(be, ElemType::kF32, {R, Vl});
    upload_i32(be, rows, *idx);
    be.gather_rows(*st.h, *idx, *hs);
    gemm(st, "lm_head", -1, *hs, *lm_head, *part);
    OwnedTensor full(be, ElemType::kF32, {R, V});
    const int tp = layout.config.tp;
    if (tp == 1) {
      be.copy(full->data, part->data, part->bytes());
    } else {
      std::vector<int64_t> counts(tp);
      for (int r = 0; r < tp; ++r) counts[r] = R * balanced_range(V, tp, r).size();
      OwnedTensor gathered(be, ElemType::kF32, {R * V});
      all_gather_v(st, *tp_comm, "lm_head.allgather", -1, *part, counts, *gathered);
      // [rank][row][vocab slice] -> [row][vocab]
      std::vector<float> g = download_f32(be, *gathered), f(static_cast<size_t>(R * V));
      int64_t off = 0;
      for (int r = 0; r < tp; ++r) {
        Range vr = balanced_range(V, tp, r);
        for (int64_t i = 0; i < R; ++i)
          std::copy(g.begin() + off + i * vr.size(), g.begin() + off + (i + 1) * vr.size(), f.begin() + i * V + vr.begin);
        off += R * vr.size();
      }
      upload_f32(be, f, *full);
    }
    OwnedTensor tok(be, ElemType::kI32, {R});
    plan::Op op;
    op.kind = plan::OpKind::kSample;
    op.name = "sample";
    op.tokens = R;
    op.n = V;
    run_op(st, op, [&] { be.argmax(*full, *tok); });
    res.logits = download_f32(be, *full);
    std::vector<int32_t> toks = download_i32(be, *tok);
    if (layout.tp_index == 0)
      for (int64_t i = 0; i < R; ++i) {
        auto [si, j] = res.logit_rows[i];
        if (req.seqs[si].sample && j == static_cast<int64_t>(req.seqs[si].tokens.size()) - 1) {
          sampled.push_back(si);
          sampled.push_back(toks[i]);
        }
      }
  }
  // Every rank learns every sampled token (the first stage needs them for the next step).
  int32_t n = static_cast<int32_t>(sampled.size());
  std::vector<int32_t> counts32(world.size());
  world.all_gather(&n, counts32.data(), 1, ElemType::kI32, "sample.tokens");
  std::vector<int64_t> counts(counts32.begin(), counts32.end());
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::vector<int32_t> all(static_cast<size_t>(total));
  world.all_gather_v(sampled.data(), all.data(), counts, ElemType::kI32, "sample.tokens");
  res.next_tokens.assign(req.seqs.size(), -1);
  for (int64_t i = 0; i + 1 < total; i += 2) res.next_tokens[all[i]] = all[i + 1];
}

ModelRunner::ModelRunner(const spec::Model& model, const RankLayout& layout, Backend& backend, Communicator& instance,
                         const WeightSource& weights, const RunnerOptions& options)
    : layout_(layout), impl_(std::make_unique<Impl>(model, layout, backend, instance, weights, options)) {}

ModelRunner::~ModelRunner() = default;

StepResult ModelRunner::step(const StepRequest& request) {
  Impl& im = *impl_;
  StepResult res;
  StepState st;
  st.ops = &res.ops;
  im.prepare(st, request);
  im.embed_or_recv(st, request);
  for (auto& lw : im.layers) {
    int l = static_cast<int>(lw.index);
    std::string p = "L" + std::to_string(l) + ".";
    im.norm(st, p + "attn_norm", l, *lw.attn_norm);
    if (im.model.mla)
      im.mla(st, lw);
    else
      im.attention(st, lw);
    im.norm(st, p + "mlp_norm", l, *lw.mlp_norm);
    if (lw.moe)
      im.moe(st, lw);
    else
      im.dense_block(st, lw);
  }
  im.finish(st, request, res);
  return res;
}

void ModelRunner::release(int64_t seq_id) {
  auto it = impl_->block_tables.find(seq_id);
  if (it == impl_->block_tables.end()) return;
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) impl_->free_blocks.push_back(*b);
  std::sort(impl_->free_blocks.begin(), impl_->free_blocks.end(), std::greater<int32_t>());
  impl_->block_tables.erase(it);
}

int64_t ModelRunner::free_kv_blocks() const { return static_cast<int64_t>(impl_->free_blocks.size()); }

}  // namespace parasol::exec

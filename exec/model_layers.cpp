// ModelRunner's attention and dense blocks: GQA attention, MLA (expanded form for prefill sequences, weight-absorbed
// form for decode sequences, as build_step plans them) and the dense MLP, each issued as the ops of this rank's
// program. Shapes are this rank's shards (RankLayout).
#include <algorithm>
#include <cmath>

#include "core/common/error.hpp"
#include "exec/runner_impl.hpp"

namespace parasol::exec {
namespace {

float* f32_at(const Tensor& t, int64_t offset) {
  return t.as<float>() + offset;
}

// The token rows of a subset of a step's sequences (prefill or decode ones), in sequence order.
struct RowSubset {
  SeqBatch seqs;              // the subset's sequences (q_lens, ctx_lens, block tables)
  std::vector<int32_t> rows;  // token rows in the step
  bool contiguous() const {
    return rows.empty() || rows.back() - rows.front() + 1 == static_cast<int64_t>(rows.size());
  }
};

RowSubset subset(const StepState& st, bool decode) {
  RowSubset s;
  s.seqs.block_tokens = st.seqs.block_tokens;
  int64_t t0 = 0;
  for (size_t i = 0; i < st.seqs.q_lens.size(); ++i) {
    const int64_t q = st.seqs.q_lens[i];
    if (st.decode[i] == decode) {
      s.seqs.q_lens.push_back(q);
      s.seqs.ctx_lens.push_back(st.seqs.ctx_lens[i]);
      s.seqs.block_tables.push_back(st.seqs.block_tables[i]);
      for (int64_t j = 0; j < q; ++j) s.rows.push_back(static_cast<int32_t>(t0 + j));
    }
    t0 += q;
  }
  return s;
}

// Rows `sub.rows` of a [T, W] tensor: a view when they are contiguous, else a gathered copy.
Tensor rows_of(Backend& be, const Tensor& t, const RowSubset& sub, OwnedTensor& copy) {
  const int64_t n = static_cast<int64_t>(sub.rows.size());
  if (sub.contiguous()) return n == 0 ? t.rows(0, 0) : t.rows(sub.rows.front(), sub.rows.front() + n);
  OwnedTensor idx(be, ElemType::kI32, {n});
  upload_i32(be, sub.rows, *idx);
  copy = OwnedTensor(be, t.dtype, {n, t.dim(-1)});
  be.gather_rows(t, *idx, *copy);
  return *copy;
}

// Writes `part` [n, W] back to rows `sub.rows` of `t` (zero there) unless `part` already is a view of them.
void put_rows(Backend& be, const Tensor& part, const RowSubset& sub, const Tensor& t) {
  if (sub.contiguous()) return;
  OwnedTensor idx(be, ElemType::kI32, {static_cast<int64_t>(sub.rows.size())});
  upload_i32(be, sub.rows, *idx);
  be.scatter_add_rows(part, *idx, Tensor(), t);
}

}  // namespace

void ModelRunner::Impl::attention(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const int64_t T = st.T, Hl = layout.q_heads.size(), Kl = layout.kv_heads.size(), D = model.head_dim;
  const int64_t W = (Hl + 2 * Kl) * D;
  OwnedTensor qkv(be, ElemType::kF32, {T, W});
  gemm(st, l, "attn.qkv", *st.h, *lw.qkv, *qkv);
  Tensor q(qkv->data, ElemType::kF32, {T, Hl, D}, {W, D, 1});
  Tensor k(f32_at(*qkv, Hl * D), ElemType::kF32, {T, Kl, D}, {W, D, 1});
  Tensor k2(f32_at(*qkv, Hl * D), ElemType::kF32, {T, Kl * D}, {W, 1});
  Tensor v2(f32_at(*qkv, (Hl + Kl) * D), ElemType::kF32, {T, Kl * D}, {W, 1});
  RopeParams rp{0, D, false, 1.0f};
  run_op(st, plan::OpKind::kRope, l, "attn.rope", {-1, -1, -1, T, false}, [&] {
    if (T == 0) return;
    be.rope(q, *st.positions, *inv_freq, rp);
    be.rope(k, *st.positions, *inv_freq, rp);
  });
  run_op(st, plan::OpKind::kKvAppend, l, "attn.kv_append", {-1, -1, -1, T, false}, [&] {
    if (T == 0) return;
    be.kv_append(k2, *st.slots, *lw.k_cache);
    be.kv_append(v2, *st.slots, *lw.v_cache);
  });
  OwnedTensor out(be, ElemType::kF32, {T, Hl, D});
  const int64_t kv = model.kv_heads > 0 ? model.kv_heads : model.heads;
  HeadMap hm{model.heads / kv, layout.q_heads.begin, layout.kv_heads.begin};
  run_op(st, plan::OpKind::kAttention, l, "attn.core", {-1, -1, -1, T, false}, [&] {
    if (T > 0) be.attention(q, *lw.k_cache, *lw.v_cache, st.seqs, hm, 1.0f / std::sqrt(static_cast<float>(D)), *out);
  });
  gemm(st, l, "attn.o", out->reshaped({T, Hl * D}), *lw.o, st.partial);
}

void ModelRunner::Impl::mla(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const auto& a = *model.mla;
  const int64_t T = st.T, Hl = layout.q_heads.size(), nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim;
  const int64_t qk = nope + rope, L = a.kv_lora_rank, vd = a.v_head_dim, ql = a.q_lora_rank;
  const int64_t W = lw.qkv_a->dim(0);  // [q_lora |] L + rope
  const float eps = static_cast<float>(model.rms_eps);
  OwnedTensor qkva(be, ElemType::kF32, {T, W}), q(be, ElemType::kF32, {T, Hl * qk});
  Tensor ckv = qkva->cols(ql, ql + L);
  auto kv_norm = [&] {
    run_op(st, plan::OpKind::kRmsNorm, l, "attn.kv_norm", {-1, L, -1, T, false}, [&] {
      if (T > 0) be.rms_norm(ckv, *lw.kv_a_norm, eps, ckv);
    });
  };
  if (ql > 0) {
    Tensor qa = qkva->cols(0, ql);
    gemm(st, l, "attn.qkv_a", *st.h, *lw.qkv_a, *qkva);
    run_op(st, plan::OpKind::kRmsNorm, l, "attn.q_norm", {-1, ql, -1, T, false}, [&] {
      if (T > 0) be.rms_norm(qa, *lw.q_a_norm, eps, qa);
    });
    kv_norm();
    gemm(st, l, "attn.q_b", qa, *lw.q_b, *q);
  } else {
    gemm(st, l, "attn.q", *st.h, *lw.q_b, *q);
    gemm(st, l, "attn.kv_a", *st.h, *lw.qkv_a, *qkva);
    kv_norm();
  }
  Tensor qv(q->data, ElemType::kF32, {T, Hl, qk});
  Tensor kr(f32_at(*qkva, ql), ElemType::kF32, {T, 1, L + rope}, {W, L + rope, 1});
  RopeParams qp{nope, rope, true, 1.0f}, kp{L, rope, true, 1.0f};
  run_op(st, plan::OpKind::kRope, l, "attn.rope", {-1, -1, -1, T, false}, [&] {
    if (T == 0) return;
    be.rope(qv, *st.positions, *inv_freq, qp);
    be.rope(kr, *st.positions, *inv_freq, kp);
  });
  run_op(st, plan::OpKind::kKvAppend, l, "attn.kv_append", {-1, -1, -1, T, false}, [&] {
    if (T > 0) be.kv_append(qkva->cols(ql, W), *st.slots, *lw.latent);
  });
  OwnedTensor out(be, ElemType::kF32, {T, Hl * vd});
  be.fill_zero(*out);
  if (std::find(st.decode.begin(), st.decode.end(), false) != st.decode.end()) mla_prefill(st, lw, *q, *out);
  if (std::find(st.decode.begin(), st.decode.end(), true) != st.decode.end()) mla_decode(st, lw, *q, *out);
  gemm(st, l, "attn.o", *out, *lw.o, st.partial);
}

// Expanded form: K_nope and V of every prefill sequence's whole context from kv_b x c_kv, then MHA with head_dim
// nope + rope (k_rope shared by the heads) and v_head_dim.
void ModelRunner::Impl::mla_prefill(StepState& st, LayerWeights& lw, const Tensor& q, const Tensor& out) {
  const int l = static_cast<int>(lw.index);
  const auto& a = *model.mla;
  const int64_t Hl = layout.q_heads.size(), nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim;
  const int64_t qk = nope + rope, L = a.kv_lora_rank, vd = a.v_head_dim, vq = nope + vd;
  RowSubset sub = subset(st, false);
  const int64_t Tp = static_cast<int64_t>(sub.rows.size());
  // context rows of every prefill sequence, back to back; a block table of 1-token blocks over them
  std::vector<int32_t> ctx_slots;
  SeqBatch sb = sub.seqs;
  sb.block_tokens = 1;
  for (size_t s = 0; s < sb.q_lens.size(); ++s) {
    std::vector<int32_t> table;
    for (int64_t p = 0; p < sb.ctx_lens[s]; ++p) {
      const auto& bt = sub.seqs.block_tables[s];
      table.push_back(static_cast<int32_t>(ctx_slots.size()));
      ctx_slots.push_back(static_cast<int32_t>(bt[p / opt.block_tokens] * opt.block_tokens + p % opt.block_tokens));
    }
    sb.block_tables[s] = std::move(table);
  }
  const int64_t C = static_cast<int64_t>(ctx_slots.size());
  OwnedTensor idx(be, ElemType::kI32, {C}), lat(be, ElemType::kF32, {C, L + rope}),
      kvb(be, ElemType::kF32, {C, Hl * vq}), K(be, ElemType::kF32, {C, Hl * qk}), V(be, ElemType::kF32, {C, Hl * vd});
  upload_i32(be, ctx_slots, *idx);
  run_op(st, plan::OpKind::kGemm, l, "attn.kv_b", {C, Hl * vq, L, -1, false}, [&] {
    if (C == 0) return;
    be.gather_rows(*lw.latent, *idx, *lat);
    be.gemm(lat->cols(0, L), *lw.kv_b, *kvb);
    for (int64_t h = 0; h < Hl; ++h) {
      be.convert(kvb->cols(h * vq, h * vq + nope), K->cols(h * qk, h * qk + nope));
      be.convert(lat->cols(L, L + rope), K->cols(h * qk + nope, (h + 1) * qk));
      be.convert(kvb->cols(h * vq + nope, (h + 1) * vq), V->cols(h * vd, (h + 1) * vd));
    }
  });
  OwnedTensor qcopy, ocopy;
  Tensor qp = rows_of(be, q, sub, qcopy);
  Tensor op = sub.contiguous()
                  ? out.rows(sub.rows.empty() ? 0 : sub.rows.front(), (sub.rows.empty() ? 0 : sub.rows.front()) + Tp)
                  : *(ocopy = OwnedTensor(be, ElemType::kF32, {Tp, Hl * vd}));
  run_op(st, plan::OpKind::kMlaAttention, l, "attn.prefill", {-1, -1, -1, Tp, false}, [&] {
    if (Tp == 0) return;
    Tensor q3(qp.data, ElemType::kF32, {Tp, Hl, qk}, {qp.stride(0), qk, 1});
    be.attention(q3, K->reshaped({C, Hl, qk}), V->reshaped({C, Hl, vd}), sb, HeadMap{1, 0, 0},
                 1.0f / std::sqrt(static_cast<float>(qk)), op.reshaped({Tp, Hl, vd}));
    put_rows(be, op, sub, out);
  });
}

// Weight-absorbed form: q_nope x W_UK per head into the latent space, MQA over the [c_kv | k_rope] cache (one KV
// head; the value is the latent, its k_rope columns unused), then x W_UV per head.
void ModelRunner::Impl::mla_decode(StepState& st, LayerWeights& lw, const Tensor& q, const Tensor& out) {
  const int l = static_cast<int>(lw.index);
  const auto& a = *model.mla;
  const int64_t Hl = layout.q_heads.size(), nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim;
  const int64_t qk = nope + rope, L = a.kv_lora_rank, vd = a.v_head_dim, vq = nope + vd, Wl = L + rope;
  RowSubset sub = subset(st, true);
  const int64_t Td = static_cast<int64_t>(sub.rows.size());
  OwnedTensor qcopy, ocopy;
  Tensor qd = rows_of(be, q, sub, qcopy);
  OwnedTensor qcat(be, ElemType::kF32, {Td, Hl * Wl}), olat(be, ElemType::kF32, {Td, Hl * Wl});
  run_op(st, plan::OpKind::kGemm, l, "attn.q_absorb", {Td, L, nope, -1, false}, [&] {
    for (int64_t h = 0; h < Hl && Td > 0; ++h) {
      be.gemm(qd.cols(h * qk, h * qk + nope), lw.w_uk_t->rows(h * L, (h + 1) * L), qcat->cols(h * Wl, h * Wl + L));
      be.convert(qd.cols(h * qk + nope, (h + 1) * qk), qcat->cols(h * Wl + L, (h + 1) * Wl));
    }
  });
  run_op(st, plan::OpKind::kMlaAttention, l, "attn.decode", {-1, -1, -1, Td, false}, [&] {
    if (Td == 0) return;
    const Tensor cache = lw.latent->reshaped({lw.latent->dim(0), 1, Wl});
    be.attention(qcat->reshaped({Td, Hl, Wl}), cache, cache, sub.seqs, HeadMap{std::max<int64_t>(1, Hl), 0, 0},
                 1.0f / std::sqrt(static_cast<float>(qk)), olat->reshaped({Td, Hl, Wl}));
  });
  Tensor od = sub.contiguous()
                  ? out.rows(sub.rows.empty() ? 0 : sub.rows.front(), (sub.rows.empty() ? 0 : sub.rows.front()) + Td)
                  : *(ocopy = OwnedTensor(be, ElemType::kF32, {Td, Hl * vd}));
  run_op(st, plan::OpKind::kGemm, l, "attn.v_absorb", {Td, vd, L, -1, false}, [&] {
    if (Td == 0) return;
    for (int64_t h = 0; h < Hl; ++h)
      be.gemm(olat->cols(h * Wl, h * Wl + L), lw.kv_b->rows(h * vq + nope, (h + 1) * vq),
              od.cols(h * vd, (h + 1) * vd));
    put_rows(be, od, sub, out);
  });
}

void ModelRunner::Impl::dense_mlp(StepState& st, int layer, const MlpWeights& w, const std::string& what,
                                  const Tensor& in, const Tensor& out, bool accumulate) {
  const int64_t n = in.dim(0), f = w.f, H = model.hidden;
  const bool work = n > 0 && f > 0;
  OwnedTensor gu(be, ElemType::kF32, {n, 2 * f}), act(be, ElemType::kF32, {n, f});
  run_op(st, plan::OpKind::kGemm, layer, what + ".gate_up", {n, 2 * f, H, -1, false}, [&] {
    if (work) be.gemm(in, *w.gate_up, *gu);
  });
  run_op(st, plan::OpKind::kActivation, layer, what + ".act", {-1, f, -1, n, false}, [&] {
    if (work) be.silu_and_mul(*gu, *act);
  });
  run_op(st, plan::OpKind::kGemm, layer, what + ".down", {n, H, f, -1, false}, [&] {
    if (work)
      be.gemm(*act, *w.down, out, accumulate);
    else if (!accumulate && n > 0)
      be.fill_zero(out);
  });
}

void ModelRunner::Impl::dense_block(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  dense_mlp(st, l, lw.mlp, "mlp", *st.h, st.partial, false);
  if (layout.config.tp > 1) all_reduce(st, l, "mlp.allreduce", st.partial);
}

}  // namespace parasol::exec

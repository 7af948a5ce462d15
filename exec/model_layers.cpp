// ModelRunner's layer blocks: GQA attention, MLA, dense MLP and the two MoE forms (all-to-all and gather), each
// issued as recorded ops on the backend and the communicators. Shapes are this rank's shards (RankLayout).
#include <algorithm>
#include <cmath>

#include "core/common/error.hpp"
#include "exec/runner_impl.hpp"

namespace parasol::exec {
namespace {

plan::Op simple_op(plan::OpKind kind, const std::string& name, int layer, int64_t tokens) {
  plan::Op op;
  op.kind = kind;
  op.name = name;
  op.layer = layer;
  op.tokens = tokens;
  return op;
}

float* f32_at(const Tensor& t, int64_t offset) { return t.as<float>() + offset; }

}  // namespace

void ModelRunner::Impl::attention(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = "L" + std::to_string(l) + ".attn.";
  const int64_t T = st.T, Hl = layout.q_heads.size(), Kl = layout.kv_heads.size(), D = model.head_dim;
  const int64_t W = (Hl + 2 * Kl) * D;
  OwnedTensor qkv(be, ElemType::kF32, {T, W});
  gemm(st, p + "qkv", l, *st.h, *lw.qkv, *qkv);
  Tensor q(qkv->data, ElemType::kF32, {T, Hl, D}, {W, D, 1});
  Tensor k(f32_at(*qkv, Hl * D), ElemType::kF32, {T, Kl, D}, {W, D, 1});
  Tensor k2(f32_at(*qkv, Hl * D), ElemType::kF32, {T, Kl * D}, {W, 1});
  Tensor v2(f32_at(*qkv, (Hl + Kl) * D), ElemType::kF32, {T, Kl * D}, {W, 1});
  RopeParams rp{0, D, false, 1.0f};
  plan::Op rop = simple_op(plan::OpKind::kRope, p + "rope", l, T);
  rop.heads = Hl;
  rop.kv_heads = Kl;
  rop.head_dim = D;
  run_op(st, rop, [&] {
    be.rope(q, *st.positions, *inv_freq, rp);
    be.rope(k, *st.positions, *inv_freq, rp);
  });
  run_op(st, simple_op(plan::OpKind::kKvAppend, p + "kv_append", l, T), [&] {
    be.kv_append(k2, *st.slots, *lw.k_cache);
    be.kv_append(v2, *st.slots, *lw.v_cache);
  });
  OwnedTensor out(be, ElemType::kF32, {T, Hl, D});
  const int64_t kv = model.kv_heads > 0 ? model.kv_heads : model.heads;
  HeadMap hm{model.heads / kv, layout.q_heads.begin, layout.kv_heads.begin};
  plan::Op aop = simple_op(plan::OpKind::kAttention, p + "core", l, T);
  aop.heads = Hl;
  aop.kv_heads = Kl;
  aop.head_dim = D;
  aop.v_head_dim = D;
  aop.q_lens = st.seqs.q_lens;
  aop.ctx_lens = st.seqs.ctx_lens;
  run_op(st, aop, [&] {
    be.attention(q, *lw.k_cache, *lw.v_cache, st.seqs, hm, 1.0f / std::sqrt(static_cast<float>(D)), *out);
  });
  gemm(st, p + "o", l, out->reshaped({T, Hl * D}), *lw.o, *st.partial);
  all_reduce(st, *tp_comm, p + "allreduce", l, *st.partial);
  st.pending = true;
}

void ModelRunner::Impl::mla(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = "L" + std::to_string(l) + ".attn.";
  const auto& a = *model.mla;
  const int64_t T = st.T, Hl = layout.q_heads.size(), nope = a.qk_nope_head_dim, rope = a.qk_rope_head_dim;
  const int64_t qk = nope + rope, L = a.kv_lora_rank, vd = a.v_head_dim;
  const float eps = static_cast<float>(model.rms_eps);
  OwnedTensor q(be, ElemType::kF32, {T, Hl * qk});
  if (a.q_lora_rank > 0) {
    OwnedTensor qa(be, ElemType::kF32, {T, a.q_lora_rank});
    gemm(st, p + "q_a", l, *st.h, *lw.q_a, *qa);
    run_op(st, simple_op(plan::OpKind::kRmsNorm, p + "q_a_norm", l, T), [&] { be.rms_norm(*qa, *lw.q_a_norm, eps, *qa); });
    gemm(st, p + "q_b", l, *qa, *lw.q_b, *q);
  } else {
    gemm(st, p + "q", l, *st.h, *lw.q_b, *q);
  }
  OwnedTensor kv(be, ElemType::kF32, {T, L + rope});
  gemm(st, p + "kv_a", l, *st.h, *lw.kv_a, *kv);
  Tensor c_kv = kv->cols(0, L);
  run_op(st, simple_op(plan::OpKind::kRmsNorm, p + "kv_a_norm", l, T), [&] { be.rms_norm(c_kv, *lw.kv_a_norm, eps, c_kv); });
  Tensor qv(q->data, ElemType::kF32, {T, Hl, qk});
  Tensor kr(kv->data, ElemType::kF32, {T, 1, L + rope}, {L + rope, L + rope, 1});
  RopeParams qp{nope, rope, true, 1.0f}, kp{L, rope, true, 1.0f};
  run_op(st, simple_op(plan::OpKind::kRope, p + "rope", l, T), [&] {
    be.rope(qv, *st.positions, *inv_freq, qp);
    be.rope(kr, *st.positions, *inv_freq, kp);
  });
  run_op(st, simple_op(plan::OpKind::kKvAppend, p + "kv_append", l, T), [&] { be.kv_append(*kv, *st.slots, *lw.latent); });
  OwnedTensor out(be, ElemType::kF32, {T, Hl, vd});
  plan::Op aop = simple_op(plan::OpKind::kMlaAttention, p + "core", l, T);
  aop.heads = Hl;
  aop.kv_heads = 1;
  aop.head_dim = L + rope;
  aop.v_head_dim = vd;
  aop.q_lens = st.seqs.q_lens;
  aop.ctx_lens = st.seqs.ctx_lens;
  run_op(st, aop, [&] {
    be.mla_attention(qv, *lw.latent, *lw.kv_b, st.seqs, nope, vd, 1.0f / std::sqrt(static_cast<float>(qk)), *out);
  });
  gemm(st, p + "o", l, out->reshaped({T, Hl * vd}), *lw.o, *st.partial);
  all_reduce(st, *tp_comm, p + "allreduce", l, *st.partial);
  st.pending = true;
}

void ModelRunner::Impl::dense_mlp(StepState& st, int layer, const MlpWeights& w, const std::string& name,
                                  const Tensor& in, const Tensor& out, bool accumulate) {
  const int64_t n = in.dim(0);
  if (w.f == 0 || n == 0) {
    if (!accumulate) be.fill_zero(out);
    return;
  }
  OwnedTensor gu(be, ElemType::kF32, {n, 2 * w.f}), act(be, ElemType::kF32, {n, w.f});
  gemm(st, name + ".gate_up", layer, in, *w.gate_up, *gu);
  run_op(st, simple_op(plan::OpKind::kActivation, name + ".act", layer, n), [&] { be.silu_and_mul(*gu, *act); });
  gemm(st, name + ".down", layer, *act, *w.down, out, accumulate);
}

void ModelRunner::Impl::dense_block(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = "L" + std::to_string(l) + ".mlp";
  dense_mlp(st, l, lw.mlp, p, *st.h, *st.partial, false);
  all_reduce(st, *tp_comm, p + ".allreduce", l, *st.partial);
  st.pending = true;
}

void ModelRunner::Impl::route(StepState& st, LayerWeights& lw, const Tensor& in, std::vector<int32_t>& ids,
                              std::vector<float>& w) {
  const int l = static_cast<int>(lw.index);
  const std::string p = "L" + std::to_string(l) + ".moe.";
  const int64_t n = in.dim(0), E = model.moe.num_experts, K = model.moe.top_k;
  OwnedTensor logits(be, ElemType::kF32, {n, E}), idt(be, ElemType::kI32, {n, K}), wt(be, ElemType::kF32, {n, K});
  gemm(st, p + "router", l, in, *lw.router, *logits);
  MoeRouting r;
  r.top_k = K;
  r.sigmoid = model.moe.scoring == "sigmoid";
  r.norm_topk_prob = model.moe.norm_topk_prob;
  r.n_group = model.moe.n_group;
  r.topk_group = model.moe.topk_group;
  r.routed_scaling_factor = static_cast<float>(model.moe.routed_scaling_factor);
  run_op(st, simple_op(plan::OpKind::kMoeGate, p + "gate", l, n),
         [&] { be.moe_gate(*logits, lw.router_bias.view, r, *idt, *wt); });
  ids = download_i32(be, *idt);
  w = download_f32(be, *wt);
}

void ModelRunner::Impl::moe(StepState& st, LayerWeights& lw) {
  if (layout.moe_all_to_all)
    moe_all_to_all(st, lw);
  else
    moe_gather(st, lw);
  st.pending = true;
}

// DeepEP style: each tp rank routes its 1/tp slice of the group's tokens, sends every (token, k) to the rank owning
// the expert, gets the expert outputs back and sums them weighted; then the group's tokens are re-assembled over tp.
void ModelRunner::Impl::moe_all_to_all(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = "L" + std::to_string(l) + ".moe.";
  const int64_t H = model.hidden, K = model.moe.top_k, E = model.moe.num_experts;
  const int tp = layout.config.tp, R = stage_comm->size();
  const Range my = balanced_range(st.T, tp, layout.tp_index);
  const int64_t Tc = my.size();
  Tensor in = st.h->rows(my.begin, my.end);
  std::vector<int32_t> ids;
  std::vector<float> w;
  route(st, lw, in, ids, w);

  const int64_t per = E / R;
  std::vector<int64_t> send_counts(R, 0);
  std::vector<std::vector<int32_t>> by_dest(R);
  for (int64_t i = 0; i < Tc * K; ++i) by_dest[ids[i] / per].push_back(static_cast<int32_t>(i));
  std::vector<int32_t> src_rows, experts;
  std::vector<float> weights;
  for (int d = 0; d < R; ++d) {
    send_counts[d] = static_cast<int64_t>(by_dest[d].size());
    for (int32_t e : by_dest[d]) {
      src_rows.push_back(e / static_cast<int32_t>(K));
      experts.push_back(ids[e]);
      weights.push_back(w[e]);
    }
  }
  std::vector<int32_t> sc32(send_counts.begin(), send_counts.end()), rc32(R);
  stage_comm->all_to_all(sc32.data(), rc32.data(), 1, ElemType::kI32, p + "dispatch.counts");
  std::vector<int64_t> recv_counts(rc32.begin(), rc32.end());
  int64_t n_send = static_cast<int64_t>(src_rows.size()), n_recv = 0;
  for (int64_t c : recv_counts) n_recv += c;
  std::vector<int32_t> recv_experts(static_cast<size_t>(n_recv));
  stage_comm->all_to_all_v(experts.data(), send_counts, recv_experts.data(), recv_counts, ElemType::kI32,
                           p + "dispatch.experts");

  OwnedTensor src_idx(be, ElemType::kI32, {n_send}), send(be, ElemType::kF32, {n_send, H}),
      recv(be, ElemType::kF32, {n_recv, H});
  upload_i32(be, src_rows, *src_idx);
  auto scaled = [H](std::vector<int64_t> c) {
    for (auto& x : c) x *= H;
    return c;
  };
  plan::Op dop = simple_op(plan::OpKind::kAllToAll, p + "dispatch", l, n_send);
  dop.comm_bytes = n_send * H * 4.0;
  for (int64_t c : send_counts) dop.a2a_send_bytes.push_back(c * H * 4.0);
  run_op(st, dop, [&] {
    be.gather_rows(in, *src_idx, *send);
    stage_comm->all_to_all_v(send->data, scaled(send_counts), recv->data, scaled(recv_counts), ElemType::kF32,
                             p + "dispatch");
  });

  OwnedTensor result(be, ElemType::kF32, {n_recv, H});
  be.fill_zero(*result);
  for (int64_t e = layout.experts.begin; e < layout.experts.end; ++e) {
    std::vector<int32_t> pos;
    for (int64_t i = 0; i < n_recv; ++i)
      if (recv_experts[i] == e) pos.push_back(static_cast<int32_t>(i));
    if (pos.empty()) continue;
    const int64_t ne = static_cast<int64_t>(pos.size());
    OwnedTensor pidx(be, ElemType::kI32, {ne}), xe(be, ElemType::kF32, {ne, H}), ye(be, ElemType::kF32, {ne, H});
    upload_i32(be, pos, *pidx);
    be.gather_rows(*recv, *pidx, *xe);
    dense_mlp(st, l, lw.experts[e - layout.experts.begin], p + "expert" + std::to_string(e), *xe, *ye, false);
    be.scatter_add_rows(*ye, *pidx, Tensor(), *result);
  }

  OwnedTensor back(be, ElemType::kF32, {n_send, H}), wts(be, ElemType::kF32, {n_send});
  upload_f32(be, weights, *wts);
  OwnedTensor chunk(be, ElemType::kF32, {Tc, H});
  plan::Op cop = simple_op(plan::OpKind::kAllToAll, p + "combine", l, n_send);
  cop.comm_bytes = n_recv * H * 4.0;
  for (int64_t c : recv_counts) cop.a2a_send_bytes.push_back(c * H * 4.0);
  run_op(st, cop, [&] {
    stage_comm->all_to_all_v(result->data, scaled(recv_counts), back->data, scaled(send_counts), ElemType::kF32,
                             p + "combine");
  });
  run_op(st, simple_op(plan::OpKind::kMoeCombine, p + "unpermute", l, Tc), [&] {
    be.fill_zero(*chunk);
    be.scatter_add_rows(*back, *src_idx, *wts, *chunk);
  });
  if (lw.shared.f > 0) dense_mlp(st, l, lw.shared, p + "shared", in, *chunk, true);
  if (tp == 1) {
    be.copy(st.partial->data, chunk->data, chunk->bytes());
  } else {
    std::vector<int64_t> counts(tp);
    for (int r = 0; r < tp; ++r) counts[r] = balanced_range(st.T, tp, r).size() * H;
    all_gather_v(st, *tp_comm, p + "allgather", l, *chunk, counts, *st.partial);
  }
}

// Gather form: every rank of the stage sees all of the stage's tokens, computes its experts' (moe_tp-sliced) share and
// its slice of the shared experts, and the partial sums are reduced back to each attention group.
void ModelRunner::Impl::moe_gather(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = "L" + std::to_string(l) + ".moe.";
  const int64_t H = model.hidden, K = model.moe.top_k;
  const int tp = layout.config.tp, adp = layout.config.attn_dp, R = stage_comm->size();
  // slice sizes of every stage rank (a, t), and where each sits in the stage's token order
  std::vector<int64_t> slice(R), offset(R + 1, 0);
  for (int r = 0; r < R; ++r) {
    slice[r] = balanced_range(st.group_tokens[r / tp], tp, r % tp).size();
    offset[r + 1] = offset[r] + slice[r];
  }
  const int64_t Ts = adp > 1 ? offset[R] : st.T;
  OwnedTensor all_owned;
  Tensor all = *st.h;
  if (adp > 1) {
    all_owned = OwnedTensor(be, ElemType::kF32, {Ts, H});
    all = *all_owned;
    Range my = balanced_range(st.T, tp, layout.tp_index);
    std::vector<int64_t> counts(R);
    for (int r = 0; r < R; ++r) counts[r] = slice[r] * H;
    all_gather_v(st, *stage_comm, p + "gather_tokens", l, st.h->rows(my.begin, my.end), counts, all);
  }
  std::vector<int32_t> ids;
  std::vector<float> w;
  route(st, lw, all, ids, w);

  OwnedTensor out_owned;
  Tensor out = *st.partial;
  if (adp > 1) {
    out_owned = OwnedTensor(be, ElemType::kF32, {Ts, H});
    out = *out_owned;
  }
  be.fill_zero(out);
  for (int64_t e = layout.experts.begin; e < layout.experts.end; ++e) {
    std::vector<int32_t> rows;
    std::vector<float> wts;
    for (int64_t i = 0; i < Ts * K; ++i)
      if (ids[i] == e) {
        rows.push_back(static_cast<int32_t>(i / K));
        wts.push_back(w[i]);
      }
    if (rows.empty()) continue;
    const int64_t ne = static_cast<int64_t>(rows.size());
    OwnedTensor ridx(be, ElemType::kI32, {ne}), rw(be, ElemType::kF32, {ne}), xe(be, ElemType::kF32, {ne, H}),
        ye(be, ElemType::kF32, {ne, H});
    upload_i32(be, rows, *ridx);
    upload_f32(be, wts, *rw);
    run_op(st, simple_op(plan::OpKind::kMoeDispatch, p + "permute" + std::to_string(e), l, ne),
           [&] { be.gather_rows(all, *ridx, *xe); });
    dense_mlp(st, l, lw.experts[e - layout.experts.begin], p + "expert" + std::to_string(e), *xe, *ye, false);
    run_op(st, simple_op(plan::OpKind::kMoeCombine, p + "unpermute" + std::to_string(e), l, ne),
           [&] { be.scatter_add_rows(*ye, *ridx, *rw, out); });
  }
  if (lw.shared.f > 0) dense_mlp(st, l, lw.shared, p + "shared", all, out, true);

  if (adp == 1) {
    all_reduce(st, *tp_comm, p + "allreduce", l, *st.partial);
    return;
  }
  // reduce-scatter over the stage (blocks padded to the largest slice), then all-gather over tp
  int64_t P = *std::max_element(slice.begin(), slice.end());
  OwnedTensor padded(be, ElemType::kF32, {R * P, H}), mine(be, ElemType::kF32, {P, H});
  be.fill_zero(*padded);
  for (int r = 0; r < R; ++r)
    if (slice[r] > 0) be.copy(padded->rows(r * P, r * P + slice[r]).data, out.rows(offset[r], offset[r + 1]).data,
                              static_cast<size_t>(slice[r] * H * 4));
  plan::Op rop = simple_op(plan::OpKind::kReduceScatter, p + "reduce_scatter", l, Ts);
  rop.comm_bytes = static_cast<double>(padded->bytes());
  run_op(st, rop, [&] { stage_comm->reduce_scatter(padded->data, mine->data, P * H, ElemType::kF32, p + "reduce_scatter"); });
  const int my_rank = layout.stage_rank;
  if (tp == 1) {
    be.copy(st.partial->data, mine->data, static_cast<size_t>(slice[my_rank] * H * 4));
  } else {
    std::vector<int64_t> counts(tp);
    int a0 = layout.attn_group * tp;
    for (int r = 0; r < tp; ++r) counts[r] = slice[a0 + r] * H;
    all_gather_v(st, *tp_comm, p + "allgather", l, mine->rows(0, slice[my_rank]), counts, *st.partial);
  }
}

}  // namespace parasol::exec

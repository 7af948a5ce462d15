// ModelRunner's MoE block in build_step's two forms. All-to-all (ep > 1, moe_tp == 1; DeepEP style): each tp rank
// gates its slice of the group's tokens, permutes the (token, expert) pairs by destination, dispatches them over the
// stage, runs its experts, combines the results back, un-permutes with the routing weights, adds the shared experts
// and all-gathers the group's tokens over tp. Gather form (otherwise): the stage's tokens are all-gathered when
// attn_dp > 1, every rank gates them all and runs its (moe_tp-sliced) experts and its slice of the shared experts,
// and the partial sums are all-reduced over tp (attn_dp == 1) or reduce-scattered over the stage and all-gathered
// over tp. Host-side routing bookkeeping (which rows go where) is control work outside the Step.
#include <algorithm>
#include <numeric>

#include "core/common/error.hpp"
#include "exec/runner_impl.hpp"

namespace parasol::exec {

void ModelRunner::Impl::moe(StepState& st, LayerWeights& lw) {
  if (layout.moe_all_to_all)
    moe_all_to_all(st, lw);
  else
    moe_gather(st, lw);
}

void ModelRunner::Impl::route(StepState& st, LayerWeights& lw, const Tensor& in, std::vector<int32_t>& ids,
                              std::vector<float>& w) {
  const int l = static_cast<int>(lw.index);
  const int64_t n = in.dim(0), E = model.moe.num_experts, K = model.moe.top_k;
  OwnedTensor logits(be, ElemType::kF32, {n, E}), idt(be, ElemType::kI32, {n, K}), wt(be, ElemType::kF32, {n, K});
  MoeRouting r;
  r.top_k = K;
  r.sigmoid = model.moe.scoring == "sigmoid";
  r.norm_topk_prob = model.moe.norm_topk_prob;
  r.n_group = model.moe.n_group;
  r.topk_group = model.moe.topk_group;
  r.routed_scaling_factor = static_cast<float>(model.moe.routed_scaling_factor);
  run_op(st, plan::OpKind::kMoeGate, l, "moe.gate", {n, E, model.hidden, n, false}, [&] {
    if (n == 0) return;
    be.gemm(in, *lw.router, *logits);
    be.moe_gate(*logits, lw.router_bias.view, r, *idt, *wt);
  });
  ids = download_i32(be, *idt);
  w = download_f32(be, *wt);
}

void ModelRunner::Impl::experts(StepState& st, LayerWeights& lw, const Tensor& x, const std::vector<int32_t>& order,
                                const std::vector<int64_t>& counts, const Tensor& y) {
  const int l = static_cast<int>(lw.index);
  const int64_t N = x.dim(0), H = model.hidden, ef = layout.expert_ffn.size();
  OwnedTensor idx, xs_owned, ys_owned;
  Tensor xs = x, ys = y;
  if (!order.empty()) {
    idx = OwnedTensor(be, ElemType::kI32, {N});
    upload_i32(be, order, *idx);
    xs_owned = OwnedTensor(be, ElemType::kF32, {N, H});
    ys_owned = OwnedTensor(be, ElemType::kF32, {N, H});
    xs = *xs_owned;
    ys = *ys_owned;
  }
  OwnedTensor gu(be, ElemType::kF32, {N, 2 * ef}), act(be, ElemType::kF32, {N, ef});
  auto each = [&](const std::function<void(const MlpWeights&, int64_t, int64_t)>& fn) {
    int64_t off = 0;
    for (size_t e = 0; e < counts.size(); ++e) {
      if (counts[e] > 0 && ef > 0) fn(lw.experts[e], off, off + counts[e]);
      off += counts[e];
    }
  };
  run_op(st, plan::OpKind::kGemm, l, "moe.experts.gate_up", {N, 2 * ef, H, -1, true, counts}, [&] {
    if (N == 0) return;
    if (!order.empty()) be.gather_rows(x, *idx, xs);
    each([&](const MlpWeights& w, int64_t a, int64_t b) { be.gemm(xs.rows(a, b), *w.gate_up, gu->rows(a, b)); });
  });
  run_op(st, plan::OpKind::kActivation, l, "moe.experts.act", {-1, ef, -1, N, true, counts}, [&] {
    if (N > 0 && ef > 0) be.silu_and_mul(*gu, *act);
  });
  run_op(st, plan::OpKind::kGemm, l, "moe.experts.down", {N, H, ef, -1, true, counts}, [&] {
    if (N == 0) return;
    be.fill_zero(ys);
    each([&](const MlpWeights& w, int64_t a, int64_t b) { be.gemm(act->rows(a, b), *w.down, ys.rows(a, b)); });
    if (!order.empty()) {
      be.fill_zero(y);
      be.scatter_add_rows(ys, *idx, Tensor(), y);
    }
  });
}

void ModelRunner::Impl::moe_all_to_all(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = op_name(l, "moe.");
  const int64_t H = model.hidden, K = model.moe.top_k, E = model.moe.num_experts;
  const int tp = layout.config.tp, R = stage_comm->size();
  const Range my = balanced_range(st.T, tp, layout.tp_index);
  const int64_t Tc = my.size();
  Tensor in = st.h->rows(my.begin, my.end);
  std::vector<int32_t> ids;
  std::vector<float> w;
  route(st, lw, in, ids, w);

  // (token, k) pairs sorted by expert (so by destination rank, experts being split in contiguous blocks), then token
  const int64_t per = E / R;
  std::vector<int32_t> pairs(static_cast<size_t>(Tc * K));
  std::iota(pairs.begin(), pairs.end(), 0);
  std::stable_sort(pairs.begin(), pairs.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  std::vector<int64_t> send_counts(R, 0);
  std::vector<int32_t> src_rows, experts_sent;
  std::vector<float> weights_sent;
  for (int32_t i : pairs) {
    ++send_counts[ids[i] / per];
    src_rows.push_back(i / static_cast<int32_t>(K));
    experts_sent.push_back(ids[i]);
    weights_sent.push_back(w[i]);
  }
  const int64_t n_send = static_cast<int64_t>(src_rows.size());
  OwnedTensor src_idx(be, ElemType::kI32, {n_send}), send(be, ElemType::kF32, {n_send, H});
  upload_i32(be, src_rows, *src_idx);
  run_op(st, plan::OpKind::kMoeDispatch, l, "moe.permute", {-1, -1, -1, Tc, false}, [&] {
    if (n_send > 0) be.gather_rows(in, *src_idx, *send);
  });

  auto scaled = [H](std::vector<int64_t> c) {
    for (auto& x : c) x *= H;
    return c;
  };
  std::vector<int64_t> recv_counts(R, 0);
  std::vector<int32_t> recv_experts;
  OwnedTensor recv;
  int64_t n_recv = 0;
  collective(st, plan::OpKind::kAllToAll, l, "moe.dispatch", *stage_comm, stage_members, [&] {
    std::vector<int32_t> sc32(send_counts.begin(), send_counts.end()), rc32(R);
    stage_comm->all_to_all(sc32.data(), rc32.data(), 1, ElemType::kI32, p + "dispatch.counts");
    recv_counts.assign(rc32.begin(), rc32.end());
    n_recv = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
    recv_experts.resize(static_cast<size_t>(n_recv));
    stage_comm->all_to_all_v(experts_sent.data(), send_counts, recv_experts.data(), recv_counts, ElemType::kI32,
                             p + "dispatch.experts");
    recv = OwnedTensor(be, ElemType::kF32, {n_recv, H});
    stage_comm->all_to_all_v(send->data, scaled(send_counts), recv->data, scaled(recv_counts), ElemType::kF32,
                             p + "dispatch");
  });

  // received rows come in source order, each source's sorted by expert: group them by local expert
  std::vector<int32_t> order(static_cast<size_t>(n_recv));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return recv_experts[a] < recv_experts[b]; });
  std::vector<int64_t> counts(static_cast<size_t>(layout.experts.size()), 0);
  for (int32_t e : recv_experts) ++counts[static_cast<size_t>(e - layout.experts.begin)];
  OwnedTensor result(be, ElemType::kF32, {n_recv, H});
  experts(st, lw, *recv, order, counts, *result);

  OwnedTensor back(be, ElemType::kF32, {n_send, H}), wts(be, ElemType::kF32, {n_send});
  upload_f32(be, weights_sent, *wts);
  collective(st, plan::OpKind::kAllToAll, l, "moe.combine", *stage_comm, stage_members, [&] {
    stage_comm->all_to_all_v(result->data, scaled(recv_counts), back->data, scaled(send_counts), ElemType::kF32,
                             p + "combine");
  });
  OwnedTensor chunk_owned;
  Tensor chunk = st.partial;
  if (tp > 1) {
    chunk_owned = OwnedTensor(be, ElemType::kF32, {Tc, H});
    chunk = *chunk_owned;
  }
  run_op(st, plan::OpKind::kMoeCombine, l, "moe.unpermute", {-1, -1, -1, Tc, false}, [&] {
    if (Tc == 0) return;
    be.fill_zero(chunk);
    if (n_send > 0) be.scatter_add_rows(*back, *src_idx, *wts, chunk);
  });
  if (model.moe.num_shared_experts > 0) dense_mlp(st, l, lw.shared, "moe.shared", in, chunk, true);
  if (tp > 1) {
    std::vector<int64_t> gather_counts(tp);
    for (int r = 0; r < tp; ++r) gather_counts[r] = balanced_range(st.T, tp, r).size() * H;
    all_gather_v(st, *tp_comm, tp_members, l, "moe.tp_allgather", chunk, gather_counts, st.partial);
  }
}

void ModelRunner::Impl::moe_gather(StepState& st, LayerWeights& lw) {
  const int l = static_cast<int>(lw.index);
  const std::string p = op_name(l, "moe.");
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
    all_gather_v(st, *stage_comm, stage_members, l, "moe.allgather", st.h->rows(my.begin, my.end), counts, all);
  }
  std::vector<int32_t> ids;
  std::vector<float> w;
  route(st, lw, all, ids, w);

  // the pairs routed to this rank's experts, by expert then token
  std::vector<int32_t> pairs;
  for (int64_t i = 0; i < Ts * K; ++i)
    if (ids[i] >= layout.experts.begin && ids[i] < layout.experts.end) pairs.push_back(static_cast<int32_t>(i));
  std::stable_sort(pairs.begin(), pairs.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  std::vector<int32_t> rows;
  std::vector<float> wts;
  std::vector<int64_t> counts(static_cast<size_t>(layout.experts.size()), 0);
  for (int32_t i : pairs) {
    rows.push_back(i / static_cast<int32_t>(K));
    wts.push_back(w[i]);
    ++counts[static_cast<size_t>(ids[i] - layout.experts.begin)];
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  OwnedTensor ridx(be, ElemType::kI32, {n}), rw(be, ElemType::kF32, {n}), xs(be, ElemType::kF32, {n, H}),
      ys(be, ElemType::kF32, {n, H});
  upload_i32(be, rows, *ridx);
  upload_f32(be, wts, *rw);
  run_op(st, plan::OpKind::kMoeDispatch, l, "moe.permute", {-1, -1, -1, Ts, false}, [&] {
    if (n > 0) be.gather_rows(all, *ridx, *xs);
  });
  experts(st, lw, *xs, {}, counts, *ys);
  OwnedTensor out_owned;
  Tensor out = st.partial;
  if (adp > 1) {
    out_owned = OwnedTensor(be, ElemType::kF32, {Ts, H});
    out = *out_owned;
  }
  run_op(st, plan::OpKind::kMoeCombine, l, "moe.unpermute", {-1, -1, -1, Ts, false}, [&] {
    if (Ts == 0) return;
    be.fill_zero(out);
    if (n > 0) be.scatter_add_rows(*ys, *ridx, *rw, out);
  });
  if (model.moe.num_shared_experts > 0) dense_mlp(st, l, lw.shared, "moe.shared", all, out, true);

  if (adp == 1) {
    if (R > 1) all_reduce(st, l, "moe.allreduce", st.partial);
    return;
  }
  // reduce-scatter over the stage (blocks padded to the largest slice), then all-gather over tp
  int64_t P = *std::max_element(slice.begin(), slice.end());
  OwnedTensor padded(be, ElemType::kF32, {R * P, H}), mine(be, ElemType::kF32, {P, H});
  be.fill_zero(*padded);
  for (int r = 0; r < R; ++r)
    if (slice[r] > 0)
      be.copy(padded->rows(r * P, r * P + slice[r]).data, out.rows(offset[r], offset[r + 1]).data,
              static_cast<size_t>(slice[r] * H * 4));
  collective(st, plan::OpKind::kReduceScatter, l, "moe.reducescatter", *stage_comm, stage_members,
             [&] { stage_comm->reduce_scatter(padded->data, mine->data, P * H, ElemType::kF32, p + "reducescatter"); });
  const int my_rank = layout.stage_rank;
  if (tp == 1) {
    if (slice[my_rank] > 0) be.copy(st.partial.data, mine->data, static_cast<size_t>(slice[my_rank] * H * 4));
  } else {
    std::vector<int64_t> gather_counts(tp);
    int a0 = layout.attn_group * tp;
    for (int r = 0; r < tp; ++r) gather_counts[r] = slice[a0 + r] * H;
    all_gather_v(st, *tp_comm, tp_members, l, "moe.tp_allgather", mine->rows(0, slice[my_rank]), gather_counts,
                 st.partial);
  }
}

}  // namespace parasol::exec

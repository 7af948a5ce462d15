// Sharded == unsharded on one GPU: a small Llama-shaped model (GQA, SwiGLU, vocab-parallel embedding and LM head) run
// with tensor parallelism over the device-local communicator (ranks = threads sharing the GPU, each with its own cuda
// backend), against the same model unsharded on one backend. Both run a prefill of several sequences and then one
// decode step through the paged KV cache; the gathered logits of the decode step must match the unsharded ones (bf16
// rel err <= 1e-2, fp32 <= 1e-4); whether the greedy tokens agree is reported too. tp = 4 with 2 KV heads replicates KV
// heads across ranks (HeadMap offsets). Header-only: shared by tools/device/gpu_check.cpp and tests/gpu. Thread
// behaviour: run_tp_check() starts tp threads and joins them.
#pragma once

#include <exception>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "exec/backend.hpp"
#include "exec/communicator.hpp"
#include "exec/cuda/communicators.hpp"
#include "tools/device/op_checks.hpp"

namespace parasol::device_check {

struct TinyLlama {
  int64_t hidden = 512, heads = 8, kv_heads = 2, head_dim = 64, ffn = 1024, vocab = 1024, layers = 2;
  float eps = 1e-5f;
};

struct TpResult {
  int tp = 1;
  std::string dtype;
  double rel_err = 0, tol = 0;
  bool tokens_equal = false, ok = false;
  std::string error;
};

// Full (unsharded) weights on the host, fp32, deterministic in the seed.
struct TinyWeights {
  std::vector<float> embed, lnf, lm;
  struct Layer {
    std::vector<float> ln1, wq, wk, wv, wo, ln2, wgate, wup, wdown;
  };
  std::vector<Layer> layer;
  TinyWeights(const TinyLlama& m, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto fill = [&](int64_t n, float scale, float offset = 0.0f) {
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& x : v)
        x = offset + scale * static_cast<float>(static_cast<double>(rng() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
      return v;
    };
    const float sh = 1.0f / std::sqrt(static_cast<float>(m.hidden)), sf = 1.0f / std::sqrt(static_cast<float>(m.ffn));
    embed = fill(m.vocab * m.hidden, 1.0f);
    lnf = fill(m.hidden, 0.1f, 1.0f);
    lm = fill(m.vocab * m.hidden, sh);
    for (int64_t l = 0; l < m.layers; ++l) {
      Layer L;
      L.ln1 = fill(m.hidden, 0.1f, 1.0f);
      L.ln2 = fill(m.hidden, 0.1f, 1.0f);
      L.wq = fill(m.heads * m.head_dim * m.hidden, sh);
      L.wk = fill(m.kv_heads * m.head_dim * m.hidden, sh);
      L.wv = fill(m.kv_heads * m.head_dim * m.hidden, sh);
      L.wo = fill(m.hidden * m.heads * m.head_dim, sh);
      L.wgate = fill(m.ffn * m.hidden, sh);
      L.wup = fill(m.ffn * m.hidden, sh);
      L.wdown = fill(m.hidden * m.ffn, sf);
      layer.push_back(std::move(L));
    }
  }
};

// Rows [r0, r1) of a row-major [rows, cols] matrix; columns [c0, c1) likewise.
inline std::vector<float> rows_of(const std::vector<float>& m, int64_t cols, int64_t r0, int64_t r1) {
  return std::vector<float>(m.begin() + r0 * cols, m.begin() + r1 * cols);
}
inline std::vector<float> cols_of(const std::vector<float>& m, int64_t cols, int64_t c0, int64_t c1) {
  std::vector<float> out;
  for (size_t r = 0; r < m.size() / static_cast<size_t>(cols); ++r)
    out.insert(out.end(), m.begin() + static_cast<int64_t>(r) * cols + c0,
               m.begin() + static_cast<int64_t>(r) * cols + c1);
  return out;
}

// One rank's forward over `steps` (prefill batch, then decode batch). Returns the full logits of the last step's
// tokens, gathered (rank 0 meaningful), as [tokens, vocab].
inline std::vector<float> tiny_forward(exec::Backend& b, exec::Communicator* comm, int rank, int tp, const TinyLlama& m,
                                       const TinyWeights& W, exec::ElemType t,
                                       const std::vector<std::pair<exec::SeqBatch, std::vector<int32_t>>>& steps) {
  using exec::ElemType;
  using exec::OwnedTensor;
  const int64_t Hl = m.heads / tp, Vl = m.vocab / tp, Fl = m.ffn / tp, D = m.head_dim, group = m.heads / m.kv_heads;
  const int64_t q_off = rank * Hl;
  const int64_t kv_first = q_off / group, kv_last = (q_off + Hl - 1) / group, Kl = kv_last - kv_first + 1;
  auto up = [&](const std::vector<float>& h, std::vector<int64_t> shape) {
    OwnedTensor x(b, t, shape);
    exec::upload_f32(b, h, *x);
    return x;
  };
  OwnedTensor embed = up(rows_of(W.embed, m.hidden, rank * Vl, (rank + 1) * Vl), {Vl, m.hidden});
  OwnedTensor lm = up(rows_of(W.lm, m.hidden, rank * Vl, (rank + 1) * Vl), {Vl, m.hidden});
  OwnedTensor lnf = up(W.lnf, {m.hidden});
  struct L {
    OwnedTensor ln1, ln2, wq, wk, wv, wo, wgu, wdown, kc, vc;
  };
  std::vector<L> layers;
  int64_t S = 0;
  for (const auto& st : steps) {
    int64_t pages = 0;
    for (const auto& bt : st.first.block_tables)
      for (int32_t p : bt) pages = std::max<int64_t>(pages, p + 1);
    S = std::max(S, pages * st.first.block_tokens);
  }
  for (const auto& Lw : W.layer) {
    L l;
    l.ln1 = up(Lw.ln1, {m.hidden});
    l.ln2 = up(Lw.ln2, {m.hidden});
    l.wq = up(rows_of(Lw.wq, m.hidden, q_off * D, (q_off + Hl) * D), {Hl * D, m.hidden});
    l.wk = up(rows_of(Lw.wk, m.hidden, kv_first * D, (kv_last + 1) * D), {Kl * D, m.hidden});
    l.wv = up(rows_of(Lw.wv, m.hidden, kv_first * D, (kv_last + 1) * D), {Kl * D, m.hidden});
    l.wo = up(cols_of(Lw.wo, m.heads * D, q_off * D, (q_off + Hl) * D), {m.hidden, Hl * D});
    std::vector<float> gu = rows_of(Lw.wgate, m.hidden, rank * Fl, (rank + 1) * Fl);
    const auto upr = rows_of(Lw.wup, m.hidden, rank * Fl, (rank + 1) * Fl);
    gu.insert(gu.end(), upr.begin(), upr.end());
    l.wgu = up(gu, {2 * Fl, m.hidden});
    l.wdown = up(cols_of(Lw.wdown, m.ffn, rank * Fl, (rank + 1) * Fl), {m.hidden, Fl});
    l.kc = OwnedTensor(b, t, {S, Kl, D});
    l.vc = OwnedTensor(b, t, {S, Kl, D});
    b.fill_zero(*l.kc);
    b.fill_zero(*l.vc);
    layers.push_back(std::move(l));
  }
  const auto f = inv_freq_host(D, 500000.0, true);
  OwnedTensor inv(b, ElemType::kF32, {D / 2});
  exec::upload_f32(b, f, *inv);
  exec::RopeParams rp;
  rp.rot_dim = D;
  const exec::HeadMap hm{group, q_off, kv_first};
  const ElemType st = t;  // all-reduce in the activation type
  std::vector<float> result;
  for (const auto& [seqs, ids_host] : steps) {
    const int64_t T = seqs.tokens();
    std::vector<int32_t> pos, slots;
    for (size_t s = 0; s < seqs.q_lens.size(); ++s)
      for (int64_t i = 0; i < seqs.q_lens[s]; ++i) {
        const int64_t p = seqs.ctx_lens[s] - seqs.q_lens[s] + i;
        pos.push_back(static_cast<int32_t>(p));
        slots.push_back(
            static_cast<int32_t>(seqs.block_tables[s][static_cast<size_t>(p / seqs.block_tokens)] * seqs.block_tokens +
                                 p % seqs.block_tokens));
      }
    OwnedTensor ids(b, ElemType::kI32, {T}), ps(b, ElemType::kI32, {T}), sl(b, ElemType::kI32, {T});
    exec::upload_i32(b, ids_host, *ids);
    exec::upload_i32(b, pos, *ps);
    exec::upload_i32(b, slots, *sl);
    OwnedTensor x(b, t, {T, m.hidden}), h(b, t, {T, m.hidden}), y(b, t, {T, m.hidden});
    OwnedTensor q(b, t, {T, Hl * D}), kk(b, t, {T, Kl * D}), v(b, t, {T, Kl * D}), o(b, t, {T, Hl, D});
    OwnedTensor gu(b, t, {T, 2 * Fl}), a(b, t, {T, Fl});
    auto all_reduce = [&](const exec::Tensor& z, const std::string& label) {
      if (comm) comm->all_reduce(z.data, z.data, z.numel(), st, label);
    };
    b.embedding(*ids, *embed, rank * Vl, *x);
    all_reduce(*x, "embed");
    for (size_t li = 0; li < layers.size(); ++li) {
      auto& l = layers[li];
      b.rms_norm(*x, *l.ln1, m.eps, *h);
      b.gemm(*h, *l.wq, *q);
      b.gemm(*h, *l.wk, *kk);
      b.gemm(*h, *l.wv, *v);
      b.rope(q->reshaped({T, Hl, D}), *ps, *inv, rp);
      b.rope(kk->reshaped({T, Kl, D}), *ps, *inv, rp);
      b.kv_append(*kk, *sl, *l.kc);
      b.kv_append(*v, *sl, *l.vc);
      b.attention(q->reshaped({T, Hl, D}), *l.kc, *l.vc, seqs, hm, 1.0f / std::sqrt(static_cast<float>(D)), *o);
      b.gemm(o->reshaped({T, Hl * D}), *l.wo, *y);
      all_reduce(*y, "L" + std::to_string(li) + ".attn");
      b.add(*x, *y, *x);
      b.rms_norm(*x, *l.ln2, m.eps, *h);
      b.gemm(*h, *l.wgu, *gu);
      b.silu_and_mul(*gu, *a);
      b.gemm(*a, *l.wdown, *y);
      all_reduce(*y, "L" + std::to_string(li) + ".mlp");
      b.add(*x, *y, *x);
    }
    b.rms_norm(*x, *lnf, m.eps, *h);
    OwnedTensor logits(b, ElemType::kF32, {T, Vl});
    b.gemm(*h, *lm, *logits);
    OwnedTensor all(b, ElemType::kF32, {tp, T, Vl});
    if (comm)
      comm->all_gather(logits->data, all->data, T * Vl, ElemType::kF32, "logits");
    else
      b.copy(all->data, logits->data, logits->bytes());
    const auto g = exec::download_f32(b, *all);  // [tp][T][Vl] -> [T][V]
    result.assign(static_cast<size_t>(T * m.vocab), 0.0f);
    for (int r = 0; r < tp; ++r)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < Vl; ++j)
          result[static_cast<size_t>(i * m.vocab + r * Vl + j)] = g[static_cast<size_t>((r * T + i) * Vl + j)];
  }
  return result;
}

// The steps: a prefill of three sequences (chunk lengths 5, 17, 33 from empty), then one decode token each.
inline std::vector<std::pair<exec::SeqBatch, std::vector<int32_t>>> tiny_steps(const TinyLlama& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  exec::SeqBatch pre;
  pre.block_tokens = 16;
  pre.q_lens = {5, 17, 33};
  pre.ctx_lens = {5, 17, 33};
  pre.block_tables = {{4}, {0, 7}, {2, 5, 1}};
  std::vector<int32_t> ids;
  for (int i = 0; i < 55; ++i) ids.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(m.vocab)));
  exec::SeqBatch dec = pre;
  dec.q_lens = {1, 1, 1};
  dec.ctx_lens = {6, 18, 34};
  dec.block_tables = {{4}, {0, 7}, {2, 5, 1, 3}};
  std::vector<int32_t> ids2{static_cast<int32_t>(rng() % 1000), static_cast<int32_t>(rng() % 1000), 7};
  return {{pre, ids}, {dec, ids2}};
}

inline std::vector<int32_t> greedy(const std::vector<float>& logits, int64_t vocab) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < logits.size() / static_cast<size_t>(vocab); ++i) {
    const auto* row = logits.data() + i * static_cast<size_t>(vocab);
    out.push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
  }
  return out;
}

// Runs the model unsharded and with tensor parallelism `tp` on device `device`.
inline TpResult run_tp_check(int tp, exec::ElemType t, int device, uint64_t seed) {
  TpResult res;
  res.tp = tp;
  res.dtype = exec::to_string(t);
  res.tol = tol_for(t);
  const TinyLlama m;
  const TinyWeights W(m, seed);
  const auto steps = tiny_steps(m, seed + 1);
  exec::BackendOptions o;
  o.device = device;
  try {
    auto ref_backend = exec::make_backend("cuda", o);
    const auto ref = tiny_forward(*ref_backend, nullptr, 0, 1, m, W, t, steps);
    std::vector<std::unique_ptr<exec::Backend>> backends;
    std::vector<exec::Backend*> raw;
    for (int r = 0; r < tp; ++r) {
      backends.push_back(exec::make_backend("cuda", o));
      raw.push_back(backends.back().get());
    }
    auto world = exec::cuda::make_device_local_world(raw, 60.0);
    std::vector<std::vector<float>> out(static_cast<size_t>(tp));
    std::vector<std::string> errors(static_cast<size_t>(tp));
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r)
      threads.emplace_back([&, r] {
        try {
          out[static_cast<size_t>(r)] =
              tiny_forward(*raw[static_cast<size_t>(r)], world[static_cast<size_t>(r)].get(), r, tp, m, W, t, steps);
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(r)] = e.what();
        }
      });
    for (auto& th : threads) th.join();
    for (const auto& e : errors)
      if (!e.empty()) throw std::runtime_error(e);
    res.rel_err = 0;
    for (int r = 0; r < tp; ++r) res.rel_err = std::max(res.rel_err, rel_err(out[static_cast<size_t>(r)], ref));
    res.tokens_equal = greedy(out[0], m.vocab) == greedy(ref, m.vocab);
    res.ok = res.rel_err <= res.tol;  // greedy tokens are reported, not required: a near-tie may flip in bf16
  } catch (const std::exception& e) {
    res.error = e.what();
    res.ok = false;
  }
  return res;
}

// The device-local communicator's collectives on `n` ranks against host closed forms (values are small integers, so
// every sum is exact): all_reduce (fp32, bf16), all_gather, reduce_scatter, all_to_all, send/recv. Returns one
// OpCheck per collective (rel_err = fraction of wrong elements).
inline std::vector<OpCheck> run_comm_checks(int n, int device) {
  using exec::ElemType;
  using exec::OwnedTensor;
  const int64_t c = 4099;
  exec::BackendOptions o;
  o.device = device;
  std::vector<std::unique_ptr<exec::Backend>> backends;
  std::vector<exec::Backend*> raw;
  for (int r = 0; r < n; ++r) {
    backends.push_back(exec::make_backend("cuda", o));
    raw.push_back(backends.back().get());
  }
  auto world = exec::cuda::make_device_local_world(raw, 30.0);
  const std::vector<std::string> names{"all_reduce fp32", "all_reduce bf16", "all_gather",
                                       "reduce_scatter",  "all_to_all",      "send/recv"};
  std::vector<std::vector<int64_t>> wrong(static_cast<size_t>(n), std::vector<int64_t>(names.size(), 0));
  std::vector<std::string> errors(static_cast<size_t>(n));
  auto val = [](int r, int64_t i) { return static_cast<float>((r + 1) * (i % 31) - 7); };
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] {
      try {
        exec::Backend& b = *raw[static_cast<size_t>(r)];
        exec::Communicator& comm = *world[static_cast<size_t>(r)];
        auto& bad = wrong[static_cast<size_t>(r)];
        std::vector<float> mine(static_cast<size_t>(n * c));
        for (int64_t i = 0; i < n * c; ++i) mine[static_cast<size_t>(i)] = val(r, i);
        for (int ti = 0; ti < 2; ++ti) {
          const ElemType t = ti == 0 ? ElemType::kF32 : ElemType::kBf16;
          OwnedTensor x(b, t, {c});
          exec::upload_f32(b, std::vector<float>(mine.begin(), mine.begin() + c), *x);
          comm.all_reduce(x->data, x->data, c, t, "check.all_reduce");
          const auto got = exec::download_f32(b, *x);
          for (int64_t i = 0; i < c; ++i) {
            float want = 0;
            for (int j = 0; j < n; ++j) want += val(j, i);
            bad[static_cast<size_t>(ti)] += got[static_cast<size_t>(i)] != want;
          }
        }
        OwnedTensor x(b, ElemType::kF32, {n * c}), y(b, ElemType::kF32, {n * c}), z(b, ElemType::kF32, {c});
        exec::upload_f32(b, mine, *x);
        comm.all_gather(x->data, y->data, c, ElemType::kF32, "check.all_gather");
        auto g = exec::download_f32(b, *y);
        for (int j = 0; j < n; ++j)
          for (int64_t i = 0; i < c; ++i) bad[2] += g[static_cast<size_t>(j * c + i)] != val(j, i);
        comm.reduce_scatter(x->data, z->data, c, ElemType::kF32, "check.reduce_scatter");
        g = exec::download_f32(b, *z);
        for (int64_t i = 0; i < c; ++i) {
          float want = 0;
          for (int j = 0; j < n; ++j) want += val(j, r * c + i);
          bad[3] += g[static_cast<size_t>(i)] != want;
        }
        comm.all_to_all(x->data, y->data, c, ElemType::kF32, "check.all_to_all");
        g = exec::download_f32(b, *y);
        for (int j = 0; j < n; ++j)
          for (int64_t i = 0; i < c; ++i) bad[4] += g[static_cast<size_t>(j * c + i)] != val(j, r * c + i);
        // Ring: every rank sends its block to the next and receives from the previous.
        comm.send(x->data, c, ElemType::kF32, (r + 1) % n, "check.send");
        comm.recv(z->data, c, ElemType::kF32, (r + n - 1) % n, "check.recv");
        g = exec::download_f32(b, *z);
        for (int64_t i = 0; i < c; ++i) bad[5] += g[static_cast<size_t>(i)] != val((r + n - 1) % n, i);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : th) t.join();
  std::vector<OpCheck> out;
  for (size_t k = 0; k < names.size(); ++k) {
    OpCheck ch;
    ch.op = "device-local " + names[k];
    ch.shape = std::to_string(n) + " ranks x " + std::to_string(c);
    ch.dtype = k == 1 ? "bf16" : "fp32";
    int64_t bad = 0;
    for (int r = 0; r < n; ++r) bad += wrong[static_cast<size_t>(r)][k];
    std::string err;
    for (const auto& e : errors) err += e;
    ch.rel_err = err.empty() ? static_cast<double>(bad) / static_cast<double>(n * c) : INFINITY;
    ch.written = err.empty();
    ch.ok = err.empty() && bad == 0;
    if (!err.empty()) ch.shape += " (" + err + ")";
    out.push_back(ch);
  }
  return out;
}

}  // namespace parasol::device_check

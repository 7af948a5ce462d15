// The op checks themselves (included by op_checks.hpp). Each block builds random inputs on both backends, poisons
// the output, runs the op on both and records the comparison.
#pragma once

#include <algorithm>
#include <numeric>

#include "kernels/kernels.cuh"

namespace parasol::device_check {

inline std::vector<float> inv_freq_host(int64_t rot_dim, double theta, bool llama3) {
  kernels::RopeParams p;
  p.theta = theta;
  if (llama3) {
    p.scaling_type = 1;
    p.factor = 8.0;
    p.low_freq_factor = 1.0;
    p.high_freq_factor = 4.0;
    p.original_max_position = 8192.0;
  }
  std::vector<float> f(static_cast<size_t>(rot_dim / 2));
  kernels::rope_inv_freq(p, rot_dim, f.data());
  return f;
}

inline void check_attention(OpChecker& k, ElemType t, const std::vector<int64_t>& q_lens,
                            const std::vector<int64_t>& ctx, int64_t H, int64_t Hkv, int64_t D, int64_t bt,
                            exec::HeadMap hm, int64_t cache_kv_heads, const std::string& what) {
  int64_t S = 0;
  const exec::SeqBatch s = k.seq_batch(q_lens, ctx, bt, &S);
  const int64_t T = s.tokens();
  Twin q = k.random(t, {T, H, D});
  Twin kc = k.random(t, {S, cache_kv_heads, D});
  Twin vc = k.random(t, {S, cache_kv_heads, D});
  Twin out = k.poisoned(t, {T, H, D});
  (void)Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  k.run(
      "attention " + what,
      "T" + std::to_string(T) + " H" + std::to_string(H) + "/" + std::to_string(cache_kv_heads) + " D" +
          std::to_string(D) + " ctx<=" + std::to_string(s.max_ctx()),
      t,
      [&](Backend& b, bool g) {
        b.attention(*(g ? q.g : q.c), *(g ? kc.g : kc.c), *(g ? vc.g : vc.c), s, hm, scale, *(g ? out.g : out.c));
      },
      out);
}

inline void check_mla(OpChecker& k, ElemType t, const std::vector<int64_t>& q_lens, const std::vector<int64_t>& ctx,
                      int64_t H, int64_t nope, int64_t R, int64_t L, int64_t vd, const std::string& what) {
  int64_t S = 0;
  const exec::SeqBatch s = k.seq_batch(q_lens, ctx, 64, &S);
  const int64_t T = s.tokens();
  Twin q = k.random(t, {T, H, nope + R});
  Twin lat = k.random(t, {S, L + R});
  Twin w = k.random(t, {H * (nope + vd), L}, 1.0f / std::sqrt(static_cast<float>(nope)));
  Twin out = k.poisoned(t, {T, H, vd});
  const float scale = 1.0f / std::sqrt(static_cast<float>(nope + R));
  k.run(
      "mla_attention " + what,
      "T" + std::to_string(T) + " H" + std::to_string(H) + " L" + std::to_string(L) +
          " ctx<=" + std::to_string(s.max_ctx()),
      t,
      [&](Backend& b, bool g) {
        b.mla_attention(*(g ? q.g : q.c), *(g ? lat.g : lat.c), *(g ? w.g : w.c), s, nope, vd, scale,
                        *(g ? out.g : out.c));
      },
      out);
}

inline void run_all_op_checks(OpChecker& k, bool big) {
  for (ElemType t : {ElemType::kBf16, ElemType::kF32}) {
    const int64_t Hd = big ? 4096 : 512;
    {  // embedding, vocab-parallel shard [100, 100 + 300)
      std::vector<int32_t> ids;
      for (int i = 0; i < 37; ++i) ids.push_back(static_cast<int32_t>(k.below(500)));
      Twin id = k.ints(ids);
      Twin table = k.random(t, {300, Hd});
      Twin out = k.poisoned(t, {37, Hd});
      k.run(
          "embedding", dims({37, Hd}), t,
          [&](Backend& b, bool g) {
            b.embedding(*(g ? id.g : id.c), *(g ? table.g : table.c), 100, *(g ? out.g : out.c));
          },
          out);
    }
    for (int64_t rows : {int64_t{1}, int64_t{67}}) {  // rms_norm, contiguous and strided rows
      Twin x = k.random(t, {rows, Hd}, 3.0f);
      Twin w = k.random(t, {Hd});
      Twin out = k.poisoned(t, {rows, Hd});
      k.run(
          "rms_norm", dims({rows, Hd}), t,
          [&](Backend& b, bool g) { b.rms_norm(*(g ? x.g : x.c), *(g ? w.g : w.c), 1e-5f, *(g ? out.g : out.c)); },
          out);
    }
    {
      Twin x = k.random(t, {9, 2 * Hd + 8});
      Twin w = k.random(t, {Hd});
      Twin out = k.poisoned(t, {9, Hd});
      k.run(
          "rms_norm", "9x" + std::to_string(Hd) + " strided", t,
          [&](Backend& b, bool g) {
            b.rms_norm((g ? x.g : x.c)->cols(8, 8 + Hd), *(g ? w.g : w.c), 1e-6f, *(g ? out.g : out.c));
          },
          out);
    }
    {
      Twin a = k.random(t, {33, Hd}), bb = k.random(t, {33, Hd});
      Twin out = k.poisoned(t, {33, Hd});
      k.run(
          "add", dims({33, Hd}), t,
          [&](Backend& b, bool g) { b.add(*(g ? a.g : a.c), *(g ? bb.g : bb.c), *(g ? out.g : out.c)); }, out);
    }
    for (auto [m, n, kk] : {std::tuple<int64_t, int64_t, int64_t>{1, 256, 512}, {37, 384, 512}, {130, 96, 1040}}) {
      Twin x = k.random(t, {m, kk}), w = k.random(t, {n, kk}, 1.0f / std::sqrt(static_cast<float>(kk)));
      Twin y = k.poisoned(t, {m, n});
      k.run(
          "gemm", dims({m, n, kk}), t,
          [&](Backend& b, bool g) { b.gemm(*(g ? x.g : x.c), *(g ? w.g : w.c), *(g ? y.g : y.c)); }, y);
      Twin y2 = k.random(t, {m, n});
      k.run(
          "gemm accumulate", dims({m, n, kk}), t,
          [&](Backend& b, bool g) { b.gemm(*(g ? x.g : x.c), *(g ? w.g : w.c), *(g ? y2.g : y2.c), true); }, y2);
    }
    if (t == ElemType::kF32) {  // fp32 activations against bf16 weights
      Twin x = k.random(ElemType::kF32, {19, 256}), w = k.random(ElemType::kBf16, {64, 256}, 0.0625f);
      Twin y = k.poisoned(ElemType::kF32, {19, 64});
      k.run(
          "gemm f32 x bf16", dims({19, 64, 256}), ElemType::kF32,
          [&](Backend& b, bool g) { b.gemm(*(g ? x.g : x.c), *(g ? w.g : w.c), *(g ? y.g : y.c)); }, y);
    }
    {
      Twin y = k.random(t, {21, 200}), bias = k.random(t, {200});
      k.run(
          "add_bias", dims({21, 200}), t,
          [&](Backend& b, bool g) { b.add_bias(*(g ? y.g : y.c), *(g ? bias.g : bias.c)); }, y);
    }
    for (int variant = 0; variant < 3; ++variant) {  // rope: default, llama3, DeepSeek interleaved partial
      const int64_t T = 19, H = variant == 2 ? 16 : 8, D = variant == 2 ? 192 : 128;
      exec::RopeParams p;
      p.rot_offset = variant == 2 ? 128 : 0;
      p.rot_dim = variant == 2 ? 64 : 128;
      p.interleaved = variant == 2;
      const auto f = inv_freq_host(p.rot_dim, variant == 1 ? 500000.0 : 10000.0, variant == 1);
      Twin inv = k.make(ElemType::kF32, {p.rot_dim / 2}, f);
      std::vector<int32_t> pos;
      for (int64_t i = 0; i < T; ++i) pos.push_back(static_cast<int32_t>(k.below(100000)));
      Twin ps = k.ints(pos);
      Twin x = k.random(t, {T, H, D});
      k.run(
          variant == 0   ? "rope"
          : variant == 1 ? "rope llama3"
                         : "rope interleaved",
          dims({T, H, D}), t,
          [&](Backend& b, bool g) { b.rope(*(g ? x.g : x.c), *(g ? ps.g : ps.c), *(g ? inv.g : inv.c), p); }, x);
    }
    {
      Twin gu = k.random(t, {45, 2 * 1024}, 4.0f);
      Twin out = k.poisoned(t, {45, 1024});
      k.run(
          "silu_and_mul", dims({45, 1024}), t,
          [&](Backend& b, bool g) { b.silu_and_mul(*(g ? gu.g : gu.c), *(g ? out.g : out.c)); }, out);
    }
    {
      std::vector<int32_t> slots(40);
      std::iota(slots.begin(), slots.end(), 0);
      for (size_t i = slots.size() - 1; i > 0; --i)
        std::swap(slots[i], slots[static_cast<size_t>(k.below(static_cast<int64_t>(i) + 1))]);
      Twin sl = k.ints(std::vector<int32_t>(slots.begin(), slots.begin() + 23));
      Twin src = k.random(t, {23, 8 * 128});
      Twin cache = k.random(t, {40, 8, 128});
      k.run(
          "kv_append", "23 rows into 40x8x128", t,
          [&](Backend& b, bool g) { b.kv_append(*(g ? src.g : src.c), *(g ? sl.g : sl.c), *(g ? cache.g : cache.c)); },
          cache);
    }
    // Attention: fast paths (bf16, head_dim 128/64) and the generic path (fp32 / small dims).
    const exec::HeadMap full{4, 0, 0};
    check_attention(k, t, {1, 1, 1, 1, 1}, {1, 17, 300, 700, big ? 5000 : 1200}, 32, 8, 128, 16, full, 8, "decode");
    check_attention(k, t, {1, 1, 1}, {33, 257, 900}, 8, 2, 128, 16, exec::HeadMap{4, 8, 2}, 2, "decode tp-shard");
    check_attention(k, t, {1, 70, 130}, {300, 70, 200}, 8, 2, 128, 16, exec::HeadMap{4, 0, 0}, 2, "chunked prefill");
    check_attention(k, t, {200}, {200}, 4, 4, 64, 32, exec::HeadMap{1, 0, 0}, 4, "prefill D64");
    check_attention(k, t, {3, 1}, {40, 9}, 6, 2, 32, 8, exec::HeadMap{3, 0, 0}, 2, "small D32");
    if (big) check_attention(k, t, {1024}, {1024}, 8, 2, 128, 16, exec::HeadMap{4, 0, 0}, 2, "prefill 1k");
    // MLA: DeepSeek-V3 dims (fast path for bf16) and a tiny one (generic).
    check_mla(k, t, {1, 1, 1}, {5, 300, big ? 3000 : 700}, 16, 128, 64, 512, 128, "decode");
    check_mla(k, t, {40}, {100}, 16, 128, 64, 512, 128, "chunked prefill");
    check_mla(k, t, {2, 1}, {9, 30}, 4, 16, 8, 32, 16, "small");
    if (t == ElemType::kF32) {  // routing works on fp32 logits
      for (bool sig : {false, true}) {
        const int64_t T = 33, E = sig ? 256 : 8, K = sig ? 8 : 2;
        Twin logits = k.random(ElemType::kF32, {T, E}, 3.0f);
        Twin bias = k.random(ElemType::kF32, {E}, 0.1f);
        Twin ids = k.ints(std::vector<int32_t>(static_cast<size_t>(T * K), -1));
        Twin w = k.poisoned(ElemType::kF32, {T, K});
        exec::MoeRouting r;
        r.top_k = K;
        r.sigmoid = sig;
        r.n_group = sig ? 8 : 1;
        r.topk_group = sig ? 4 : 1;
        r.routed_scaling_factor = sig ? 2.5f : 1.0f;
        auto gate = [&](Backend& b, bool g) {
          b.moe_gate(*(g ? logits.g : logits.c), sig ? *(g ? bias.g : bias.c) : Tensor(), r, *(g ? ids.g : ids.c),
                     *(g ? w.g : w.c));
        };
        k.run(sig ? "moe_gate sigmoid ids" : "moe_gate softmax ids", dims({T, E, K}), ElemType::kF32, gate, ids);
        k.compare(sig ? "moe_gate sigmoid weights" : "moe_gate softmax weights", dims({T, E, K}), ElemType::kF32, w);
      }
    }
    {
      std::vector<int32_t> idx;
      for (int i = 0; i < 50; ++i) idx.push_back(static_cast<int32_t>(k.below(20)));
      Twin ix = k.ints(idx);
      Twin src = k.random(t, {20, 264});
      Twin dst = k.poisoned(t, {50, 264});
      k.run(
          "gather_rows", dims({50, 264}), t,
          [&](Backend& b, bool g) { b.gather_rows(*(g ? src.g : src.c), *(g ? ix.g : ix.c), *(g ? dst.g : dst.c)); },
          dst);
      Twin wts = k.random(ElemType::kF32, {50});
      Twin acc = k.random(t, {20, 264});
      k.run(
          "scatter_add_rows", dims({50, 264}), t,
          [&](Backend& b, bool g) {
            b.scatter_add_rows(*(g ? dst.g : dst.c), *(g ? ix.g : ix.c), *(g ? wts.g : wts.c), *(g ? acc.g : acc.c));
          },
          acc);
    }
    {
      const int64_t V = big ? 128256 : 32000;
      Twin logits = k.random(t, {7, V}, 10.0f);
      Twin out = k.ints(std::vector<int32_t>(7, -1));
      k.run(
          "argmax", dims({7, V}), t,
          [&](Backend& b, bool g) { b.argmax(*(g ? logits.g : logits.c), *(g ? out.g : out.c)); }, out);
    }
    {
      const ElemType other = t == ElemType::kF32 ? ElemType::kBf16 : ElemType::kF32;
      Twin src = k.random(t, {31, 77});
      Twin dst = k.poisoned(other, {31, 77});
      k.run(
          "convert", dims({31, 77}) + " -> " + exec::to_string(other), ElemType::kBf16,
          [&](Backend& b, bool g) { b.convert(*(g ? src.g : src.c), *(g ? dst.g : dst.c)); }, dst);
    }
  }
}

}  // namespace parasol::device_check

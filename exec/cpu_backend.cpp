// The cpu backend: the reference every other backend is checked against. fp32 math throughout; weights, caches and
// activations may be stored in bf16/fp16 (converted on read, rounded on write). GEMMs go to BLAS sgemm when CMake
// found one (PARASOL_HAVE_BLAS), else a plain loop.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/common/error.hpp"
#include "exec/backend.hpp"
#include "exec/half.hpp"

#ifdef PARASOL_HAVE_BLAS
extern "C" {
// The CBLAS entry point (declared here so that any BLAS with a CBLAS interface links; the header differs by vendor).
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc);
}
#ifdef PARASOL_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif
#endif

namespace parasol::exec {
namespace {

inline float load(const void* base, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::kF32:
      return static_cast<const float*>(base)[i];
    case ElemType::kBf16:
      return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case ElemType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case ElemType::kI32:
      return static_cast<float>(static_cast<const int32_t*>(base)[i]);
  }
  return 0.0f;
}

inline void store(void* base, ElemType t, int64_t i, float v) {
  switch (t) {
    case ElemType::kF32:
      static_cast<float*>(base)[i] = v;
      return;
    case ElemType::kBf16:
      static_cast<uint16_t*>(base)[i] = f32_to_bf16(v);
      return;
    case ElemType::kF16:
      static_cast<uint16_t*>(base)[i] = f32_to_f16(v);
      return;
    case ElemType::kI32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      return;
  }
}

// Rounds v as storing it in t would (identity for fp32): HF casts to the activation dtype at fixed points.
inline float round_to(ElemType t, float v) {
  if (t == ElemType::kBf16) return bf16_to_f32(f32_to_bf16(v));
  if (t == ElemType::kF16) return f16_to_f32(f32_to_f16(v));
  return v;
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string("cpu backend: ") + op + ": " + what);
}

// Row r of a matrix view (rank >= 2 flattened to [rows, last]); rows of a strided view are stride(rank-2) apart.
inline int64_t row_stride(const Tensor& t) { return t.rank() >= 2 ? t.stride(t.rank() - 2) : t.dim(-1); }
inline int64_t rows_of(const Tensor& t) { return t.numel() / std::max<int64_t>(1, t.dim(-1)); }

// Reads rows of a possibly 16-bit matrix into a dense fp32 scratch.
const float* as_f32_rows(const Tensor& t, std::vector<float>& scratch, int64_t& ld) {
  if (t.dtype == ElemType::kF32) {
    ld = row_stride(t);
    return t.as<float>();
  }
  int64_t r = rows_of(t), c = t.dim(-1), rs = row_stride(t);
  scratch.resize(static_cast<size_t>(r * c));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) scratch[static_cast<size_t>(i * c + j)] = load(t.data, t.dtype, i * rs + j);
  ld = c;
  return scratch.data();
}

class CpuEvent : public Event {
 public:
  std::chrono::steady_clock::time_point at;
};

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& o) {
#if defined(PARASOL_HAVE_BLAS) && defined(PARASOL_HAVE_OPENBLAS)
    if (o.threads > 0) openblas_set_num_threads(o.threads);
#endif
  }
  std::string name() const override { return "cpu"; }
  bool host_memory() const override { return true; }

  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw RuntimeFailure("cpu backend: out of memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }

  void fill_zero(const Tensor& t) override {
    int64_t r = rows_of(t), c = t.dim(-1), rs = row_stride(t);
    size_t eb = element_bytes(t.dtype);
    for (int64_t i = 0; i < r; ++i) std::memset(static_cast<char*>(t.data) + i * rs * eb, 0, c * eb);
  }

  void convert(const Tensor& src, const Tensor& dst) override {
    require(src.numel() == dst.numel() && src.dim(-1) == dst.dim(-1), "convert", src.describe() + " -> " + dst.describe());
    int64_t r = rows_of(src), c = src.dim(-1), rs = row_stride(src), rd = row_stride(dst);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) store(dst.data, dst.dtype, i * rd + j, load(src.data, src.dtype, i * rs + j));
  }

  void embedding(const Tensor& ids, const Tensor& table, int64_t row_begin, const Tensor& out) override {
    require(ids.dtype == ElemType::kI32 && ids.numel() == rows_of(out) && table.dim(-1) == out.dim(-1), "embedding",
            ids.describe() + " " + table.describe() + " -> " + out.describe());
    int64_t h = out.dim(-1), rows = table.dim(0), ro = row_stride(out), rt = row_stride(table);
    const int32_t* id = ids.as<int32_t>();
    for (int64_t t = 0; t < ids.numel(); ++t) {
      int64_t r = id[t] - row_begin;
      bool mine = r >= 0 && r < rows;
      for (int64_t j = 0; j < h; ++j)
        store(out.data, out.dtype, t * ro + j, mine ? load(table.data, table.dtype, r * rt + j) : 0.0f);
    }
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) override {
    require(x.dim(-1) == w.numel() && rows_of(x) == rows_of(out) && out.dim(-1) == x.dim(-1), "rms_norm",
            x.describe() + " w " + w.describe() + " -> " + out.describe());
    int64_t r = rows_of(x), c = x.dim(-1), rx = row_stride(x), ro = row_stride(out);
    std::vector<float> row(static_cast<size_t>(c));
    for (int64_t i = 0; i < r; ++i) {
      float ss = 0.0f;
      for (int64_t j = 0; j < c; ++j) {
        row[j] = load(x.data, x.dtype, i * rx + j);
        ss += row[j] * row[j];
      }
      float inv = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
      for (int64_t j = 0; j < c; ++j)
        store(out.data, out.dtype, i * ro + j, load(w.data, w.dtype, j) * round_to(x.dtype, row[j] * inv));
    }
  }

  void add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    require(a.numel() == b.numel() && a.numel() == out.numel(), "add", a.describe() + " + " + b.describe());
    int64_t r = rows_of(a), c = a.dim(-1), ra = row_stride(a), rb = row_stride(b), ro = row_stride(out);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j)
        store(out.data, out.dtype, i * ro + j, load(a.data, a.dtype, i * ra + j) + load(b.data, b.dtype, i * rb + j));
  }

  void gemm(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) override {
    int64_t m = rows_of(x), k = x.dim(-1), n = w.dim(0);
    require(w.rank() == 2 && w.dim(1) == k && rows_of(y) == m && y.dim(-1) == n, "gemm",
            x.describe() + " x " + w.describe() + "^T -> " + y.describe());
    if (m == 0 || n == 0) return;
    int64_t lda = 0, ldb = 0;
    const float* a = as_f32_rows(x, scratch_a_, lda);
    const float* b = as_f32_rows(w, scratch_b_, ldb);
    float* c = nullptr;
    int64_t ldc = n;
    if (y.dtype == ElemType::kF32) {
      c = y.as<float>();
      ldc = row_stride(y);
    } else {
      scratch_c_.assign(static_cast<size_t>(m * n), 0.0f);
      if (accumulate)
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) scratch_c_[i * n + j] = load(y.data, y.dtype, i * row_stride(y) + j);
      c = scratch_c_.data();
    }
#ifdef PARASOL_HAVE_BLAS
    if (k > 0) {
      cblas_sgemm(101 /*RowMajor*/, 111 /*NoTrans*/, 112 /*Trans*/, static_cast<int>(m), static_cast<int>(n),
                  static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb),
                  accumulate ? 1.0f : 0.0f, c, static_cast<int>(ldc));
    } else if (!accumulate) {
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    }
#else
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        float s = 0.0f;
        for (int64_t l = 0; l < k; ++l) s += a[i * lda + l] * b[j * ldb + l];
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
      }
#endif
    if (y.dtype != ElemType::kF32)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) store(y.data, y.dtype, i * row_stride(y) + j, scratch_c_[i * n + j]);
  }

  void add_bias(const Tensor& y, const Tensor& bias) override {
    require(bias.numel() == y.dim(-1), "add_bias", y.describe() + " + " + bias.describe());
    int64_t r = rows_of(y), c = y.dim(-1), ry = row_stride(y);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j)
        store(y.data, y.dtype, i * ry + j, load(y.data, y.dtype, i * ry + j) + load(bias.data, bias.dtype, j));
  }

  void rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, const RopeParams& p) override {
    require(x.rank() == 3 && positions.dtype == ElemType::kI32 && positions.numel() == x.dim(0) &&
                inv_freq.dtype == ElemType::kF32 && inv_freq.numel() * 2 == p.rot_dim &&
                p.rot_offset + p.rot_dim <= x.dim(2),
            "rope", x.describe() + " pos " + positions.describe() + " inv_freq " + inv_freq.describe());
    int64_t half = p.rot_dim / 2, st = x.stride(0), sh = x.stride(1);
    const int32_t* pos = positions.as<int32_t>();
    const float* f = inv_freq.as<float>();
    std::vector<float> c(half), s(half), v(p.rot_dim);
    for (int64_t t = 0; t < x.dim(0); ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float ang = static_cast<float>(pos[t]) * f[i];
        c[i] = round_to(x.dtype, std::cos(ang) * p.attention_scaling);
        s[i] = round_to(x.dtype, std::sin(ang) * p.attention_scaling);
      }
      for (int64_t h = 0; h < x.dim(1); ++h) {
        int64_t base = t * st + h * sh + p.rot_offset;
        for (int64_t i = 0; i < p.rot_dim; ++i) v[i] = load(x.data, x.dtype, base + i);
        for (int64_t i = 0; i < half; ++i) {
          float x1 = p.interleaved ? v[2 * i] : v[i];
          float x2 = p.interleaved ? v[2 * i + 1] : v[i + half];
          store(x.data, x.dtype, base + i, x1 * c[i] - x2 * s[i]);
          store(x.data, x.dtype, base + i + half, x2 * c[i] + x1 * s[i]);
        }
      }
    }
  }

  void silu_and_mul(const Tensor& gu, const Tensor& out) override {
    int64_t f = out.dim(-1);
    require(gu.dim(-1) == 2 * f && rows_of(gu) == rows_of(out), "silu_and_mul", gu.describe() + " -> " + out.describe());
    int64_t r = rows_of(gu), rg = row_stride(gu), ro = row_stride(out);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < f; ++j) {
        float g = load(gu.data, gu.dtype, i * rg + j), u = load(gu.data, gu.dtype, i * rg + f + j);
        float silu = round_to(gu.dtype, g / (1.0f + std::exp(-g)));
        store(out.data, out.dtype, i * ro + j, silu * u);
      }
  }

  void kv_append(const Tensor& src, const Tensor& slots, const Tensor& cache) override {
    require(slots.dtype == ElemType::kI32 && slots.numel() == rows_of(src) && src.dim(-1) * rows_of(src) ==
                src.numel() && cache.numel() / cache.dim(0) == src.numel() / std::max<int64_t>(1, rows_of(src)),
            "kv_append", src.describe() + " slots " + slots.describe() + " -> " + cache.describe());
    int64_t w = src.dim(-1), rs = row_stride(src), rows = cache.dim(0);
    const int32_t* sl = slots.as<int32_t>();
    for (int64_t t = 0; t < slots.numel(); ++t) {
      require(sl[t] >= 0 && sl[t] < rows, "kv_append", "slot " + std::to_string(sl[t]) + " outside the cache");
      for (int64_t j = 0; j < w; ++j) store(cache.data, cache.dtype, sl[t] * w + j, load(src.data, src.dtype, t * rs + j));
    }
  }

  void attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const SeqBatch& seqs, const HeadMap& hm,
                 float scale, const Tensor& out) override {
    int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), Hkv = kc.dim(1), Dv = vc.dim(2);
    require(q.rank() == 3 && kc.rank() == 3 && vc.rank() == 3 && kc.dim(2) == D && out.dim(0) == T &&
                out.numel() == T * H * Dv && seqs.tokens() == T,
            "attention", "q " + q.describe() + " k " + kc.describe() + " v " + vc.describe() + " out " + out.describe());
    std::vector<float> qv(D), sc, acc(Dv);
    int64_t t0 = 0;
    for (size_t s = 0; s < seqs.q_lens.size(); ++s) {
      int64_t ql = seqs.q_lens[s], ctx = seqs.ctx_lens[s];
      for (int64_t i = 0; i < ql; ++i) {
        int64_t t = t0 + i, pos = ctx - ql + i;
        sc.resize(static_cast<size_t>(pos + 1));
        for (int64_t h = 0; h < H; ++h) {
          int64_t kvh = (hm.q_head_offset + h) / hm.group - hm.kv_head_offset;
          require(kvh >= 0 && kvh < Hkv, "attention", "KV head out of range");
          for (int64_t d = 0; d < D; ++d) qv[d] = load(q.data, q.dtype, t * q.stride(0) + h * q.stride(1) + d);
          float mx = -INFINITY;
          for (int64_t j = 0; j <= pos; ++j) {
            int64_t slot = slot_of(seqs, s, j);
            float dot = 0.0f;
            for (int64_t d = 0; d < D; ++d) dot += qv[d] * load(kc.data, kc.dtype, (slot * Hkv + kvh) * D + d);
            sc[j] = dot * scale;
            mx = std::max(mx, sc[j]);
          }
          float sum = 0.0f;
          for (int64_t j = 0; j <= pos; ++j) {
            sc[j] = std::exp(sc[j] - mx);
            sum += sc[j];
          }
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int64_t j = 0; j <= pos; ++j) {
            float pj = round_to(q.dtype, sc[j] / sum);
            int64_t slot = slot_of(seqs, s, j);
            for (int64_t d = 0; d < Dv; ++d) acc[d] += pj * load(vc.data, vc.dtype, (slot * Hkv + kvh) * Dv + d);
          }
          for (int64_t d = 0; d < Dv; ++d) store(out.data, out.dtype, (t * H + h) * Dv + d, acc[d]);
        }
      }
      t0 += ql;
    }
  }

  void mla_attention(const Tensor& q, const Tensor& lat, const Tensor& wkvb, const SeqBatch& seqs, int64_t nope,
                     int64_t vd, float scale, const Tensor& out) override {
    int64_t T = q.dim(0), H = q.dim(1), R = q.dim(2) - nope, L = lat.dim(1) - R;
    require(q.rank() == 3 && lat.rank() == 2 && wkvb.dim(0) == H * (nope + vd) && wkvb.dim(1) == L &&
                out.numel() == T * H * vd && seqs.tokens() == T,
            "mla_attention", "q " + q.describe() + " latent " + lat.describe() + " kv_b " + wkvb.describe());
    std::vector<float> qa(L), qr(R), sc, ol(L);
    int64_t W = L + R, t0 = 0;
    for (size_t s = 0; s < seqs.q_lens.size(); ++s) {
      int64_t ql = seqs.q_lens[s], ctx = seqs.ctx_lens[s];
      for (int64_t i = 0; i < ql; ++i) {
        int64_t t = t0 + i, pos = ctx - ql + i;
        sc.resize(static_cast<size_t>(pos + 1));
        for (int64_t h = 0; h < H; ++h) {
          int64_t qb = t * q.stride(0) + h * q.stride(1), wb = h * (nope + vd);
          std::fill(qa.begin(), qa.end(), 0.0f);
          for (int64_t d = 0; d < nope; ++d) {
            float qd = load(q.data, q.dtype, qb + d);
            for (int64_t l = 0; l < L; ++l) qa[l] += qd * load(wkvb.data, wkvb.dtype, (wb + d) * L + l);
          }
          for (int64_t d = 0; d < R; ++d) qr[d] = load(q.data, q.dtype, qb + nope + d);
          float mx = -INFINITY;
          for (int64_t j = 0; j <= pos; ++j) {
            int64_t slot = slot_of(seqs, s, j);
            float dot = 0.0f;
            for (int64_t l = 0; l < L; ++l) dot += qa[l] * load(lat.data, lat.dtype, slot * W + l);
            for (int64_t d = 0; d < R; ++d) dot += qr[d] * load(lat.data, lat.dtype, slot * W + L + d);
            sc[j] = dot * scale;
            mx = std::max(mx, sc[j]);
          }
          float sum = 0.0f;
          for (int64_t j = 0; j <= pos; ++j) {
            sc[j] = std::exp(sc[j] - mx);
            sum += sc[j];
          }
          std::fill(ol.begin(), ol.end(), 0.0f);
          for (int64_t j = 0; j <= pos; ++j) {
            float pj = round_to(q.dtype, sc[j] / sum);
            int64_t slot = slot_of(seqs, s, j);
            for (int64_t l = 0; l < L; ++l) ol[l] += pj * load(lat.data, lat.dtype, slot * W + l);
          }
          for (int64_t d = 0; d < vd; ++d) {
            float o = 0.0f;
            for (int64_t l = 0; l < L; ++l) o += ol[l] * load(wkvb.data, wkvb.dtype, (wb + nope + d) * L + l);
            store(out.data, out.dtype, (t * H + h) * vd + d, o);
          }
        }
      }
      t0 += ql;
    }
  }

  void moe_gate(const Tensor& logits, const Tensor& bias, const MoeRouting& r, const Tensor& ids,
                const Tensor& weights) override {
    int64_t T = logits.dim(0), E = logits.dim(1), K = r.top_k;
    require(logits.dtype == ElemType::kF32 && ids.dtype == ElemType::kI32 && ids.numel() == T * K &&
                weights.numel() == T * K && K <= E && E % r.n_group == 0 && r.topk_group <= r.n_group &&
                (bias.empty() || bias.numel() == E),
            "moe_gate", logits.describe() + " top_k " + std::to_string(K));
    std::vector<float> s(E), c(E), gs(r.n_group);
    std::vector<int32_t> order(E), gorder(r.n_group);
    auto top = [](std::vector<int32_t>& idx, const std::vector<float>& v, int64_t k) {
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
    };
    for (int64_t t = 0; t < T; ++t) {
      const float* l = logits.as<float>() + t * row_stride(logits);
      if (r.sigmoid) {
        for (int64_t e = 0; e < E; ++e) {
          s[e] = 1.0f / (1.0f + std::exp(-l[e]));
          c[e] = s[e] + (bias.empty() ? 0.0f : load(bias.data, bias.dtype, e));
        }
        if (r.n_group > 1) {
          int64_t gsz = E / r.n_group;
          for (int64_t g = 0; g < r.n_group; ++g) {
            std::vector<float> m(c.begin() + g * gsz, c.begin() + (g + 1) * gsz);
            std::partial_sort(m.begin(), m.begin() + std::min<int64_t>(2, gsz), m.end(), std::greater<float>());
            gs[g] = m[0] + (gsz > 1 ? m[1] : 0.0f);
          }
          top(gorder, gs, r.topk_group);
          std::vector<bool> keep(r.n_group, false);
          for (int64_t g = 0; g < r.topk_group; ++g) keep[gorder[g]] = true;
          for (int64_t e = 0; e < E; ++e)
            if (!keep[e / gsz]) c[e] = 0.0f;
        }
        top(order, c, K);
      } else {
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t e = 0; e < E; ++e) mx = std::max(mx, l[e]);
        for (int64_t e = 0; e < E; ++e) sum += (s[e] = std::exp(l[e] - mx));
        for (int64_t e = 0; e < E; ++e) s[e] /= sum;
        top(order, s, K);
      }
      float tot = 0.0f;
      for (int64_t k = 0; k < K; ++k) tot += s[order[k]];
      if (r.sigmoid) tot += 1e-20f;
      for (int64_t k = 0; k < K; ++k) {
        float w = s[order[k]];
        if (r.norm_topk_prob) w /= tot;
        ids.as<int32_t>()[t * K + k] = order[k];
        store(weights.data, weights.dtype, t * K + k, w * r.routed_scaling_factor);
      }
    }
  }

  void gather_rows(const Tensor& src, const Tensor& idx, const Tensor& dst) override {
    require(idx.dtype == ElemType::kI32 && idx.numel() == rows_of(dst) && src.dim(-1) == dst.dim(-1), "gather_rows",
            src.describe() + " idx " + idx.describe() + " -> " + dst.describe());
    int64_t w = src.dim(-1), rs = row_stride(src), rd = row_stride(dst), n = rows_of(src);
    for (int64_t i = 0; i < idx.numel(); ++i) {
      int64_t r = idx.as<int32_t>()[i];
      require(r >= 0 && r < n, "gather_rows", "row index out of range");
      for (int64_t j = 0; j < w; ++j) store(dst.data, dst.dtype, i * rd + j, load(src.data, src.dtype, r * rs + j));
    }
  }

  void scatter_add_rows(const Tensor& src, const Tensor& idx, const Tensor& wts, const Tensor& dst) override {
    require(idx.dtype == ElemType::kI32 && idx.numel() == rows_of(src) && src.dim(-1) == dst.dim(-1) &&
                (wts.empty() || wts.numel() == idx.numel()),
            "scatter_add_rows", src.describe() + " idx " + idx.describe() + " -> " + dst.describe());
    int64_t w = src.dim(-1), rs = row_stride(src), rd = row_stride(dst), n = rows_of(dst);
    for (int64_t i = 0; i < idx.numel(); ++i) {
      int64_t r = idx.as<int32_t>()[i];
      require(r >= 0 && r < n, "scatter_add_rows", "row index out of range");
      float wi = wts.empty() ? 1.0f : load(wts.data, wts.dtype, i);
      for (int64_t j = 0; j < w; ++j)
        store(dst.data, dst.dtype, r * rd + j,
              load(dst.data, dst.dtype, r * rd + j) + wi * load(src.data, src.dtype, i * rs + j));
    }
  }

  void argmax(const Tensor& logits, const Tensor& out) override {
    require(out.dtype == ElemType::kI32 && out.numel() == rows_of(logits), "argmax", logits.describe());
    int64_t v = logits.dim(-1), rl = row_stride(logits);
    for (int64_t t = 0; t < rows_of(logits); ++t) {
      int64_t best = 0;
      float bv = -INFINITY;
      for (int64_t j = 0; j < v; ++j) {
        float x = load(logits.data, logits.dtype, t * rl + j);
        if (x > bv) {
          bv = x;
          best = j;
        }
      }
      out.as<int32_t>()[t] = static_cast<int32_t>(best);
    }
  }

  std::unique_ptr<Event> create_event() override { return std::make_unique<CpuEvent>(); }
  void record(Event& e) override { static_cast<CpuEvent&>(e).at = std::chrono::steady_clock::now(); }
  double elapsed_s(Event& a, Event& b) override {
    return std::chrono::duration<double>(static_cast<CpuEvent&>(b).at - static_cast<CpuEvent&>(a).at).count();
  }
  void synchronize() override {}

 private:
  static int64_t slot_of(const SeqBatch& seqs, size_t s, int64_t pos) {
    return static_cast<int64_t>(seqs.block_tables[s][static_cast<size_t>(pos / seqs.block_tokens)]) *
               seqs.block_tokens + pos % seqs.block_tokens;
  }

  std::vector<float> scratch_a_, scratch_b_, scratch_c_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options) { return std::make_unique<CpuBackend>(options); }

}  // namespace parasol::exec

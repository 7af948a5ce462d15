// Op conformance (in the spirit of ggml's test-backend-ops): every op of every available backend, on fresh random
// inputs, against a naive double-precision reference written here from the HF definitions (not from the cpu
// backend's code). Backends that cannot start here (no GPU) are skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "exec/backend.hpp"
#include "core/common/error.hpp"
#include "exec/half.hpp"

namespace parasol::exec {
namespace {

struct Dev {
  Backend& be;
  std::vector<OwnedTensor> keep;
  Tensor f(const std::vector<float>& v, std::vector<int64_t> shape, ElemType t = ElemType::kF32) {
    keep.emplace_back(be, t, std::move(shape));
    upload_f32(be, v, *keep.back());
    return *keep.back();
  }
  Tensor i(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
    keep.emplace_back(be, ElemType::kI32, std::move(shape));
    upload_i32(be, v, *keep.back());
    return *keep.back();
  }
  Tensor zeros(std::vector<int64_t> shape, ElemType t = ElemType::kF32) {
    keep.emplace_back(be, t, std::move(shape));
    be.fill_zero(*keep.back());
    return *keep.back();
  }
};

std::vector<float> rnd(std::mt19937_64& g, size_t n, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> bf16_round(std::vector<float> v) {
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1e-30;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * scale) << what << " at " << i << " (scale " << scale << ")";
}

class OpConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    try {
      be_ = make_backend(GetParam(), {0, 1});
    } catch (const Error& e) {
      GTEST_SKIP() << GetParam() << " backend unavailable: " << e.what();
    }
  }
  std::unique_ptr<Backend> be_;
  std::mt19937_64 g_{12345};
};

TEST_P(OpConformance, GemmMatchesNaiveForFp32Bf16AndStridedViews) {
  Dev d{*be_, {}};
  for (int64_t M : {1, 7, 33})
    for (ElemType wt : {ElemType::kF32, ElemType::kBf16}) {
      const int64_t N = 19, K = 40;
      auto x = rnd(g_, M * (K + 5)), w = rnd(g_, N * K), y0 = rnd(g_, M * N);
      auto wr = wt == ElemType::kBf16 ? bf16_round(w) : w;
      Tensor X = d.f(x, {M, K + 5}).cols(2, K + 2), W = d.f(w, {N, K}, wt), Y = d.f(y0, {M, N});
      be_->gemm(X, W, Y, true);
      std::vector<double> want(M * N);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double s = y0[i * N + j];
          for (int64_t k = 0; k < K; ++k) s += double(x[i * (K + 5) + 2 + k]) * wr[j * K + k];
          want[i * N + j] = s;
        }
      expect_close(download_f32(*be_, Y), want, 1e-5, "gemm");
    }
}

TEST_P(OpConformance, EmbeddingRmsNormAddSiluArgmax) {
  Dev d{*be_, {}};
  const int64_t T = 6, H = 24, V = 10, begin = 3;
  std::vector<int32_t> ids{0, 3, 5, 12, 9, 4};
  auto table = rnd(g_, V * H);
  Tensor out = d.zeros({T, H});
  be_->embedding(d.i(ids, {T}), d.f(table, {V, H}), begin, out);
  std::vector<double> want(T * H, 0.0);
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] >= begin && ids[t] < begin + V)
      for (int64_t j = 0; j < H; ++j) want[t * H + j] = table[(ids[t] - begin) * H + j];
  expect_close(download_f32(*be_, out), want, 0, "embedding");

  auto x = rnd(g_, T * H, -3, 3), w = rnd(g_, H, 0.5, 1.5);
  Tensor y = d.zeros({T, H});
  be_->rms_norm(d.f(x, {T, H}), d.f(w, {H}), 1e-5f, y);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t j = 0; j < H; ++j) ss += double(x[t * H + j]) * x[t * H + j];
    double inv = 1.0 / std::sqrt(ss / H + 1e-5);
    for (int64_t j = 0; j < H; ++j) want[t * H + j] = w[j] * x[t * H + j] * inv;
  }
  expect_close(download_f32(*be_, y), want, 1e-6, "rms_norm");

  auto a = rnd(g_, T * H), b = rnd(g_, T * H);
  Tensor A = d.f(a, {T, H});
  be_->add(A, d.f(b, {T, H}), A);
  for (int64_t i = 0; i < T * H; ++i) want[i] = double(a[i]) + b[i];
  expect_close(download_f32(*be_, A), want, 1e-7, "add");

  auto gu = rnd(g_, T * 2 * H, -4, 4);
  Tensor act = d.zeros({T, H});
  be_->silu_and_mul(d.f(gu, {T, 2 * H}), act);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) {
      double gg = gu[t * 2 * H + j];
      want[t * H + j] = gg / (1 + std::exp(-gg)) * gu[t * 2 * H + H + j];
    }
  expect_close(download_f32(*be_, act), want, 1e-6, "silu_and_mul");

  Tensor am = d.zeros({T}, ElemType::kI32);
  be_->argmax(d.f(x, {T, H}), am);
  auto got = download_i32(*be_, am);
  for (int64_t t = 0; t < T; ++t)
    EXPECT_EQ(got[t], std::max_element(x.begin() + t * H, x.begin() + (t + 1) * H) - (x.begin() + t * H));
}

TEST_P(OpConformance, RopeHalfSplitAndInterleavedWithOffset) {
  Dev d{*be_, {}};
  const int64_t T = 5, Hh = 3, D = 20, off = 4, rot = 16;
  std::vector<int32_t> pos{0, 1, 7, 100, 4095};
  std::vector<float> inv(rot / 2);
  for (int64_t i = 0; i < rot / 2; ++i) inv[i] = 1.0f / std::pow(10000.0f, float(2 * i) / rot);
  for (bool inter : {false, true}) {
    auto x = rnd(g_, T * Hh * D);
    Tensor X = d.f(x, {T, Hh, D});
    be_->rope(X, d.i(pos, {T}), d.f(inv, {rot / 2}), RopeParams{off, rot, inter, 1.0f});
    std::vector<double> want(x.begin(), x.end());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < Hh; ++h) {
        const float* r = x.data() + (t * Hh + h) * D + off;
        std::vector<double> v(r, r + rot);
        if (inter) {  // HF apply_rotary_pos_emb_interleave: de-interleave, then half-split
          std::vector<double> u(rot);
          for (int64_t i = 0; i < rot / 2; ++i) {
            u[i] = v[2 * i];
            u[i + rot / 2] = v[2 * i + 1];
          }
          v = u;
        }
        for (int64_t i = 0; i < rot; ++i) {
          double ang = double(float(pos[t]) * inv[i % (rot / 2)]);
          double rh = i < rot / 2 ? -v[i + rot / 2] : v[i - rot / 2];  // rotate_half
          want[(t * Hh + h) * D + off + i] = v[i] * std::cos(ang) + rh * std::sin(ang);
        }
      }
    expect_close(download_f32(*be_, X), want, 2e-6, inter ? "rope interleaved" : "rope");
  }
}

// Paged causal GQA attention over two sequences with scattered blocks.
TEST_P(OpConformance, PagedGqaAttentionMatchesDenseSoftmax) {
  Dev d{*be_, {}};
  const int64_t Hq = 4, Hkv = 2, D = 8, bt = 4, slots = 64;
  SeqBatch sb;
  sb.block_tokens = bt;
  sb.q_lens = {3, 1};
  sb.ctx_lens = {7, 10};
  sb.block_tables = {{5, 2}, {0, 9, 3}};
  const int64_t T = 4;
  auto q = rnd(g_, T * Hq * D), kc = rnd(g_, slots * Hkv * D), vc = rnd(g_, slots * Hkv * D);
  Tensor out = d.zeros({T, Hq, D});
  HeadMap hm{2, 0, 0};
  be_->attention(d.f(q, {T, Hq, D}), d.f(kc, {slots, Hkv, D}), d.f(vc, {slots, Hkv, D}), sb, hm, 0.3f, out);
  std::vector<double> want(T * Hq * D);
  int64_t t = 0;
  for (size_t s = 0; s < 2; ++s)
    for (int64_t i = 0; i < sb.q_lens[s]; ++i, ++t) {
      int64_t p = sb.ctx_lens[s] - sb.q_lens[s] + i;
      for (int64_t h = 0; h < Hq; ++h) {
        int64_t kvh = h / 2;
        std::vector<double> sc(p + 1);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= p; ++j) {
          int64_t slot = sb.block_tables[s][j / bt] * bt + j % bt;
          double dot = 0;
          for (int64_t e = 0; e < D; ++e) dot += double(q[(t * Hq + h) * D + e]) * kc[(slot * Hkv + kvh) * D + e];
          sc[j] = dot * 0.3;
          mx = std::max(mx, sc[j]);
        }
        for (auto& x : sc) sum += (x = std::exp(x - mx));
        for (int64_t e = 0; e < D; ++e) {
          double o = 0;
          for (int64_t j = 0; j <= p; ++j)
            o += sc[j] / sum * vc[((sb.block_tables[s][j / bt] * bt + j % bt) * Hkv + kvh) * D + e];
          want[(t * Hq + h) * D + e] = o;
        }
      }
    }
  expect_close(download_f32(*be_, out), want, 1e-5, "attention");
}

// MLA in the absorbed form equals the expanded form: k_nope / v = kv_b(c_kv) per head, k_rope shared by the heads.
TEST_P(OpConformance, MlaAbsorbedEqualsExpandedAttention) {
  Dev d{*be_, {}};
  const int64_t H = 2, nope = 6, R = 4, L = 10, vd = 5, bt = 4, slots = 16;
  SeqBatch sb;
  sb.block_tokens = bt;
  sb.q_lens = {2};
  sb.ctx_lens = {6};
  sb.block_tables = {{3, 1}};
  const int64_t T = 2;
  auto q = rnd(g_, T * H * (nope + R)), lat = rnd(g_, slots * (L + R)), wkvb = rnd(g_, H * (nope + vd) * L);
  Tensor out = d.zeros({T, H, vd});
  be_->mla_attention(d.f(q, {T, H, nope + R}), d.f(lat, {slots, L + R}), d.f(wkvb, {H * (nope + vd), L}), sb, nope,
                     vd, 0.25f, out);
  std::vector<double> want(T * H * vd);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      int64_t p = 4 + t;
      std::vector<double> sc(p + 1);
      std::vector<std::vector<double>> v(p + 1, std::vector<double>(vd));
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j <= p; ++j) {
        int64_t slot = sb.block_tables[0][j / bt] * bt + j % bt;
        const float* c = lat.data() + slot * (L + R);
        double dot = 0;
        for (int64_t e = 0; e < nope; ++e) {
          double k = 0;
          for (int64_t l = 0; l < L; ++l) k += double(wkvb[(h * (nope + vd) + e) * L + l]) * c[l];
          dot += q[(t * H + h) * (nope + R) + e] * k;
        }
        for (int64_t e = 0; e < R; ++e) dot += double(q[(t * H + h) * (nope + R) + nope + e]) * c[L + e];
        for (int64_t e = 0; e < vd; ++e) {
          double vv = 0;
          for (int64_t l = 0; l < L; ++l) vv += double(wkvb[(h * (nope + vd) + nope + e) * L + l]) * c[l];
          v[j][e] = vv;
        }
        sc[j] = dot * 0.25;
        mx = std::max(mx, sc[j]);
      }
      for (auto& x : sc) sum += (x = std::exp(x - mx));
      for (int64_t e = 0; e < vd; ++e) {
        double o = 0;
        for (int64_t j = 0; j <= p; ++j) o += sc[j] / sum * v[j][e];
        want[(t * H + h) * vd + e] = o;
      }
    }
  expect_close(download_f32(*be_, out), want, 1e-5, "mla_attention");
}

TEST_P(OpConformance, MoeGateSoftmaxAndGroupLimitedSigmoid) {
  Dev d{*be_, {}};
  const int64_t T = 9, E = 16, K = 4;
  auto logits = rnd(g_, T * E, -3, 3), bias = rnd(g_, E, -0.3f, 0.3f);
  for (bool sig : {false, true}) {
    MoeRouting r;
    r.top_k = K;
    r.sigmoid = sig;
    r.n_group = sig ? 4 : 1;
    r.topk_group = sig ? 2 : 1;
    r.routed_scaling_factor = sig ? 2.5f : 1.0f;
    Tensor ids = d.zeros({T, K}, ElemType::kI32), w = d.zeros({T, K});
    be_->moe_gate(d.f(logits, {T, E}), sig ? d.f(bias, {E}) : Tensor(), r, ids, w);
    auto gi = download_i32(*be_, ids);
    auto gw = download_f32(*be_, w);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> s(E), c(E);
      double mx = *std::max_element(logits.begin() + t * E, logits.begin() + (t + 1) * E), z = 0;
      for (int64_t e = 0; e < E; ++e) {
        double l = logits[t * E + e];
        s[e] = sig ? 1 / (1 + std::exp(-l)) : std::exp(l - mx);
        z += s[e];
      }
      for (int64_t e = 0; e < E; ++e) {
        if (!sig) s[e] /= z;
        c[e] = s[e] + (sig ? bias[e] : 0.0);
      }
      if (sig) {  // group score: sum of the group's top-2; keep the best 2 of 4 groups
        std::vector<std::pair<double, int>> gs;
        for (int g = 0; g < 4; ++g) {
          std::vector<double> m(c.begin() + g * 4, c.begin() + g * 4 + 4);
          std::sort(m.rbegin(), m.rend());
          gs.push_back({m[0] + m[1], g});
        }
        std::sort(gs.begin(), gs.end(), [](auto a, auto b) { return a.first > b.first; });
        for (int64_t e = 0; e < E; ++e)
          if (e / 4 != gs[0].second && e / 4 != gs[1].second) c[e] = 0.0;
      }
      std::vector<int> idx(E);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return c[a] > c[b]; });
      double tot = 0;
      for (int k = 0; k < K; ++k) tot += s[idx[k]];
      for (int k = 0; k < K; ++k) {
        EXPECT_EQ(gi[t * K + k], idx[k]) << "token " << t << " sigmoid " << sig;
        EXPECT_NEAR(gw[t * K + k], s[idx[k]] / tot * r.routed_scaling_factor, 1e-6);
      }
    }
  }
}

TEST_P(OpConformance, KvAppendGatherScatterAddConvert) {
  Dev d{*be_, {}};
  const int64_t T = 5, W = 7, S = 12;
  auto src = rnd(g_, T * W);
  std::vector<int32_t> slots{11, 0, 4, 5, 2};
  Tensor cache = d.zeros({S, W}, ElemType::kBf16);
  be_->kv_append(d.f(src, {T, W}), d.i(slots, {T}), cache);
  auto got = download_f32(*be_, cache);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < W; ++j) EXPECT_EQ(got[slots[t] * W + j], bf16_to_f32(f32_to_bf16(src[t * W + j])));

  std::vector<int32_t> idx{4, 4, 0, 2};
  Tensor rows = d.zeros({4, W});
  be_->gather_rows(d.f(src, {T, W}), d.i(idx, {4}), rows);
  auto r = download_f32(*be_, rows);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < W; ++j) EXPECT_EQ(r[i * W + j], src[idx[i] * W + j]);

  auto wts = rnd(g_, 4);
  auto base = rnd(g_, T * W);
  Tensor dst = d.f(base, {T, W});
  be_->scatter_add_rows(rows, d.i(idx, {4}), d.f(wts, {4}), dst);
  std::vector<double> want(base.begin(), base.end());
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < W; ++j) want[idx[i] * W + j] += double(wts[i]) * src[idx[i] * W + j];
  expect_close(download_f32(*be_, dst), want, 1e-6, "scatter_add_rows");

  Tensor h = d.zeros({T, W}, ElemType::kF16);
  be_->convert(d.f(src, {T, W}), h);
  auto back = download_f32(*be_, h);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_NEAR(back[i], src[i], 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Backends, OpConformance, ::testing::ValuesIn(available_backends()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace parasol::exec

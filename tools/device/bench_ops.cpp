// The ceilings (copy bandwidth, bf16 GEMM peak) and the sweep of every op over the shapes of Llama-3.1-8B-like and
// DeepSeek-V3-like layers, each timed with CUDA events (warm-up, median, L2 flushed between repetitions). FLOPs and
// bytes per op follow core/plan/build_step.cpp, so the rows feed the cost model's calibration table directly.
#include <cmath>
#include <numeric>
#include <random>

#include "kernels/kernels.cuh"
#include "tools/device/bench_common.hpp"

namespace parasol::device_check {
namespace {

namespace k = parasol::kernels;
using bf16 = k::bf16;

struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 256))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(DevBuf&& o) noexcept : p(o.p) { o.p = nullptr; }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf& operator=(DevBuf&&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

DevBuf random_bf16(int64_t n, uint64_t seed, cudaStream_t s, float scale = 1.0f) {
  DevBuf b(static_cast<size_t>(n) * 2);
  CHECK_CUDA(k::fill_random_bf16(b.as<bf16>(), n, seed, scale, s));
  return b;
}

void check_launch(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

std::string shape_of(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
  return s;
}

// Pages of `batch` sequences of `ctx` tokens, shuffled over the pool.
std::vector<int32_t> paged_tables(int64_t batch, int64_t pages_per_seq, uint64_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(batch * pages_per_seq));
  std::iota(t.begin(), t.end(), 0);
  std::mt19937_64 rng(seed);
  for (size_t i = t.size() - 1; i > 0; --i) std::swap(t[i], t[static_cast<size_t>(rng() % (i + 1))]);
  return t;
}

int32_t* upload_i32(DevBuf& b, const std::vector<int32_t>& h, cudaStream_t s) {
  CHECK_CUDA(cudaMemcpyAsync(b.p, h.data(), h.size() * 4, cudaMemcpyHostToDevice, s));
  CHECK_CUDA(cudaStreamSynchronize(s));
  return b.as<int32_t>();
}

}  // namespace

Ceilings measure_ceilings(Bench& bench, cublasHandle_t h, cudaStream_t s) {
  Ceilings c;
  const size_t bytes = size_t{1} << 30;
  DevBuf a(bytes), b(bytes);
  CHECK_CUDA(cudaMemsetAsync(a.p, 1, bytes, s));
  const double t =
      bench.median_s([&] { CHECK_CUDA(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, s)); }, 2, 10, false);
  c.copy_Bps = 2.0 * static_cast<double>(bytes) / t;
  const int64_t n = 8192;
  DevBuf x = random_bf16(n * n, 1, s), w = random_bf16(n * n, 2, s), y(static_cast<size_t>(n * n) * 2);
  const double tg = bench.median_s([&] { gemm_bf16(h, x.p, w.p, y.p, n, n, n); }, 3, 10, false);
  c.gemm_flops = 2.0 * n * n * n / tg;
  return c;
}

void sweep_ops(Bench& bench, cublasHandle_t h, cudaStream_t s, bool quick) {
  const int reps = quick ? 5 : 15;
  auto add = [&](Measured m, const std::function<void()>& fn, int r) {
    m.time_s = bench.median_s(fn, 2, r);
    bench.rows.push_back(m);
  };
  const int64_t H = 4096, F = 14336, V = 128256;
  // ---- GEMMs of the 8B model (n, k) at growing m.
  {
    const std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> shapes{
        {"qkv", {6144, H}}, {"o", {H, H}}, {"gate_up", {2 * F, H}}, {"down", {H, F}}, {"lm_head", {V, H}}};
    const std::vector<int64_t> ms =
        quick ? std::vector<int64_t>{1, 64, 4096} : std::vector<int64_t>{1, 16, 64, 256, 1024, 4096, 8192};
    DevBuf x = random_bf16(8192 * F, 3, s), y(static_cast<size_t>(8192) * V * 2);
    for (const auto& [name, nk] : shapes) {
      DevBuf w = random_bf16(nk.first * nk.second, 4, s, 0.02f);
      for (int64_t m : ms) {
        Measured r;
        r.kind = "gemm";
        r.label = "gemm " + name;
        r.shape = shape_of({m, nk.first, nk.second});
        r.m = m, r.n = nk.first, r.k = nk.second, r.tokens = m;
        r.flops = 2.0 * m * nk.first * nk.second;
        r.bytes = 2.0 * (m * nk.second + m * nk.first + nk.first * nk.second);
        add(
            r, [&] { gemm_bf16(h, x.p, w.p, y.p, m, nk.first, nk.second); }, m >= 4096 ? 5 : reps);
      }
    }
  }
  const std::vector<int64_t> rows =
      quick ? std::vector<int64_t>{1, 256, 16384} : std::vector<int64_t>{1, 16, 64, 256, 1024, 4096, 16384};
  {  // ---- RMSNorm, plain and with the fused residual add.
    DevBuf x = random_bf16(16384 * H, 5, s), r = random_bf16(16384 * H, 6, s), w = random_bf16(H, 7, s),
           o(static_cast<size_t>(16384) * H * 2);
    for (int64_t n : rows)
      for (bool fused : {false, true}) {
        Measured m;
        m.kind = "rmsnorm";
        m.label = fused ? "rmsnorm+residual" : "rmsnorm";
        m.shape = shape_of({n, H});
        m.n = H, m.tokens = n;
        m.flops = 4.0 * n * H;
        m.bytes = 2.0 * n * H * (fused ? 4.0 : 2.0) + 2.0 * H;
        add(
            m,
            [&] {
              check_launch(
                  k::rms_norm(x.as<bf16>(), fused ? r.as<bf16>() : nullptr, w.as<bf16>(), o.as<bf16>(), n, H, 1e-5f, s),
                  "rms_norm");
            },
            reps);
      }
  }
  {  // ---- SiLU-and-mul.
    DevBuf x = random_bf16(4096 * 2 * F, 8, s), o(static_cast<size_t>(4096) * F * 2);
    for (int64_t n : rows) {
      if (n > 4096) continue;
      Measured m;
      m.kind = "activation";
      m.label = "silu_and_mul";
      m.shape = shape_of({n, F});
      m.n = F, m.tokens = n;
      m.flops = 5.0 * n * F;
      m.bytes = 3.0 * n * F * 2;
      add(
          m, [&] { check_launch(k::silu_and_mul(x.as<bf16>(), o.as<bf16>(), n, F, s), "silu"); }, reps);
    }
  }
  {  // ---- Embedding, RoPE, KV append.
    DevBuf table = random_bf16(V * H, 9, s), out(static_cast<size_t>(16384) * H * 2);
    std::vector<int32_t> ids(16384);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919) % V);
    DevBuf idb(ids.size() * 4), slb(ids.size() * 4);
    int32_t* d_ids = upload_i32(idb, ids, s);  // also the RoPE positions (< 128k)
    std::vector<int32_t> slots(ids.size());
    std::iota(slots.begin(), slots.end(), 0);
    int32_t* d_slots = upload_i32(slb, slots, s);
    std::vector<float> inv(64);
    k::RopeParams rp;
    rp.theta = 500000.0;
    rp.scaling_type = 1;
    rp.factor = 8.0;
    k::rope_inv_freq(rp, 128, inv.data());
    DevBuf invb(inv.size() * 4);
    CHECK_CUDA(cudaMemcpy(invb.p, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
    DevBuf qkv = random_bf16(16384 * 6144, 10, s), cache(static_cast<size_t>(16384) * 2048 * 2);
    for (int64_t n : rows) {
      Measured m;
      m.kind = "embedding";
      m.label = "embedding";
      m.shape = shape_of({n, H});
      m.n = V, m.k = H, m.tokens = n;
      m.bytes = 2.0 * n * H * 2;
      add(
          m, [&] { check_launch(k::embedding(d_ids, table.as<bf16>(), out.as<bf16>(), n, H, 0, V, s), "embedding"); },
          reps);
      Measured r;
      r.kind = "rope";
      r.label = "rope (q 32 + k 8 heads)";
      r.shape = shape_of({n, 40, 128});
      r.tokens = n, r.heads = 32, r.kv_heads = 8, r.head_dim = 128;
      r.flops = 6.0 * n * 40 * 128;
      r.bytes = 2.0 * n * 40 * 128 * 2;
      add(
          r,
          [&] {
            check_launch(
                k::g_rope(qkv.p, k::Elem::kBf16, n, 40, 6144, 128, 0, 128, d_ids, invb.as<float>(), false, 1.0f, s),
                "rope");
          },
          reps);
      Measured a;
      a.kind = "kv_append";
      a.label = "kv_append (k+v)";
      a.shape = shape_of({n, 8, 128});
      a.tokens = n, a.kv_heads = 8, a.head_dim = 128;
      a.bytes = n * 2.0 * 1024 * 4;
      add(
          a,
          [&] {
            check_launch(k::scatter_rows(qkv.as<bf16>() + 4096, 6144, d_slots, cache.as<bf16>(), n, 1024, s), "kv k");
            check_launch(
                k::scatter_rows(qkv.as<bf16>() + 5120, 6144, d_slots, cache.as<bf16>() + 16384 * 1024, n, 1024, s),
                "kv v");
          },
          reps);
    }
  }
  {  // ---- Decode attention (GQA 32/8, head_dim 128, pages of 16).
    const int64_t Hq = 32, Hkv = 8, D = 128, P = 16;
    const std::vector<int64_t> batches = quick ? std::vector<int64_t>{1, 64} : std::vector<int64_t>{1, 16, 64, 256};
    const std::vector<int64_t> ctxs = quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{1024, 4096, 8192};
    const int64_t max_slots = 256 * 8192;
    DevBuf kc = random_bf16(max_slots * Hkv * D, 11, s), vc = random_bf16(max_slots * Hkv * D, 12, s);
    DevBuf q = random_bf16(256 * Hq * D, 13, s), o(static_cast<size_t>(256) * Hq * D * 2);
    for (int64_t b : batches)
      for (int64_t c : ctxs) {
        const auto tables = paged_tables(b, c / P, 14);
        DevBuf tb(tables.size() * 4), cb(static_cast<size_t>(b) * 4);
        upload_i32(tb, tables, s);
        upload_i32(cb, std::vector<int32_t>(static_cast<size_t>(b), static_cast<int32_t>(c)), s);
        const size_t ws = k::decode_attention_workspace_bytes(b, Hq, D, c);
        DevBuf w(ws);
        Measured m;
        m.kind = "attention";
        m.phase = "decode";
        m.label = "decode_attention";
        m.shape = "b" + std::to_string(b) + " ctx" + std::to_string(c);
        m.batch = b, m.tokens = b, m.heads = Hq, m.kv_heads = Hkv, m.head_dim = D;
        m.flops = 2.0 * Hq * (b * c) * 2 * D;
        m.bytes = 2.0 * b * Hq * D * 2 + static_cast<double>(b) * c * 2 * Hkv * D * 2;
        add(
            m,
            [&] {
              check_launch(k::decode_attention(q.as<bf16>(), Hq * D, kc.as<bf16>(), vc.as<bf16>(), Hkv * D,
                                               tb.as<int32_t>(), c / P, cb.as<int32_t>(), c, o.as<bf16>(), b, Hq, Hkv,
                                               k::HeadMapping{4, 0, 0}, D, P, 0.088f, w.p, ws, s),
                           "decode_attention");
            },
            reps);
      }
    // ---- Prefill attention, one sequence from empty (causal).
    const std::vector<int64_t> lens =
        quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{512, 1024, 2048, 4096, 8192};
    DevBuf qp = random_bf16(8192 * Hq * D, 15, s), op(static_cast<size_t>(8192) * Hq * D * 2);
    for (int64_t t : lens) {
      const auto tables = paged_tables(1, t / P, 16);
      DevBuf tb(tables.size() * 4), cb(4), cu(8);
      upload_i32(tb, tables, s);
      upload_i32(cb, {static_cast<int32_t>(t)}, s);
      upload_i32(cu, {0, static_cast<int32_t>(t)}, s);
      Measured m;
      m.kind = "attention";
      m.phase = "prefill";
      m.label = "prefill_attention";
      m.shape = "T" + std::to_string(t);
      m.tokens = t, m.heads = Hq, m.kv_heads = Hkv, m.head_dim = D;
      const double keys = static_cast<double>(t) * (t + 1) / 2;
      m.flops = 2.0 * Hq * keys * 2 * D;
      m.bytes = 2.0 * t * Hq * D * 2 + static_cast<double>(t) * 2 * Hkv * D * 2;
      add(
          m,
          [&] {
            check_launch(k::prefill_attention(qp.as<bf16>(), Hq * D, kc.as<bf16>(), vc.as<bf16>(), Hkv * D,
                                              tb.as<int32_t>(), t / P, cu.as<int32_t>(), cb.as<int32_t>(), t,
                                              op.as<bf16>(), 1, Hq, Hkv, k::HeadMapping{4, 0, 0}, D, P, 0.088f, s),
                         "prefill_attention");
          },
          quick ? 3 : 7);
    }
  }
  {  // ---- MLA decode (DeepSeek-V3: 128 heads, latent 576, pages of 64).
    const int64_t Hm = 128, P = 64;
    const std::vector<int64_t> batches = quick ? std::vector<int64_t>{64} : std::vector<int64_t>{1, 16, 64, 128};
    const std::vector<int64_t> ctxs = quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{1024, 4096};
    DevBuf lat = random_bf16(128 * 4096 * 576, 17, s), q = random_bf16(128 * Hm * 576, 18, s, 0.1f),
           o(static_cast<size_t>(128) * Hm * 512 * 2);
    for (int64_t b : batches)
      for (int64_t c : ctxs) {
        const auto tables = paged_tables(b, c / P, 19);
        std::vector<int32_t> cu(static_cast<size_t>(b + 1));
        for (int64_t i = 0; i <= b; ++i) cu[static_cast<size_t>(i)] = static_cast<int32_t>(i);
        DevBuf tb(tables.size() * 4), cb(static_cast<size_t>(b) * 4), cub(cu.size() * 4);
        upload_i32(tb, tables, s);
        upload_i32(cb, std::vector<int32_t>(static_cast<size_t>(b), static_cast<int32_t>(c)), s);
        upload_i32(cub, cu, s);
        const size_t ws = k::mla_workspace_bytes(b, Hm, c);
        DevBuf w(ws);
        Measured m;
        m.kind = "mla_attention";
        m.phase = "decode";
        m.label = "mla_decode";
        m.shape = "b" + std::to_string(b) + " ctx" + std::to_string(c);
        m.batch = b, m.tokens = b, m.heads = Hm, m.kv_heads = 1, m.head_dim = 576;
        m.flops = 2.0 * Hm * (b * c) * (576 + 512);
        m.bytes = static_cast<double>(b) * Hm * (576 + 512) * 2 + static_cast<double>(b) * c * 576 * 2;
        add(
            m,
            [&] {
              check_launch(
                  k::mla_attention(q.as<bf16>(), Hm * 576, lat.as<bf16>(), tb.as<int32_t>(), c / P, cub.as<int32_t>(),
                                   cb.as<int32_t>(), 1, c, o.as<bf16>(), b, b, Hm, P, 0.1352f, w.p, ws, s),
                  "mla_attention");
            },
            reps);
      }
  }
  {  // ---- MoE routing (router GEMM + top-k) and the permute / unpermute around the experts.
    const int64_t Hd = 7168;
    const std::vector<int64_t> toks = quick ? std::vector<int64_t>{256} : std::vector<int64_t>{1, 64, 256, 4096};
    DevBuf x = random_bf16(4096 * Hd, 20, s), wr = random_bf16(256 * Hd, 21, s, 0.01f);
    DevBuf logits(static_cast<size_t>(4096) * 256 * 4), ids(static_cast<size_t>(4096) * 8 * 4),
        wts(static_cast<size_t>(4096) * 8 * 4), off(257 * 4), sorted(static_cast<size_t>(4096) * 8 * 4),
        rowsb(static_cast<size_t>(4096) * 8 * 4), xs(static_cast<size_t>(4096) * 8 * Hd * 2),
        out(static_cast<size_t>(4096) * Hd * 2);
    for (int64_t t : toks) {
      Measured g;
      g.kind = "moe_gate";
      g.label = "moe_gate sigmoid 256/8";
      g.shape = shape_of({t, 256, Hd});
      g.m = t, g.n = 256, g.k = Hd, g.tokens = t;
      g.flops = 2.0 * t * Hd * 256 + 4.0 * t * 256;
      g.bytes = t * Hd * 2.0 + Hd * 256 * 2.0 + t * 256 * 4.0;
      add(
          g,
          [&] {
            gemm_bf16(h, x.p, wr.p, logits.p, t, 256, Hd, CUDA_R_32F);
            check_launch(k::moe_topk_sigmoid_grouped(logits.as<float>(), nullptr, t, 256, 8, 8, 4, true, 2.5f,
                                                     ids.as<int32_t>(), wts.as<float>(), s),
                         "moe gate");
          },
          reps);
      Measured d;
      d.kind = "moe_dispatch";
      d.label = "moe align+permute";
      d.shape = shape_of({t, 8, Hd});
      d.tokens = t;
      d.bytes = (t + t * 8.0) * Hd * 2;
      add(
          d,
          [&] {
            check_launch(k::moe_align(ids.as<int32_t>(), t, 8, 0, 256, off.as<int32_t>(), sorted.as<int32_t>(),
                                      rowsb.as<int32_t>(), s),
                         "moe align");
            check_launch(k::moe_permute(x.as<bf16>(), sorted.as<int32_t>(), t * 8, 8, Hd, xs.as<bf16>(), s), "permute");
          },
          reps);
      Measured c;
      c.kind = "moe_combine";
      c.label = "moe unpermute";
      c.shape = shape_of({t, 8, Hd});
      c.tokens = t;
      c.bytes = (t + t * 8.0) * Hd * 2;
      add(
          c,
          [&] {
            check_launch(k::moe_unpermute(xs.as<bf16>(), rowsb.as<int32_t>(), wts.as<float>(), t, 8, Hd, false,
                                          out.as<bf16>(), s),
                         "unpermute");
          },
          reps);
    }
  }
  {  // ---- Greedy sampling over the 8B vocabulary.
    DevBuf lg = random_bf16(256 * V, 22, s), idx(256 * 4);
    for (int64_t n : quick ? std::vector<int64_t>{64} : std::vector<int64_t>{1, 64, 256}) {
      Measured m;
      m.kind = "sample";
      m.label = "argmax";
      m.shape = shape_of({n, V});
      m.n = V, m.tokens = n;
      m.flops = 1.0 * n * V;
      m.bytes = 2.0 * n * V;
      add(
          m, [&] { check_launch(k::argmax_bf16(lg.as<bf16>(), V, n, V, idx.as<int32_t>(), nullptr, s), "argmax"); },
          reps);
    }
  }
}

}  // namespace parasol::device_check

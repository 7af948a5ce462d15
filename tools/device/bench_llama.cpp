// One decode step of a Llama-3.1-8B-shaped model (32 layers, hidden 4096, 32/8 heads of 128, ffn 14336, vocab 128256,
// bf16, synthetic weights) at batch 1/16/64/256 and context 1k/8k, and a 4096-token prefill, run from the kernels
// and cuBLAS directly (the calls the cuda backend makes). Timing: CUDA events around the whole step, median of
// several, eager launches and — for decode — a CUDA-graph replay of the same step. The paged KV caches are a pool of
// distinct per-layer caches; when 32 of them do not fit next to the weights, layers share caches round-robin (each
// cache stays far larger than L2, so every layer still reads its KV from HBM). The report gives time per step,
// tokens/s and the fraction of the step's ideal HBM time (weights + KV bytes over the measured copy bandwidth).
#include <cmath>
#include <cstdio>
#include <numeric>

#include "kernels/kernels.cuh"
#include "tools/device/bench_common.hpp"

namespace parasol::device_check {
namespace {

namespace k = parasol::kernels;
using bf16 = k::bf16;

constexpr int64_t kLayers = 32, kH = 4096, kHq = 32, kHkv = 8, kD = 128, kF = 14336, kV = 128256, kPage = 16;
constexpr int64_t kQkv = (kHq + 2 * kHkv) * kD;

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("llama step: ") + what + ": " + cudaGetErrorString(e));
}

bf16* alloc_bf16(int64_t n) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, static_cast<size_t>(n) * 2));
  return static_cast<bf16*>(p);
}

struct Weights {
  bf16 *embed, *lm, *lnf;
  struct Layer {
    bf16 *ln1, *ln2, *wqkv, *wo, *wgu, *wdown;
  } layer[kLayers];
  std::vector<void*> all;
  explicit Weights(cudaStream_t s) {
    uint64_t seed = 100;
    auto mk = [&](int64_t n, float scale, float fill = 0.0f) {
      bf16* p = alloc_bf16(n);
      all.push_back(p);
      if (fill != 0.0f)
        ok(k::fill_bf16(p, n, fill, s), "fill");
      else
        ok(k::fill_random_bf16(p, n, seed++, scale, s), "fill");
      return p;
    };
    embed = mk(kV * kH, 1.0f);
    lm = mk(kV * kH, 0.02f);
    lnf = mk(kH, 0, 1.0f);
    for (auto& l : layer) {
      l.ln1 = mk(kH, 0, 1.0f);
      l.ln2 = mk(kH, 0, 1.0f);
      l.wqkv = mk(kQkv * kH, 0.02f);
      l.wo = mk(kH * kH, 0.02f);
      l.wgu = mk(2 * kF * kH, 0.02f);
      l.wdown = mk(kH * kF, 0.01f);
    }
  }
  ~Weights() {
    for (void* p : all) cudaFree(p);
  }
  static double bytes() { return 2.0 * (2.0 * kV * kH + kLayers * (kQkv * kH + kH * kH + 3.0 * kF * kH)); }
};

struct Step {
  int64_t batch = 1, ctx = 1024, tokens = 1;
  bool prefill = false;
  bf16 *x, *resid, *h, *qkv, *attn, *gu, *act, *logits;
  int32_t *ids, *pos, *slots, *tables, *ctx_lens, *cu_q, *next;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  int64_t pages_per_seq = 0;
  std::vector<bf16*> kc, vc;  // pool of per-layer caches
  float* inv_freq;
  std::vector<void*> owned;

  Step(int64_t b, int64_t c, bool pre, size_t free_bytes, cudaStream_t s) : batch(b), ctx(c), prefill(pre) {
    tokens = pre ? c : b;
    auto dev = [&](size_t bytes) {
      void* p = nullptr;
      CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 256)));
      owned.push_back(p);
      return p;
    };
    const size_t T = static_cast<size_t>(tokens);
    x = static_cast<bf16*>(dev(T * kH * 2));
    resid = static_cast<bf16*>(dev(T * kH * 2));
    h = static_cast<bf16*>(dev(T * kH * 2));
    qkv = static_cast<bf16*>(dev(T * kQkv * 2));
    attn = static_cast<bf16*>(dev(T * kHq * kD * 2));
    gu = static_cast<bf16*>(dev(T * 2 * kF * 2));
    act = static_cast<bf16*>(dev(T * kF * 2));
    const size_t lrows = pre ? 1 : T;
    logits = static_cast<bf16*>(dev(lrows * kV * 2));
    next = static_cast<int32_t*>(dev(lrows * 4));
    pages_per_seq = (c + kPage - 1) / kPage;
    const int64_t slots_total = b * pages_per_seq * kPage;
    const size_t cache_bytes = static_cast<size_t>(slots_total) * kHkv * kD * 2;
    const size_t budget = free_bytes > (size_t{6} << 30) ? free_bytes - (size_t{6} << 30) : 0;
    const int64_t pool =
        std::max<int64_t>(1, std::min<int64_t>(kLayers, static_cast<int64_t>(budget / (2 * cache_bytes))));
    for (int64_t i = 0; i < pool; ++i) {
      kc.push_back(static_cast<bf16*>(dev(cache_bytes)));
      vc.push_back(static_cast<bf16*>(dev(cache_bytes)));
      ok(k::fill_random_bf16(kc.back(), static_cast<int64_t>(cache_bytes / 2), 500 + i, 1.0f, s), "kv fill");
      ok(k::fill_random_bf16(vc.back(), static_cast<int64_t>(cache_bytes / 2), 900 + i, 1.0f, s), "kv fill");
    }
    std::vector<int32_t> hid(T), hpos(T), hslot(T), htab(static_cast<size_t>(b * pages_per_seq)),
        hctx(static_cast<size_t>(b)), hcu(static_cast<size_t>(b + 1));
    std::iota(htab.begin(), htab.end(), 0);
    for (int64_t i = 0; i < b; ++i) hctx[static_cast<size_t>(i)] = static_cast<int32_t>(c);
    for (int64_t i = 0; i <= b; ++i) hcu[static_cast<size_t>(i)] = static_cast<int32_t>(pre ? i * c : i);
    for (size_t t = 0; t < T; ++t) {
      const int64_t seq = pre ? 0 : static_cast<int64_t>(t), p = pre ? static_cast<int64_t>(t) : c - 1;
      hid[t] = static_cast<int32_t>((t * 7919 + 13) % kV);
      hpos[t] = static_cast<int32_t>(p);
      hslot[t] = static_cast<int32_t>(htab[static_cast<size_t>(seq * pages_per_seq + p / kPage)] * kPage + p % kPage);
    }
    auto up = [&](const std::vector<int32_t>& v) {
      auto* p = static_cast<int32_t*>(dev(v.size() * 4));
      CHECK_CUDA(cudaMemcpy(p, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
      return p;
    };
    ids = up(hid);
    pos = up(hpos);
    slots = up(hslot);
    tables = up(htab);
    ctx_lens = up(hctx);
    cu_q = up(hcu);
    std::vector<float> inv(kD / 2);
    k::RopeParams rp;
    rp.theta = 500000.0;
    rp.scaling_type = 1;
    rp.factor = 8.0;
    k::rope_inv_freq(rp, kD, inv.data());
    inv_freq = static_cast<float*>(dev(inv.size() * 4));
    CHECK_CUDA(cudaMemcpy(inv_freq, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice));
    ws_bytes = pre ? 0 : k::decode_attention_workspace_bytes(b, kHq, kD, c);
    if (ws_bytes) ws = dev(ws_bytes);
  }
  ~Step() {
    for (void* p : owned) cudaFree(p);
  }
  double kv_bytes() const { return 2.0 * kLayers * batch * static_cast<double>(prefill ? 0 : ctx) * kHkv * kD * 2; }

  void run(const Weights& w, cublasHandle_t hb, cudaStream_t s) {
    const int64_t T = tokens;
    ok(k::embedding(ids, w.embed, resid, T, kH, 0, kV, s), "embedding");
    ok(k::rms_norm(resid, nullptr, w.layer[0].ln1, h, T, kH, 1e-5f, s), "norm");
    for (int64_t l = 0; l < kLayers; ++l) {
      const auto& L = w.layer[l];
      bf16* K = kc[static_cast<size_t>(l) % kc.size()];
      bf16* Vc = vc[static_cast<size_t>(l) % vc.size()];
      gemm_bf16(hb, h, L.wqkv, qkv, T, kQkv, kH);
      ok(k::g_rope(qkv, k::Elem::kBf16, T, kHq + kHkv, kQkv, kD, 0, kD, pos, inv_freq, false, 1.0f, s), "rope");
      ok(k::scatter_rows(qkv + kHq * kD, kQkv, slots, K, T, kHkv * kD, s), "kv k");
      ok(k::scatter_rows(qkv + (kHq + kHkv) * kD, kQkv, slots, Vc, T, kHkv * kD, s), "kv v");
      const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
      if (prefill)
        ok(k::prefill_attention(qkv, kQkv, K, Vc, kHkv * kD, tables, pages_per_seq, cu_q, ctx_lens, T, attn, 1, kHq,
                                kHkv, k::HeadMapping{kHq / kHkv, 0, 0}, kD, kPage, scale, s),
           "prefill attention");
      else
        ok(k::decode_attention(qkv, kQkv, K, Vc, kHkv * kD, tables, pages_per_seq, ctx_lens, ctx, attn, batch, kHq,
                               kHkv, k::HeadMapping{kHq / kHkv, 0, 0}, kD, kPage, scale, ws, ws_bytes, s),
           "decode attention");
      gemm_bf16(hb, attn, L.wo, x, T, kH, kHq * kD);
      ok(k::rms_norm(x, resid, L.ln2, h, T, kH, 1e-5f, s), "norm");
      gemm_bf16(hb, h, L.wgu, gu, T, 2 * kF, kH);
      ok(k::silu_and_mul(gu, act, T, kF, s), "silu");
      gemm_bf16(hb, act, L.wdown, x, T, kH, kF);
      ok(k::rms_norm(x, resid, l + 1 < kLayers ? w.layer[l + 1].ln1 : w.lnf, h, T, kH, 1e-5f, s), "norm");
    }
    const int64_t rows = prefill ? 1 : T;
    gemm_bf16(hb, h + (T - rows) * kH, w.lm, logits, rows, kV, kH);
    ok(k::argmax_bf16(logits, kV, rows, kV, next, nullptr, s), "argmax");
  }
};

}  // namespace

void llama_steps(Bench& bench, cublasHandle_t h, cudaStream_t s, const Ceilings& c, bool quick,
                 std::vector<std::string>& report) {
  Weights w(s);
  CHECK_CUDA(cudaStreamSynchronize(s));
  char line[256];
  std::snprintf(line, sizeof line, "%-24s %10s %10s %12s %9s %9s", "llama-3.1-8B step", "eager ms", "graph ms",
                "tokens/s", "ideal ms", "% ideal");
  report.push_back(line);
  const std::vector<int64_t> batches = quick ? std::vector<int64_t>{1, 64} : std::vector<int64_t>{1, 16, 64, 256};
  const std::vector<int64_t> ctxs = quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{1024, 8192};
  auto one = [&](int64_t b, int64_t ctx, bool pre) {
    size_t free_b = 0, total_b = 0;
    CHECK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    Step st(b, ctx, pre, free_b, s);
    CHECK_CUDA(cudaStreamSynchronize(s));
    const double eager = bench.median_s([&] { st.run(w, h, s); }, 1, pre ? 3 : 5, false);
    double graph = NAN;
    if (!pre) {
      cudaGraph_t g = nullptr;
      cudaGraphExec_t ge = nullptr;
      if (cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
        bool captured = true;
        try {
          st.run(w, h, s);
        } catch (const std::exception&) {
          captured = false;
        }
        if (cudaStreamEndCapture(s, &g) != cudaSuccess) captured = false;
        if (captured && cudaGraphInstantiate(&ge, g, 0) == cudaSuccess)
          graph = bench.median_s([&] { CHECK_CUDA(cudaGraphLaunch(ge, s)); }, 1, 5, false);
        cudaGetLastError();
        if (ge) cudaGraphExecDestroy(ge);
        if (g) cudaGraphDestroy(g);
      }
    }
    const double best = std::isnan(graph) ? eager : std::min(eager, graph);
    const double ideal_mem = (Weights::bytes() + st.kv_bytes()) / c.copy_Bps;
    const double flops = 2.0 * 8.0e9 * static_cast<double>(st.tokens) +
                         (pre ? 4.0 * kLayers * kHq * kD * (static_cast<double>(ctx) * (ctx + 1) / 2) : 0.0);
    const double ideal = std::max(ideal_mem, flops / c.gemm_flops);
    char name[64];
    if (pre)
      std::snprintf(name, sizeof name, "prefill T%lld", static_cast<long long>(ctx));
    else
      std::snprintf(name, sizeof name, "decode b%lld ctx%lld%s", static_cast<long long>(b), static_cast<long long>(ctx),
                    st.kc.size() < static_cast<size_t>(kLayers) ? "*" : "");
    std::snprintf(line, sizeof line, "%-24s %10.3f %10.3f %12.0f %9.3f %8.1f%%", name, eager * 1e3, graph * 1e3,
                  static_cast<double>(st.tokens) / best, ideal * 1e3, 100.0 * ideal / best);
    report.push_back(line);
    std::printf("%s\n", line);
    std::fflush(stdout);
  };
  for (int64_t ctx : ctxs)
    for (int64_t b : batches) one(b, ctx, false);
  one(1, 4096, true);
  report.push_back("(* = fewer than 32 distinct KV caches fit next to the weights: layers share caches round-robin)");
}

}  // namespace parasol::device_check

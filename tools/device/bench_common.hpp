// Shared pieces of the GPU check program (tools/device/): timing with CUDA events (warm-up, median of many, the L2
// flushed between repetitions so memory-bound ops read from HBM as they do inside a model step), the measured
// ceilings, and the rows of the report table and of the calibration CSV (format: core/cost/calibration.hpp,
// docs/cost-model.md). Depends on CUDA and cuBLAS only.
// Thread behaviour: single-threaded (one Bench per program).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace parasol::device_check {

#define CHECK_CUDA(x)                                                                                      \
  do {                                                                                                     \
    cudaError_t e_ = (x);                                                                                  \
    if (e_ != cudaSuccess)                                                                                 \
      throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_) + " at " + __FILE__ + ":" + \
                               std::to_string(__LINE__));                                                  \
  } while (0)
#define CHECK_CUBLAS(x)                                                                                               \
  do {                                                                                                                \
    cublasStatus_t s_ = (x);                                                                                          \
    if (s_ != CUBLAS_STATUS_SUCCESS)                                                                                  \
      throw std::runtime_error(std::string(#x) + ": cuBLAS status " + std::to_string(static_cast<int>(s_)) + " at " + \
                               __FILE__ + ":" + std::to_string(__LINE__));                                            \
  } while (0)

struct Ceilings {
  double copy_Bps = 0;    // device-to-device copy, bytes read + written per second
  double gemm_flops = 0;  // bf16 GEMM, FLOP/s
};

// One measured op: a table row and a calibration-CSV row.
struct Measured {
  std::string kind;   // calibration kind: gemm, rmsnorm, activation, embedding, rope, kv_append, attention, ...
  std::string label;  // table label, e.g. "decode_attention" or "gemm qkv"
  std::string shape;
  std::string phase;  // attention: prefill | decode
  int64_t m = 0, n = 0, k = 0, batch = 1, heads = 0, kv_heads = 0, head_dim = 0, tokens = 0;
  double flops = 0, bytes = 0, time_s = 0;
};

class Bench {
 public:
  Bench(cudaStream_t s, size_t l2_bytes) : stream_(s) {
    flush_bytes_ = std::max<size_t>(2 * l2_bytes, 64u << 20);
    CHECK_CUDA(cudaMalloc(&flush_, flush_bytes_));
  }
  ~Bench() { cudaFree(flush_); }

  // Median seconds of `fn` over `reps` timed runs after `warmup` untimed ones.
  double median_s(const std::function<void()>& fn, int warmup, int reps, bool flush = true) {
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<cudaEvent_t> ev(static_cast<size_t>(2 * reps));
    for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
    for (int i = 0; i < reps; ++i) {
      if (flush) CHECK_CUDA(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, stream_));
      CHECK_CUDA(cudaEventRecord(ev[static_cast<size_t>(2 * i)], stream_));
      fn();
      CHECK_CUDA(cudaEventRecord(ev[static_cast<size_t>(2 * i + 1)], stream_));
    }
    CHECK_CUDA(cudaStreamSynchronize(stream_));
    CHECK_CUDA(cudaGetLastError());
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, ev[static_cast<size_t>(2 * i)], ev[static_cast<size_t>(2 * i + 1)]));
      t.push_back(ms * 1e-3);
    }
    for (auto& e : ev) cudaEventDestroy(e);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

  std::vector<Measured> rows;

 private:
  cudaStream_t stream_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
};

// Percent of the ceiling that binds (the larger of flops / peak and bytes / bandwidth), and the achieved rate text.
inline std::string achieved(const Measured& r, const Ceilings& c, double* pct) {
  const double tc = r.flops / c.gemm_flops, tm = r.bytes / c.copy_Bps;
  char buf[64];
  if (tc >= tm) {
    std::snprintf(buf, sizeof buf, "%8.1f TFLOP/s", r.flops / r.time_s * 1e-12);
    *pct = 100.0 * tc / r.time_s;
  } else {
    std::snprintf(buf, sizeof buf, "%8.1f GB/s", r.bytes / r.time_s * 1e-9);
    *pct = 100.0 * tm / r.time_s;
  }
  return buf;
}

// bf16 GEMM y[m, n] = x[m, k] w[n, k]^T through cuBLAS (the cuda backend's call), fp32 accumulate.
inline void gemm_bf16(cublasHandle_t h, const void* x, const void* w, void* y, int64_t m, int64_t n, int64_t k,
                      cudaDataType_t yt = CUDA_R_16BF) {
  const float one = 1.0f, zero = 0.0f;
  CHECK_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                            &one, w, CUDA_R_16BF, static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &zero, y,
                            yt, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

Ceilings measure_ceilings(Bench& bench, cublasHandle_t h, cudaStream_t s);
void sweep_ops(Bench& bench, cublasHandle_t h, cudaStream_t s, bool quick);
// Decode steps of a Llama-3.1-8B-shaped model (synthetic weights) and a 4k-token prefill; appends report lines.
void llama_steps(Bench& bench, cublasHandle_t h, cudaStream_t s, const Ceilings& c, bool quick,
                 std::vector<std::string>& report);

}  // namespace parasol::device_check

// Row-wise and elementwise kernels: embedding, RMSNorm (+ fused residual), RoPE, SiLU-and-mul, paged KV append,
// argmax, sums, bias, conversions and fills. Memory-bound: 16-byte accesses wherever the shape and alignment allow,
// a scalar path otherwise. See kernels.cuh for the contracts.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common.cuh"

namespace parasol::kernels {
namespace detail {

int sm_count() {
  static int cached[64] = {0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 1;
  if (dev < 0 || dev >= 64) dev = 0;
  if (cached[dev] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 1;
    cached[dev] = n;
  }
  return cached[dev];
}

int choose_splits(int64_t base_blocks, int64_t max_ctx, int64_t min_chunk, int max_splits) {
  const int64_t target = 16LL * sm_count();  // several waves, so the last one is a small share
  int64_t splits = base_blocks >= target ? 1 : (target + base_blocks - 1) / base_blocks;
  const int64_t by_len = std::max<int64_t>(1, (max_ctx + min_chunk - 1) / min_chunk);
  splits = std::min<int64_t>(std::min<int64_t>(splits, by_len), max_splits);
  return static_cast<int>(std::max<int64_t>(1, splits));
}

namespace {

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(b, 1), 65535LL * 32));
}

// ---- embedding ----
__global__ void embedding_vec(const int32_t* ids, const bf16* table, bf16* out, int64_t tokens, int64_t hidden,
                              int64_t vocab_start, int64_t vocab_rows) {
  const int64_t nv = hidden / 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tokens * nv;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / nv, c = (i % nv) * 8;
    const int64_t row = static_cast<int64_t>(ids[t]) - vocab_start;
    Bf16x8 v;
    if (row >= 0 && row < vocab_rows) {
      v = load8(table + row * hidden + c);
    } else {
      float z[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      v = from_float8(z);
    }
    store8(out + t * hidden + c, v);
  }
}

__global__ void embedding_scalar(const int32_t* ids, const bf16* table, bf16* out, int64_t tokens, int64_t hidden,
                                 int64_t vocab_start, int64_t vocab_rows) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tokens * hidden;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / hidden, c = i % hidden;
    const int64_t row = static_cast<int64_t>(ids[t]) - vocab_start;
    out[i] = (row >= 0 && row < vocab_rows) ? table[row * hidden + c] : __float2bfloat16(0.f);
  }
}

// ---- RMSNorm ----
// One block per row, each thread keeps VPT 16-byte vectors of the row in registers between the two passes.
template <int VPT>
__global__ void rms_norm_vec(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t hidden, float eps) {
  const int64_t row = blockIdx.x;
  const int nv = static_cast<int>(hidden / 8);
  const bf16* xr = x + row * hidden;
  bf16* rr = residual ? residual + row * hidden : nullptr;
  float h[VPT][8];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v < nv) {
      Bf16x8 a = load8(xr + v * 8);
      to_float8(a, h[j]);
      if (rr) {
        float b[8];
        to_float8(load8(rr + v * 8), b);
#pragma unroll
        for (int e = 0; e < 8; ++e) h[j][e] += b[e];
        Bf16x8 s = from_float8(h[j]);
        store8(rr + v * 8, s);
        to_float8(s, h[j]);  // normalize the bf16-rounded sum, as HF does
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += h[j][e] * h[j][e];
    }
  }
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int v = threadIdx.x + j * blockDim.x;
    if (v < nv) {
      float w[8], y[8];
      to_float8(load8(weight + v * 8), w);
#pragma unroll
      for (int e = 0; e < 8; ++e) y[e] = w[e] * __bfloat162float(__float2bfloat16(h[j][e] * inv));
      store8(out + row * hidden + v * 8, from_float8(y));
    }
  }
}

__global__ void rms_norm_scalar(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t hidden,
                                float eps) {
  const int64_t row = blockIdx.x;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float h = __bfloat162float(x[row * hidden + c]);
    if (residual) {
      bf16 s = __float2bfloat16(h + __bfloat162float(residual[row * hidden + c]));
      residual[row * hidden + c] = s;
      h = __bfloat162float(s);
    }
    ss += h * h;
  }
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(hidden) + eps);
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    const float h = residual ? __bfloat162float(residual[row * hidden + c]) : __bfloat162float(x[row * hidden + c]);
    out[row * hidden + c] = __float2bfloat16(__bfloat162float(weight[c]) * __bfloat162float(__float2bfloat16(h * inv)));
  }
}

// ---- SiLU and mul ----
__device__ __forceinline__ float silu(float g) {
  return g / (1.f + __expf(-g));
}

__global__ void silu_mul_vec(const bf16* x, bf16* out, int64_t rows, int64_t d) {
  const int64_t nv = d / 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * nv;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / nv, c = (i % nv) * 8;
    float g[8], u[8], y[8];
    to_float8(load8(x + r * 2 * d + c), g);
    to_float8(load8(x + r * 2 * d + d + c), u);
#pragma unroll
    for (int e = 0; e < 8; ++e) y[e] = __bfloat162float(__float2bfloat16(silu(g[e]))) * u[e];
    store8(out + r * d + c, from_float8(y));
  }
}

__global__ void silu_mul_scalar(const bf16* x, bf16* out, int64_t rows, int64_t d) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * d; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / d, c = i % d;
    out[i] = __float2bfloat16(__bfloat162float(__float2bfloat16(silu(__bfloat162float(x[r * 2 * d + c])))) *
                              __bfloat162float(x[r * 2 * d + d + c]));
  }
}

// ---- row scatter (paged KV append) ----
__global__ void scatter_rows_vec(const bf16* src, int64_t ss, const int32_t* slots, bf16* dst, int64_t rows,
                                 int64_t width) {
  const int64_t nv = width / 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * nv;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / nv, c = (i % nv) * 8;
    const int64_t slot = slots[r];
    if (slot < 0) continue;
    store8(dst + slot * width + c, load8(src + r * ss + c));
  }
}

// ---- argmax ----
__device__ __forceinline__ void better(float& bv, int32_t& bi, float v, int32_t i) {
  if (v != v) return;  // NaN never wins
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

template <typename T>
__device__ __forceinline__ float to_f(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_f<bf16>(bf16 v) {
  return __bfloat162float(v);
}

template <typename T, bool kVec>
__global__ void argmax_kernel(const T* logits, int64_t stride, int64_t n, int32_t* out_index, float* out_value) {
  const T* row = logits + blockIdx.x * stride;
  float bv = -INFINITY;
  int32_t bi = 0x7fffffff;
  if constexpr (kVec) {
    for (int64_t v = threadIdx.x; v < n / 8; v += blockDim.x) {
      float f[8];
      to_float8(load8(reinterpret_cast<const bf16*>(row) + v * 8), f);
#pragma unroll
      for (int e = 0; e < 8; ++e) better(bv, bi, f[e], static_cast<int32_t>(v * 8 + e));
    }
  } else {
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) better(bv, bi, to_f(row[c]), static_cast<int32_t>(c));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi != 0x7fffffff) better(bv, bi, ov, oi);
  }
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float fv = -INFINITY;
    int32_t fi = 0x7fffffff;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w)
      if (si[w] != 0x7fffffff) better(fv, fi, sv[w], si[w]);
    if (fi == 0x7fffffff) fi = 0;  // all NaN: index 0
    out_index[blockIdx.x] = fi;
    if (out_value) out_value[blockIdx.x] = fv;
  }
}

// ---- sums, bias, conversions, fills ----
template <typename T>
struct PtrList {
  const T* p[kMaxSumInputs];
};

__global__ void sum_bf16_vec(PtrList<bf16> in, int count, bf16* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n / 8; i += (int64_t)gridDim.x * blockDim.x) {
    float acc[8], f[8];
    to_float8(load8(in.p[0] + i * 8), acc);
#pragma unroll
    for (int j = 1; j < kMaxSumInputs; ++j) {  // compile-time indices keep the pointer list in registers
      if (j < count) {
        to_float8(load8(in.p[j] + i * 8), f);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[e] += f[e];
      }
    }
    store8(out + i * 8, from_float8(acc));
  }
}

template <typename T>
__global__ void sum_scalar(PtrList<T> in, int count, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = to_f(in.p[0][i]);
#pragma unroll
    for (int j = 1; j < kMaxSumInputs; ++j)
      if (j < count) acc += to_f(in.p[j][i]);
    out[i] = static_cast<T>(acc);
  }
}

__global__ void add_bias_kernel(const bf16* x, const bf16* bias, bf16* out, int64_t rows, int64_t cols) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * cols;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(__bfloat162float(x[i]) + __bfloat162float(bias[i % cols]));
}

__global__ void f32_to_bf16(const float* in, bf16* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void bf16_to_f32(const bf16* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

__global__ void fill_random_kernel(bf16* out, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint64_t r = splitmix64(seed * 0x100000001b3ULL ^ static_cast<uint64_t>(i));
    const float u = static_cast<float>(r >> 40) * (1.0f / 8388608.0f) - 1.0f;  // 24 bits -> [-1, 1)
    out[i] = __float2bfloat16(scale * u);
  }
}

__global__ void fill_kernel(bf16* out, int64_t n, float value) {
  const bf16 v = __float2bfloat16(value);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = v;
}

}  // namespace
}  // namespace detail

using namespace detail;

cudaError_t embedding(const int32_t* ids, const bf16* table, bf16* out, int64_t tokens, int64_t hidden,
                      int64_t vocab_start, int64_t vocab_rows, cudaStream_t stream) {
  if (tokens < 0 || hidden <= 0 || vocab_rows < 0) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  if (hidden % 8 == 0 && aligned16(table) && aligned16(out))
    embedding_vec<<<grid_for(tokens * hidden / 8), kThreads, 0, stream>>>(ids, table, out, tokens, hidden, vocab_start,
                                                                          vocab_rows);
  else
    embedding_scalar<<<grid_for(tokens * hidden), kThreads, 0, stream>>>(ids, table, out, tokens, hidden, vocab_start,
                                                                         vocab_rows);
  return launch_status();
}

cudaError_t rms_norm(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t rows, int64_t hidden,
                     float eps, cudaStream_t stream) {
  if (rows < 0 || hidden <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = hidden % 8 == 0 && aligned16(x) && aligned16(weight) && aligned16(out) &&
                   (residual == nullptr || aligned16(residual));
  const int64_t nv = hidden / 8;
  const unsigned grid = static_cast<unsigned>(rows);
  if (vec && nv <= 8 * 1024) {
    // Several independent 16-byte loads per thread (up to 8) and small blocks: more bytes in flight per SM than one
    // vector per thread in big blocks, which is what keeps HBM busy (hidden 4096: 128 threads x 4 vectors).
    const int vpt = nv <= 128 ? 1 : nv <= 256 ? 2 : nv <= 512 ? 4 : 8;
    const int threads = static_cast<int>(std::max<int64_t>(32, ((nv + vpt - 1) / vpt + 31) / 32 * 32));
    if (vpt == 1)
      rms_norm_vec<1><<<grid, threads, 0, stream>>>(x, residual, weight, out, hidden, eps);
    else if (vpt == 2)
      rms_norm_vec<2><<<grid, threads, 0, stream>>>(x, residual, weight, out, hidden, eps);
    else if (vpt == 4)
      rms_norm_vec<4><<<grid, threads, 0, stream>>>(x, residual, weight, out, hidden, eps);
    else
      rms_norm_vec<8><<<grid, threads, 0, stream>>>(x, residual, weight, out, hidden, eps);
  } else {
    rms_norm_scalar<<<grid, 512, 0, stream>>>(x, residual, weight, out, hidden, eps);
  }
  return launch_status();
}

void rope_inv_freq(const RopeParams& p, int64_t rot_dim, float* inv_freq_host) {
  const double kPi = 3.14159265358979323846;
  for (int64_t i = 0; i < rot_dim / 2; ++i) {
    // HF: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(rot_dim);
    float inv = 1.0f / std::pow(static_cast<float>(p.theta), expo);
    if (p.scaling_type == 1) {
      const double low_wavelen = p.original_max_position / p.low_freq_factor;
      const double high_wavelen = p.original_max_position / p.high_freq_factor;
      const double wavelen = 2.0 * kPi / inv;
      if (wavelen > low_wavelen) {
        inv = static_cast<float>(inv / p.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (p.original_max_position / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
        inv = static_cast<float>((1.0 - smooth) * inv / p.factor + smooth * inv);
      }
    }
    inv_freq_host[i] = inv;
  }
}

cudaError_t silu_and_mul(const bf16* x, bf16* out, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows < 0 || d <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (d % 8 == 0 && aligned16(x) && aligned16(out))
    silu_mul_vec<<<grid_for(rows * d / 8), kThreads, 0, stream>>>(x, out, rows, d);
  else
    silu_mul_scalar<<<grid_for(rows * d), kThreads, 0, stream>>>(x, out, rows, d);
  return launch_status();
}

cudaError_t scatter_rows(const bf16* src, int64_t src_stride, const int32_t* slots, bf16* dst, int64_t rows,
                         int64_t width, cudaStream_t stream) {
  if (rows < 0 || width <= 0 || width % 8 != 0 || src_stride % 8 != 0 || !aligned16(src) || !aligned16(dst))
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  scatter_rows_vec<<<grid_for(rows * width / 8), kThreads, 0, stream>>>(src, src_stride, slots, dst, rows, width);
  return launch_status();
}

cudaError_t argmax_bf16(const bf16* logits, int64_t row_stride, int64_t rows, int64_t n, int32_t* out_index,
                        float* out_value, cudaStream_t stream) {
  if (rows < 0 || n <= 0 || n > 0x7fffffff || rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const int threads = n >= 32768 ? 1024 : 256;
  if (n % 8 == 0 && row_stride % 8 == 0 && aligned16(logits))
    argmax_kernel<bf16, true>
        <<<static_cast<unsigned>(rows), threads, 0, stream>>>(logits, row_stride, n, out_index, out_value);
  else
    argmax_kernel<bf16, false>
        <<<static_cast<unsigned>(rows), threads, 0, stream>>>(logits, row_stride, n, out_index, out_value);
  return launch_status();
}

cudaError_t argmax_f32(const float* logits, int64_t row_stride, int64_t rows, int64_t n, int32_t* out_index,
                       float* out_value, cudaStream_t stream) {
  if (rows < 0 || n <= 0 || n > 0x7fffffff || rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const int threads = n >= 32768 ? 1024 : 256;
  argmax_kernel<float, false>
      <<<static_cast<unsigned>(rows), threads, 0, stream>>>(logits, row_stride, n, out_index, out_value);
  return launch_status();
}

cudaError_t sum_bf16(const bf16* const* inputs, int count, bf16* out, int64_t n, cudaStream_t stream) {
  if (count < 1 || count > kMaxSumInputs || n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  PtrList<bf16> list{};
  bool vec = n % 8 == 0 && aligned16(out);
  for (int j = 0; j < count; ++j) {
    list.p[j] = inputs[j];
    vec = vec && aligned16(inputs[j]);
  }
  if (vec)
    sum_bf16_vec<<<grid_for(n / 8), kThreads, 0, stream>>>(list, count, out, n);
  else
    sum_scalar<bf16><<<grid_for(n), kThreads, 0, stream>>>(list, count, out, n);
  return launch_status();
}

cudaError_t sum_f32(const float* const* inputs, int count, float* out, int64_t n, cudaStream_t stream) {
  if (count < 1 || count > kMaxSumInputs || n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  PtrList<float> list{};
  for (int j = 0; j < count; ++j) list.p[j] = inputs[j];
  sum_scalar<float><<<grid_for(n), kThreads, 0, stream>>>(list, count, out, n);
  return launch_status();
}

cudaError_t add_bias(const bf16* x, const bf16* bias, bf16* out, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows < 0 || cols <= 0) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  add_bias_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(x, bias, out, rows, cols);
  return launch_status();
}

cudaError_t convert_f32_to_bf16(const float* in, bf16* out, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  f32_to_bf16<<<grid_for(n), kThreads, 0, stream>>>(in, out, n);
  return launch_status();
}

cudaError_t convert_bf16_to_f32(const bf16* in, float* out, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  bf16_to_f32<<<grid_for(n), kThreads, 0, stream>>>(in, out, n);
  return launch_status();
}

cudaError_t fill_random_bf16(bf16* out, int64_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  fill_random_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, n, seed, scale);
  return launch_status();
}

cudaError_t fill_bf16(bf16* out, int64_t n, float value, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, n, value);
  return launch_status();
}

}  // namespace parasol::kernels

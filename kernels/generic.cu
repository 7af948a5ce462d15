// Generic kernels: every operand may be fp32, bf16 or fp16 (chosen at run time), rows may be strided, sizes are
// arbitrary. They mirror the cpu backend's arithmetic and rounding points (fp32 math; one rounding when a value is
// stored; the casts HF makes), so the `cuda` backend can run any op the conformance test throws at it — fp32 models
// included — where the fast bf16 kernels do not apply. Correctness over speed: simple grid-stride loops.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace parasol::kernels {
namespace detail {
namespace {

__device__ __forceinline__ float ld(const void* p, Elem t, int64_t i) {
  switch (t) {
    case Elem::kBf16:
      return __bfloat162float(static_cast<const bf16*>(p)[i]);
    case Elem::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void st(void* p, Elem t, int64_t i, float v) {
  switch (t) {
    case Elem::kBf16:
      static_cast<bf16*>(p)[i] = __float2bfloat16(v);
      return;
    case Elem::kF16:
      static_cast<__half*>(p)[i] = __float2half(v);
      return;
    default:
      static_cast<float*>(p)[i] = v;
  }
}

__device__ __forceinline__ float round_to(Elem t, float v) {
  switch (t) {
    case Elem::kBf16:
      return __bfloat162float(__float2bfloat16(v));
    case Elem::kF16:
      return __half2float(__float2half(v));
    default:
      return v;
  }
}

constexpr int kT = 256;
inline unsigned grid_of(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>((n + kT - 1) / kT, 1), 65535LL * 32));
}
#define PARASOL_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__global__ void convert_k(Mat s, Mat d) {
  PARASOL_GRID_LOOP(i, s.rows * s.cols) {
    const int64_t r = i / s.cols, c = i % s.cols;
    st(d.data, d.type, r * d.stride + c, ld(s.data, s.type, r * s.stride + c));
  }
}

__global__ void add_k(Mat a, Mat b, Mat o) {
  PARASOL_GRID_LOOP(i, a.rows * a.cols) {
    const int64_t r = i / a.cols, c = i % a.cols;
    st(o.data, o.type, r * o.stride + c, ld(a.data, a.type, r * a.stride + c) + ld(b.data, b.type, r * b.stride + c));
  }
}

__global__ void add_bias_k(Mat y, Mat bias) {
  PARASOL_GRID_LOOP(i, y.rows * y.cols) {
    const int64_t r = i / y.cols, c = i % y.cols;
    st(y.data, y.type, r * y.stride + c, ld(y.data, y.type, r * y.stride + c) + ld(bias.data, bias.type, c));
  }
}

__global__ void embedding_k(const int32_t* ids, Mat table, int64_t row_begin, Mat out) {
  PARASOL_GRID_LOOP(i, out.rows * out.cols) {
    const int64_t t = i / out.cols, c = i % out.cols;
    const int64_t r = static_cast<int64_t>(ids[t]) - row_begin;
    const float v = (r >= 0 && r < table.rows) ? ld(table.data, table.type, r * table.stride + c) : 0.f;
    st(out.data, out.type, t * out.stride + c, v);
  }
}

__global__ void rms_norm_k(Mat x, Mat w, float eps, Mat out) {
  const int64_t r = blockIdx.x;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < x.cols; c += blockDim.x) {
    const float v = ld(x.data, x.type, r * x.stride + c);
    ss += v * v;
  }
  ss = block_sum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(x.cols) + eps);
  for (int64_t c = threadIdx.x; c < x.cols; c += blockDim.x) {
    const float v = ld(x.data, x.type, r * x.stride + c);
    st(out.data, out.type, r * out.stride + c, ld(w.data, w.type, c) * round_to(x.type, v * inv));
  }
}

// One block per token; rotary columns of all heads staged in shared memory so in-place interleaved reads are safe.
__global__ void rope_k(void* x, Elem type, int64_t heads, int64_t ts, int64_t hs, int64_t rot_offset, int64_t rot_dim,
                       const int32_t* positions, const float* inv_freq, bool interleaved, float scaling) {
  extern __shared__ float stage[];
  const int64_t t = blockIdx.x, half = rot_dim / 2;
  for (int64_t w = threadIdx.x; w < heads * rot_dim; w += blockDim.x)
    stage[w] = ld(x, type, t * ts + (w / rot_dim) * hs + rot_offset + w % rot_dim);
  __syncthreads();
  for (int64_t w = threadIdx.x; w < heads * half; w += blockDim.x) {
    const int64_t h = w / half, i = w % half;
    const float ang = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(ang, &sn, &cs);
    const float c = round_to(type, cs * scaling), s = round_to(type, sn * scaling);
    const float* v = stage + h * rot_dim;
    const float x1 = interleaved ? v[2 * i] : v[i], x2 = interleaved ? v[2 * i + 1] : v[i + half];
    const int64_t base = t * ts + h * hs + rot_offset;
    st(x, type, base + i, x1 * c - x2 * s);
    st(x, type, base + i + half, x2 * c + x1 * s);
  }
}

__global__ void silu_mul_k(Mat gu, Mat out) {
  const int64_t f = out.cols;
  PARASOL_GRID_LOOP(i, out.rows * f) {
    const int64_t r = i / f, c = i % f;
    const float g = ld(gu.data, gu.type, r * gu.stride + c), u = ld(gu.data, gu.type, r * gu.stride + f + c);
    st(out.data, out.type, r * out.stride + c, round_to(gu.type, g / (1.0f + expf(-g))) * u);
  }
}

__global__ void scatter_rows_k(Mat src, const int32_t* slots, Mat dst) {
  PARASOL_GRID_LOOP(i, src.rows * src.cols) {
    const int64_t r = i / src.cols, c = i % src.cols;
    const int64_t slot = slots[r];
    if (slot >= 0) st(dst.data, dst.type, slot * dst.stride + c, ld(src.data, src.type, r * src.stride + c));
  }
}

__global__ void gather_rows_k(Mat src, const int32_t* idx, Mat dst) {
  PARASOL_GRID_LOOP(i, dst.rows * dst.cols) {
    const int64_t r = i / dst.cols, c = i % dst.cols;
    st(dst.data, dst.type, r * dst.stride + c, ld(src.data, src.type, idx[r] * src.stride + c));
  }
}

__global__ void scatter_add_k(Mat src, const int32_t* offsets, const int32_t* src_rows, const int32_t* targets,
                              int64_t n_targets, const float* w, Mat dst) {
  PARASOL_GRID_LOOP(i, n_targets * dst.cols) {
    const int64_t k = i / dst.cols, c = i % dst.cols;
    const int64_t r = targets[k];
    float acc = ld(dst.data, dst.type, r * dst.stride + c);
    for (int32_t j = offsets[k]; j < offsets[k + 1]; ++j) {
      const int64_t n = src_rows[j];
      acc = round_to(dst.type, acc + (w ? w[n] : 1.0f) * ld(src.data, src.type, n * src.stride + c));
    }
    st(dst.data, dst.type, r * dst.stride + c, acc);
  }
}

__global__ void argmax_k(Mat x, int32_t* out) {
  const int64_t r = blockIdx.x;
  float bv = -INFINITY;
  int32_t bi = 0x7fffffff;
  for (int64_t c = threadIdx.x; c < x.cols; c += blockDim.x) {
    const float v = ld(x.data, x.type, r * x.stride + c);
    if (v > bv || (v == bv && c < bi)) {
      bv = v;
      bi = static_cast<int32_t>(c);
    }
  }
  __shared__ float sv[256];
  __shared__ int32_t si[256];
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) {
      const float ov = sv[threadIdx.x + s];
      const int32_t oi = si[threadIdx.x + s];
      if (ov > sv[threadIdx.x] || (ov == sv[threadIdx.x] && oi < si[threadIdx.x])) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[r] = si[0] == 0x7fffffff ? 0 : si[0];
}

__device__ __forceinline__ int64_t slot_of(const int32_t* bt, int64_t max_pages, int64_t page_size, int64_t seq,
                                           int64_t pos) {
  return static_cast<int64_t>(bt[seq * max_pages + pos / page_size]) * page_size + pos % page_size;
}

// One warp per (token, head). Lane l owns output dims l, l + 32, ... (at most 16 of them: v_dim <= 512).
__global__ void attention_k(AttnOperand q, AttnOperand kc, AttnOperand vc, void* out, Elem ot, int64_t tokens,
                            int64_t heads, int64_t D, int64_t Dv, HeadMapping map, const int32_t* seq_of,
                            const int32_t* pos_of, const int32_t* bt, int64_t max_pages, int64_t page_size,
                            float scale) {
  const int64_t wid = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (wid >= tokens * heads) return;
  const int64_t t = wid / heads, h = wid % heads;
  const int64_t seq = seq_of[t], pos = pos_of[t];
  const int64_t kvh = (map.q_head_offset + h) / map.group - map.kv_head_offset;
  const int64_t qb = t * q.token_stride + h * q.head_stride;
  auto score = [&](int64_t j) {
    const int64_t slot = slot_of(bt, max_pages, page_size, seq, j);
    float d = 0.f;
    for (int64_t e = lane; e < D; e += 32)
      d += ld(q.data, q.type, qb + e) * ld(kc.data, kc.type, slot * kc.token_stride + kvh * kc.head_stride + e);
    return warp_sum(d) * scale;
  };
  float mx = -INFINITY;
  for (int64_t j = 0; j <= pos; ++j) mx = fmaxf(mx, score(j));
  float sum = 0.f;
  for (int64_t j = 0; j <= pos; ++j) sum += expf(score(j) - mx);
  float acc[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) acc[i] = 0.f;
  for (int64_t j = 0; j <= pos; ++j) {
    const float p = round_to(q.type, expf(score(j) - mx) / sum);
    const int64_t vb = slot_of(bt, max_pages, page_size, seq, j) * vc.token_stride + kvh * vc.head_stride;
#pragma unroll
    for (int i = 0; i < 16; ++i)
      if (lane + 32 * i < Dv) acc[i] += p * ld(vc.data, vc.type, vb + lane + 32 * i);
  }
#pragma unroll
  for (int i = 0; i < 16; ++i)
    if (lane + 32 * i < Dv) st(out, ot, (t * heads + h) * Dv + lane + 32 * i, acc[i]);
}

// One block (128 threads) per (token, head); q_abs and the latent output live in shared memory.
__global__ void mla_k(AttnOperand q, const void* lat, Elem lt, const void* w, Elem wt, void* out, Elem ot,
                      int64_t heads, int64_t nope, int64_t R, int64_t L, int64_t vd, const int32_t* seq_of,
                      const int32_t* pos_of, const int32_t* bt, int64_t max_pages, int64_t page_size, float scale) {
  extern __shared__ float sh[];
  float* qa = sh;      // [L]
  float* qr = qa + L;  // [R]
  float* ol = qr + R;  // [L]
  const int64_t t = blockIdx.x / heads, h = blockIdx.x % heads;
  const int64_t seq = seq_of[t], pos = pos_of[t], W = L + R;
  const int64_t qb = t * q.token_stride + h * q.head_stride, wb = h * (nope + vd);
  for (int64_t l = threadIdx.x; l < L; l += blockDim.x) {
    float a = 0.f;
    for (int64_t d = 0; d < nope; ++d) a += ld(q.data, q.type, qb + d) * ld(w, wt, (wb + d) * L + l);
    qa[l] = a;
    ol[l] = 0.f;
  }
  for (int64_t d = threadIdx.x; d < R; d += blockDim.x) qr[d] = ld(q.data, q.type, qb + nope + d);
  __syncthreads();
  auto score = [&](int64_t j) {
    const int64_t slot = slot_of(bt, max_pages, page_size, seq, j);
    float d = 0.f;
    for (int64_t l = threadIdx.x; l < L; l += blockDim.x) d += qa[l] * ld(lat, lt, slot * W + l);
    for (int64_t e = threadIdx.x; e < R; e += blockDim.x) d += qr[e] * ld(lat, lt, slot * W + L + e);
    return block_sum(d) * scale;
  };
  float mx = -INFINITY;
  for (int64_t j = 0; j <= pos; ++j) mx = fmaxf(mx, score(j));
  float sum = 0.f;
  for (int64_t j = 0; j <= pos; ++j) sum += expf(score(j) - mx);
  for (int64_t j = 0; j <= pos; ++j) {
    const float p = round_to(q.type, expf(score(j) - mx) / sum);
    const int64_t slot = slot_of(bt, max_pages, page_size, seq, j);
    for (int64_t l = threadIdx.x; l < L; l += blockDim.x) ol[l] += p * ld(lat, lt, slot * W + l);
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < vd; d += blockDim.x) {
    float o = 0.f;
    for (int64_t l = 0; l < L; ++l) o += ol[l] * ld(w, wt, (wb + nope + d) * L + l);
    st(out, ot, (t * heads + h) * vd + d, o);
  }
}

}  // namespace
}  // namespace detail

using namespace detail;

cudaError_t g_convert(Mat src, Mat dst, cudaStream_t stream) {
  if (src.rows != dst.rows || src.cols != dst.cols) return cudaErrorInvalidValue;
  if (src.rows * src.cols == 0) return cudaSuccess;
  convert_k<<<grid_of(src.rows * src.cols), kT, 0, stream>>>(src, dst);
  return cudaGetLastError();
}

cudaError_t g_add(Mat a, Mat b, Mat out, cudaStream_t stream) {
  if (a.rows != b.rows || a.cols != b.cols || a.rows != out.rows || a.cols != out.cols) return cudaErrorInvalidValue;
  if (a.rows * a.cols == 0) return cudaSuccess;
  add_k<<<grid_of(a.rows * a.cols), kT, 0, stream>>>(a, b, out);
  return cudaGetLastError();
}

cudaError_t g_add_bias(Mat y, Mat bias, cudaStream_t stream) {
  if (bias.cols != y.cols) return cudaErrorInvalidValue;
  if (y.rows * y.cols == 0) return cudaSuccess;
  add_bias_k<<<grid_of(y.rows * y.cols), kT, 0, stream>>>(y, bias);
  return cudaGetLastError();
}

cudaError_t g_embedding(const int32_t* ids, Mat table, int64_t row_begin, Mat out, cudaStream_t stream) {
  if (table.cols != out.cols) return cudaErrorInvalidValue;
  if (out.rows * out.cols == 0) return cudaSuccess;
  embedding_k<<<grid_of(out.rows * out.cols), kT, 0, stream>>>(ids, table, row_begin, out);
  return cudaGetLastError();
}

cudaError_t g_rms_norm(Mat x, Mat weight, float eps, Mat out, cudaStream_t stream) {
  if (x.rows != out.rows || x.cols != out.cols || weight.cols != x.cols || x.rows > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (x.rows == 0) return cudaSuccess;
  rms_norm_k<<<static_cast<unsigned>(x.rows), kT, 0, stream>>>(x, weight, eps, out);
  return cudaGetLastError();
}

cudaError_t g_rope(void* x, Elem type, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_stride,
                   int64_t rot_offset, int64_t rot_dim, const int32_t* positions, const float* inv_freq,
                   bool interleaved, float attention_scaling, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(heads * rot_dim) * sizeof(float);
  if (tokens < 0 || rot_dim <= 0 || rot_dim % 2 || smem > 48 * 1024 || tokens > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (tokens == 0 || heads == 0) return cudaSuccess;
  rope_k<<<static_cast<unsigned>(tokens), 128, smem, stream>>>(x, type, heads, token_stride, head_stride, rot_offset,
                                                               rot_dim, positions, inv_freq, interleaved,
                                                               attention_scaling);
  return cudaGetLastError();
}

cudaError_t g_silu_and_mul(Mat gate_up, Mat out, cudaStream_t stream) {
  if (gate_up.cols != 2 * out.cols || gate_up.rows != out.rows) return cudaErrorInvalidValue;
  if (out.rows * out.cols == 0) return cudaSuccess;
  silu_mul_k<<<grid_of(out.rows * out.cols), kT, 0, stream>>>(gate_up, out);
  return cudaGetLastError();
}

cudaError_t g_scatter_rows(Mat src, const int32_t* slots, Mat dst, cudaStream_t stream) {
  if (src.cols != dst.cols) return cudaErrorInvalidValue;
  if (src.rows * src.cols == 0) return cudaSuccess;
  scatter_rows_k<<<grid_of(src.rows * src.cols), kT, 0, stream>>>(src, slots, dst);
  return cudaGetLastError();
}

cudaError_t g_gather_rows(Mat src, const int32_t* idx, Mat dst, cudaStream_t stream) {
  if (src.cols != dst.cols) return cudaErrorInvalidValue;
  if (dst.rows * dst.cols == 0) return cudaSuccess;
  gather_rows_k<<<grid_of(dst.rows * dst.cols), kT, 0, stream>>>(src, idx, dst);
  return cudaGetLastError();
}

cudaError_t g_scatter_add_rows(Mat src, const int32_t* offsets, const int32_t* src_rows, const int32_t* target_rows,
                               int64_t n_targets, const float* weights, Mat dst, cudaStream_t stream) {
  if (src.cols != dst.cols || n_targets < 0) return cudaErrorInvalidValue;
  if (n_targets * dst.cols == 0) return cudaSuccess;
  scatter_add_k<<<grid_of(n_targets * dst.cols), kT, 0, stream>>>(src, offsets, src_rows, target_rows, n_targets,
                                                                  weights, dst);
  return cudaGetLastError();
}

cudaError_t g_argmax(Mat logits, int32_t* out, cudaStream_t stream) {
  if (logits.rows < 0 || logits.cols <= 0 || logits.rows > 0x7fffffff || logits.cols > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (logits.rows == 0) return cudaSuccess;
  argmax_k<<<static_cast<unsigned>(logits.rows), 256, 0, stream>>>(logits, out);
  return cudaGetLastError();
}

cudaError_t g_attention(AttnOperand q, AttnOperand k_cache, AttnOperand v_cache, void* out, Elem out_type,
                        int64_t tokens, int64_t heads, int64_t head_dim, int64_t v_dim, HeadMapping map,
                        const int32_t* seq_of, const int32_t* pos_of, const int32_t* block_tables, int64_t max_pages,
                        int64_t page_size, float scale, cudaStream_t stream) {
  if (tokens < 0 || heads <= 0 || head_dim <= 0 || v_dim <= 0 || v_dim > 512 || map.group <= 0 || page_size <= 0)
    return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  const int64_t threads = tokens * heads * 32;
  attention_k<<<static_cast<unsigned>((threads + 127) / 128), 128, 0, stream>>>(
      q, k_cache, v_cache, out, out_type, tokens, heads, head_dim, v_dim, map, seq_of, pos_of, block_tables, max_pages,
      page_size, scale);
  return cudaGetLastError();
}

cudaError_t g_mla_attention(AttnOperand q, const void* latent, Elem latent_type, const void* w_kv_b, Elem w_type,
                            void* out, Elem out_type, int64_t tokens, int64_t heads, int64_t nope, int64_t rope_dim,
                            int64_t latent_dim, int64_t v_dim, const int32_t* seq_of, const int32_t* pos_of,
                            const int32_t* block_tables, int64_t max_pages, int64_t page_size, float scale,
                            cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(2 * latent_dim + rope_dim) * sizeof(float);
  if (tokens < 0 || heads <= 0 || latent_dim <= 0 || latent_dim > 1024 || rope_dim < 0 || v_dim <= 0 ||
      page_size <= 0 || tokens * heads > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  mla_k<<<static_cast<unsigned>(tokens * heads), 128, smem, stream>>>(
      q, latent, latent_type, w_kv_b, w_type, out, out_type, heads, nope, rope_dim, latent_dim, v_dim, seq_of, pos_of,
      block_tables, max_pages, page_size, scale);
  return cudaGetLastError();
}

}  // namespace parasol::kernels

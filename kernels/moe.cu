// MoE routing: softmax top-k (Mixtral, Qwen-MoE), sigmoid group-limited top-k (DeepSeek-V3), and the token permute /
// unpermute around the expert GEMMs. One warp per token for routing: a lane holds experts lane, lane + 32, ... in
// registers (compile-time slot indices only, so nothing spills to local memory). Ties go to the lowest expert index.
// moe_align sorts (token, choice) pairs by expert deterministically: one block per local expert scans all pairs twice
// (count, then a block-wide ordered scan), so no atomics decide any order.
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace parasol::kernels {
namespace detail {
namespace {

constexpr int kRouteWarps = 4;

__device__ __forceinline__ void warp_argmax(float& v, int& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > v || (ov == v && oi < idx)) {
      v = ov;
      idx = oi;
    }
  }
}

// Top-k over the lane's slots (values already final); chosen slots are set to -INFINITY. Returns in ids/vals (lane 0).
template <int S>
__device__ __forceinline__ void topk_slots(float (&val)[S], int experts, int k, int32_t* ids_out, float* w_out,
                                           const float (&weight)[S], float& wsum) {
  const int lane = threadIdx.x & 31;
  wsum = 0.f;
  for (int j = 0; j < k; ++j) {
    float bv = -INFINITY;
    int bi = 0x7fffffff;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int e = s * 32 + lane;
      if (e < experts && (val[s] > bv || (val[s] == bv && e < bi))) {
        bv = val[s];
        bi = e;
      }
    }
    warp_argmax(bv, bi);
    float w = 0.f;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      if (s * 32 + lane == bi) {
        w = weight[s];
        val[s] = -INFINITY;
      }
    }
    w = __shfl_sync(0xffffffffu, w, bi & 31);
    wsum += w;
    if (lane == 0) {
      ids_out[j] = bi;
      w_out[j] = w;
    }
  }
}

template <int S>
__global__ void topk_softmax_kernel(const float* logits, int64_t tokens, int experts, int k, bool renormalize,
                                    float scaling, int32_t* ids, float* weights) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + (threadIdx.x >> 5);
  if (t >= tokens) return;
  const int lane = threadIdx.x & 31;
  float x[S];
  float mx = -INFINITY;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int e = s * 32 + lane;
    x[s] = e < experts ? logits[t * experts + e] : -INFINITY;
    mx = fmaxf(mx, x[s]);
  }
  mx = warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int e = s * 32 + lane;
    x[s] = e < experts ? expf(x[s] - mx) : 0.f;
    sum += x[s];
  }
  sum = warp_sum(sum);
  float p[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    p[s] = x[s] / sum;
    x[s] = s * 32 + lane < experts ? p[s] : -INFINITY;
  }
  float wsum;
  topk_slots<S>(x, experts, k, ids + t * k, weights + t * k, p, wsum);
  __syncwarp();
  if (lane < k) weights[t * k + lane] = (renormalize ? weights[t * k + lane] / wsum : weights[t * k + lane]) * scaling;
}

template <int S>
__global__ void topk_sigmoid_grouped_kernel(const float* logits, const float* bias, int64_t tokens, int experts, int k,
                                            int n_group, int topk_group, bool renormalize, float scaling, int32_t* ids,
                                            float* weights) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + (threadIdx.x >> 5);
  if (t >= tokens) return;
  const int lane = threadIdx.x & 31;
  const int gsize = experts / n_group;
  float sg[S], c[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int e = s * 32 + lane;
    const float x = e < experts ? logits[t * experts + e] : 0.f;
    sg[s] = 1.f / (1.f + expf(-x));
    c[s] = e < experts ? sg[s] + (bias ? bias[e] : 0.f) : -INFINITY;
  }
  // Group scores: the sum of the two largest c of each group; lane gi keeps group gi's score.
  float my_group_score = -INFINITY;
  for (int gi = 0; gi < n_group; ++gi) {
    float a1 = -INFINITY, a2 = -INFINITY;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int e = s * 32 + lane;
      if (e < experts && e / gsize == gi) {
        if (c[s] > a1) {
          a2 = a1;
          a1 = c[s];
        } else if (c[s] > a2) {
          a2 = c[s];
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float b1 = __shfl_xor_sync(0xffffffffu, a1, o), b2 = __shfl_xor_sync(0xffffffffu, a2, o);
      if (a1 >= b1) {
        a2 = fmaxf(a2, b1);
      } else {
        a2 = fmaxf(b2, a1);
        a1 = b1;
      }
    }
    if (lane == gi) my_group_score = gsize > 1 ? a1 + a2 : a1;
  }
  uint32_t keep = 0;
  for (int j = 0; j < topk_group; ++j) {
    float v = lane < n_group ? my_group_score : -INFINITY;
    int gi = lane < n_group ? lane : 0x7fffffff;
    if (keep & (1u << (lane & 31))) v = -INFINITY;
    warp_argmax(v, gi);
    keep |= 1u << gi;
  }
  // Masked experts score 0.0 (HF masked_fill), eligible ones c.
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int e = s * 32 + lane;
    if (e < experts && !(keep & (1u << (e / gsize)))) c[s] = 0.f;
  }
  float wsum;
  topk_slots<S>(c, experts, k, ids + t * k, weights + t * k, sg, wsum);
  __syncwarp();
  if (lane < k) {
    float w = weights[t * k + lane];
    if (renormalize) w /= (wsum + 1e-20f);
    weights[t * k + lane] = w * scaling;
  }
}

// Block-wide exclusive scan of 0/1 flags for 256 threads; returns the prefix, total in `total`.
__device__ __forceinline__ int block_scan_flags(bool flag, int& total) {
  __shared__ int warp_counts[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  const int in_warp = __popc(ballot & ((1u << lane) - 1u));
  if (lane == 0) warp_counts[warp] = __popc(ballot);
  __syncthreads();
  int before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < 8; ++w) {
    if (w < warp) before += warp_counts[w];
    total += warp_counts[w];
  }
  __syncthreads();
  return before + in_warp;
}

__global__ void __launch_bounds__(256) align_kernel(const int32_t* ids, int64_t pairs, int64_t begin, int64_t local,
                                                    int32_t* offsets, int32_t* sorted_pairs, int32_t* pair_rows) {
  const int64_t e = begin + blockIdx.x;
  int below = 0, local_total = 0;
  for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
    const int32_t id = ids[i];
    below += (id >= begin && id < e);
    local_total += (id >= begin && id < begin + local);
  }
  const int offset = static_cast<int>(block_sum(static_cast<float>(below)) + 0.5f);
  const int total = static_cast<int>(block_sum(static_cast<float>(local_total)) + 0.5f);
  if (threadIdx.x == 0) {
    offsets[blockIdx.x] = offset;
    if (blockIdx.x == local - 1) offsets[local] = total;
  }
  int running = offset;
  for (int64_t base = 0; base < pairs; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const int32_t id = i < pairs ? ids[i] : -1;
    int count;
    const int pre = block_scan_flags(id == e, count);
    if (id == e) {
      sorted_pairs[running + pre] = static_cast<int32_t>(i);
      pair_rows[i] = running + pre;
    }
    if (blockIdx.x == 0 && i < pairs && !(id >= begin && id < begin + local)) pair_rows[i] = -1;
    running += count;
  }
  if (blockIdx.x == 0)
    for (int64_t i = total + threadIdx.x; i < pairs; i += blockDim.x) sorted_pairs[i] = -1;
}

__global__ void permute_kernel(const bf16* x, const int32_t* sorted_pairs, int64_t rows, int64_t k, int64_t hidden,
                               bf16* xs) {
  const int64_t nv = hidden / 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * nv;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / nv, c = (i % nv) * 8;
    const int32_t pair = sorted_pairs[r];
    Bf16x8 v;
    if (pair >= 0) {
      v = load8(x + (pair / k) * hidden + c);
    } else {
      float z[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      v = from_float8(z);
    }
    store8(xs + r * hidden + c, v);
  }
}

__global__ void unpermute_kernel(const bf16* ys, const int32_t* pair_rows, const float* w, int64_t tokens, int64_t k,
                                 int64_t hidden, bool accumulate, bf16* out) {
  const int64_t nv = hidden / 8;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tokens * nv;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / nv, c = (i % nv) * 8;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (accumulate) to_float8(load8(out + t * hidden + c), acc);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t row = pair_rows[t * k + j];
      if (row < 0) continue;
      const float wj = w[t * k + j];
      float y[8];
      to_float8(load8(ys + row * hidden + c), y);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] += wj * y[e];
    }
    store8(out + t * hidden + c, from_float8(acc));
  }
}

unsigned grid_rows(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65535LL * 32));
}

}  // namespace
}  // namespace detail

using namespace detail;

cudaError_t moe_topk_softmax(const float* logits, int64_t tokens, int64_t experts, int64_t k, bool renormalize,
                             float scaling, int32_t* topk_ids, float* topk_weights, cudaStream_t stream) {
  if (tokens < 0 || experts <= 0 || experts > 1024 || k <= 0 || k > 32 || k > experts) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((tokens + kRouteWarps - 1) / kRouteWarps);
  const int e = static_cast<int>(experts), kk = static_cast<int>(k);
  if (experts <= 64)
    topk_softmax_kernel<2>
        <<<grid, kRouteWarps * 32, 0, stream>>>(logits, tokens, e, kk, renormalize, scaling, topk_ids, topk_weights);
  else if (experts <= 256)
    topk_softmax_kernel<8>
        <<<grid, kRouteWarps * 32, 0, stream>>>(logits, tokens, e, kk, renormalize, scaling, topk_ids, topk_weights);
  else
    topk_softmax_kernel<32>
        <<<grid, kRouteWarps * 32, 0, stream>>>(logits, tokens, e, kk, renormalize, scaling, topk_ids, topk_weights);
  return cudaGetLastError();
}

cudaError_t moe_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t tokens, int64_t experts, int64_t k,
                                     int64_t n_group, int64_t topk_group, bool renormalize, float scaling,
                                     int32_t* topk_ids, float* topk_weights, cudaStream_t stream) {
  if (tokens < 0 || experts <= 0 || experts > 1024 || k <= 0 || k > 32 || n_group <= 0 || n_group > 32 ||
      experts % n_group != 0 || topk_group <= 0 || topk_group > n_group || k > topk_group * (experts / n_group))
    return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((tokens + kRouteWarps - 1) / kRouteWarps);
  const int e = static_cast<int>(experts), kk = static_cast<int>(k), ng = static_cast<int>(n_group),
            tg = static_cast<int>(topk_group);
  if (experts <= 64)
    topk_sigmoid_grouped_kernel<2><<<grid, kRouteWarps * 32, 0, stream>>>(logits, bias, tokens, e, kk, ng, tg,
                                                                          renormalize, scaling, topk_ids, topk_weights);
  else if (experts <= 256)
    topk_sigmoid_grouped_kernel<8><<<grid, kRouteWarps * 32, 0, stream>>>(logits, bias, tokens, e, kk, ng, tg,
                                                                          renormalize, scaling, topk_ids, topk_weights);
  else
    topk_sigmoid_grouped_kernel<32><<<grid, kRouteWarps * 32, 0, stream>>>(
        logits, bias, tokens, e, kk, ng, tg, renormalize, scaling, topk_ids, topk_weights);
  return cudaGetLastError();
}

cudaError_t moe_align(const int32_t* topk_ids, int64_t tokens, int64_t k, int64_t expert_begin, int64_t local_experts,
                      int32_t* expert_offsets, int32_t* sorted_pairs, int32_t* pair_rows, cudaStream_t stream) {
  if (tokens < 0 || k <= 0 || local_experts <= 0 || local_experts > 65535 || expert_begin < 0 ||
      tokens * k > (1 << 24))  // counts are reduced in fp32: exact below 2^24
    return cudaErrorInvalidValue;
  align_kernel<<<static_cast<unsigned>(local_experts), 256, 0, stream>>>(
      topk_ids, tokens * k, expert_begin, local_experts, expert_offsets, sorted_pairs, pair_rows);
  return cudaGetLastError();
}

cudaError_t moe_permute(const bf16* x, const int32_t* sorted_pairs, int64_t rows, int64_t k, int64_t hidden,
                        bf16* x_sorted, cudaStream_t stream) {
  if (rows < 0 || k <= 0 || hidden <= 0 || hidden % 8 != 0 || !aligned16(x) || !aligned16(x_sorted))
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  permute_kernel<<<grid_rows(rows * hidden / 8), 256, 0, stream>>>(x, sorted_pairs, rows, k, hidden, x_sorted);
  return cudaGetLastError();
}

cudaError_t moe_unpermute(const bf16* y_sorted, const int32_t* pair_rows, const float* topk_weights, int64_t tokens,
                          int64_t k, int64_t hidden, bool accumulate, bf16* out, cudaStream_t stream) {
  if (tokens < 0 || k <= 0 || hidden <= 0 || hidden % 8 != 0 || !aligned16(y_sorted) || !aligned16(out))
    return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  unpermute_kernel<<<grid_rows(tokens * hidden / 8), 256, 0, stream>>>(y_sorted, pair_rows, topk_weights, tokens, k,
                                                                       hidden, accumulate, out);
  return cudaGetLastError();
}

}  // namespace parasol::kernels

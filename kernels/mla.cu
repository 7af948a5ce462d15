// DeepSeek MLA attention in the absorbed (MQA) form over the latent cache, on tensor cores.
//
// Every head of a token attends the same 576-wide latent rows, so the heads are the M dimension of the products:
// a block = one query token x 16 heads x one context split, 4 warps. Per 32-key tile (double-buffered in shared
// memory through cp.async): warp w computes S for keys [8w, 8w + 8) over all 576 dims; the row max and sum are shared
// through shared memory (every warp keeps the same running max, so no rescaling disagrees); P goes to shared memory
// as bf16; then warp w accumulates O for the output dims [128w, 128w + 128) of the 512. Causal per query token, so
// decode (q_len 1) and chunked prefill use the same kernel. Long contexts are split and merged by merge_splits().
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace parasol::kernels {
namespace detail {
namespace {

constexpr int kDk = 576, kDv = 512, kHeadsPerBlock = 16, kKeys = 32, kWarpsMla = 4;
constexpr int kRs = kDk + 8;    // padded latent row (elements)
constexpr int kPs = kKeys + 8;  // padded P row
constexpr int kMaxSplitsMla = 32;
constexpr int64_t kMinChunkMla = 256;
constexpr float kLog2e = 1.4426950408889634f;
constexpr size_t kMlaSmem =
    (static_cast<size_t>(kHeadsPerBlock) * kRs + 2 * kKeys * kRs + kHeadsPerBlock * kPs) * sizeof(bf16);

__global__ void __launch_bounds__(kWarpsMla * 32)
    mla_kernel(const bf16* __restrict__ q, int64_t q_stride, const bf16* __restrict__ cache,
               const int32_t* __restrict__ block_tables, int64_t max_pages, const int32_t* __restrict__ cu_q_lens,
               const int32_t* __restrict__ ctx_lens, int64_t batch, bf16* __restrict__ out, int64_t heads,
               int64_t page_size, float scale_log2, float* part_o, float* part_ml) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sq = reinterpret_cast<bf16*>(smem_raw);  // [16][kRs]
  bf16* sc = sq + kHeadsPerBlock * kRs;          // [2][kKeys][kRs]
  bf16* sp = sc + 2 * kKeys * kRs;               // [16][kPs]
  __shared__ float sm_max[kWarpsMla][kHeadsPerBlock], sm_sum[kWarpsMla][kHeadsPerBlock];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t h0 = static_cast<int64_t>(blockIdx.x) * kHeadsPerBlock;
  const int64_t token = blockIdx.y;
  const int split = blockIdx.z, splits = gridDim.z;
  // Which sequence holds this query token.
  int64_t lo = 0, hi = batch - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (cu_q_lens[mid] <= token)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t b = lo;
  const int64_t qlen = cu_q_lens[b + 1] - cu_q_lens[b];
  const int64_t pos = ctx_lens[b] - qlen + (token - cu_q_lens[b]);
  const int64_t n_keys = pos + 1;
  const int64_t chunk = ((n_keys + splits - 1) / splits + kKeys - 1) / kKeys * kKeys;
  const int64_t start = std::min<int64_t>(n_keys, split * chunk);
  const int64_t end = std::min<int64_t>(n_keys, start + chunk);
  const int n_tiles = static_cast<int>((end - start + kKeys - 1) / kKeys);
  const int32_t* table = block_tables + b * max_pages;

  constexpr int CH = kDk / 8;
  for (int c = tid; c < kHeadsPerBlock * CH; c += kWarpsMla * 32) {
    const int r = c / CH, col = (c % CH) * 8;
    const bool ok = h0 + r < heads;
    cp_async16(sq + r * kRs + col, ok ? q + token * q_stride + (h0 + r) * kDk + col : q, ok ? 16 : 0);
  }
  auto load_tile = [&](int j, int buf) {
    for (int c = tid; c < kKeys * CH; c += kWarpsMla * 32) {
      const int r = c / CH, col = (c % CH) * 8;
      const int64_t key = start + static_cast<int64_t>(j) * kKeys + r;
      const bool ok = key < end;
      int64_t off = 0;
      if (ok) off = (static_cast<int64_t>(table[key / page_size]) * page_size + key % page_size) * kDk + col;
      cp_async16(sc + (buf * kKeys + r) * kRs + col, cache + off, ok ? 16 : 0);
    }
  };
  if (n_tiles > 0) load_tile(0, 0);
  cp_async_commit();

  float o[kDv / kWarpsMla / 8][4];
#pragma unroll
  for (int i = 0; i < kDv / kWarpsMla / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_tiles) load_tile(j + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const bf16* ct = sc + buf * kKeys * kRs;
    // S for keys [8 warp, 8 warp + 8).
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 6
    for (int ks = 0; ks < kDk / 16; ks += 2) {
      uint32_t qa0[4], qa1[4], kb[4];
      ldmatrix_x4(qa0, sq + (lane & 15) * kRs + ks * 16 + (lane >> 4) * 8);
      ldmatrix_x4(qa1, sq + (lane & 15) * kRs + (ks + 1) * 16 + (lane >> 4) * 8);
      ldmatrix_x4(kb, ct + (warp * 8 + (lane & 7)) * kRs + ks * 16 + (lane >> 3) * 8);
      mma_bf16_16816(s, qa0, kb[0], kb[1]);
      mma_bf16_16816(s, qa1, kb[2], kb[3]);
    }
    const int64_t key0 = start + static_cast<int64_t>(j) * kKeys + warp * 8 + 2 * t4;
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[e] = key0 + (e & 1) < end ? s[e] * scale_log2 : -INFINITY;
    }
    mx0 = fmaxf(s[0], s[1]);
    mx1 = fmaxf(s[2], s[3]);
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    if (t4 == 0) {
      sm_max[warp][g] = mx0;
      sm_max[warp][g + 8] = mx1;
    }
    __syncthreads();
    float tm0 = -INFINITY, tm1 = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarpsMla; ++w) {
      tm0 = fmaxf(tm0, sm_max[w][g]);
      tm1 = fmaxf(tm1, sm_max[w][g + 8]);
    }
    const float mn0 = fmaxf(m0, tm0), mn1 = fmaxf(m1, tm1);  // finite: every tile has a valid key
    const float a0 = exp2f(m0 - mn0), a1 = exp2f(m1 - mn1);
    m0 = mn0;
    m1 = mn1;
    const float p0 = exp2f(s[0] - mn0), p1 = exp2f(s[1] - mn0), p2 = exp2f(s[2] - mn1), p3 = exp2f(s[3] - mn1);
    *reinterpret_cast<uint32_t*>(sp + g * kPs + warp * 8 + 2 * t4) = pack_bf16x2(p0, p1);
    *reinterpret_cast<uint32_t*>(sp + (g + 8) * kPs + warp * 8 + 2 * t4) = pack_bf16x2(p2, p3);
    float rs0 = p0 + p1, rs1 = p2 + p3;
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      rs0 += __shfl_xor_sync(0xffffffffu, rs0, off);
      rs1 += __shfl_xor_sync(0xffffffffu, rs1, off);
    }
    if (t4 == 0) {
      sm_sum[warp][g] = rs0;
      sm_sum[warp][g + 8] = rs1;
    }
    __syncthreads();
    float ts0 = 0.f, ts1 = 0.f;
#pragma unroll
    for (int w = 0; w < kWarpsMla; ++w) {
      ts0 += sm_sum[w][g];
      ts1 += sm_sum[w][g + 8];
    }
    l0 = l0 * a0 + ts0;
    l1 = l1 * a1 + ts1;
#pragma unroll
    for (int dt = 0; dt < kDv / kWarpsMla / 8; ++dt) {
      o[dt][0] *= a0;
      o[dt][1] *= a0;
      o[dt][2] *= a1;
      o[dt][3] *= a1;
    }
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      uint32_t pa[4];
      ldmatrix_x4(pa, sp + (lane & 15) * kPs + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int dt = 0; dt < kDv / kWarpsMla / 16; ++dt) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, ct + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kRs + warp * (kDv / kWarpsMla) +
                                  dt * 16 + (lane >> 4) * 8);
        mma_bf16_16816(o[2 * dt], pa, vb[0], vb[1]);
        mma_bf16_16816(o[2 * dt + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();
  }
  cp_async_wait<0>();

  const int64_t hr0 = h0 + g, hr1 = h0 + g + 8;
  if (splits == 1) {
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
    for (int dt = 0; dt < kDv / kWarpsMla / 8; ++dt) {
      const int col = warp * (kDv / kWarpsMla) + dt * 8 + 2 * t4;
      if (hr0 < heads)
        *reinterpret_cast<uint32_t*>(out + (token * heads + hr0) * kDv + col) =
            pack_bf16x2(o[dt][0] * inv0, o[dt][1] * inv0);
      if (hr1 < heads)
        *reinterpret_cast<uint32_t*>(out + (token * heads + hr1) * kDv + col) =
            pack_bf16x2(o[dt][2] * inv1, o[dt][3] * inv1);
    }
  } else {
#pragma unroll
    for (int dt = 0; dt < kDv / kWarpsMla / 8; ++dt) {
      const int col = warp * (kDv / kWarpsMla) + dt * 8 + 2 * t4;
      if (hr0 < heads) {
        float* p = part_o + ((token * heads + hr0) * splits + split) * kDv + col;
        p[0] = o[dt][0];
        p[1] = o[dt][1];
      }
      if (hr1 < heads) {
        float* p = part_o + ((token * heads + hr1) * splits + split) * kDv + col;
        p[0] = o[dt][2];
        p[1] = o[dt][3];
      }
    }
    if (warp == 0 && t4 == 0) {
      if (hr0 < heads) {
        part_ml[((token * heads + hr0) * splits + split) * 2] = n_tiles > 0 ? m0 : -INFINITY;
        part_ml[((token * heads + hr0) * splits + split) * 2 + 1] = l0;
      }
      if (hr1 < heads) {
        part_ml[((token * heads + hr1) * splits + split) * 2] = n_tiles > 0 ? m1 : -INFINITY;
        part_ml[((token * heads + hr1) * splits + split) * 2 + 1] = l1;
      }
    }
  }
}

int mla_max_splits(int64_t max_ctx) {
  return static_cast<int>(
      std::min<int64_t>(kMaxSplitsMla, std::max<int64_t>(1, (max_ctx + kMinChunkMla - 1) / kMinChunkMla)));
}

}  // namespace
}  // namespace detail

using namespace detail;

size_t mla_workspace_bytes(int64_t total_q, int64_t heads, int64_t max_ctx) {
  const int splits = mla_max_splits(max_ctx);
  if (splits <= 1) return 0;
  return static_cast<size_t>(total_q * heads * splits) * (kDv + 2) * sizeof(float);
}

cudaError_t mla_attention(const bf16* q, int64_t q_stride, const bf16* latent_cache, const int32_t* block_tables,
                          int64_t max_pages, const int32_t* cu_q_lens, const int32_t* ctx_lens, int64_t max_q_len,
                          int64_t max_ctx, bf16* out, int64_t batch, int64_t total_q, int64_t heads, int64_t page_size,
                          float scale, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (batch < 0 || total_q < 0 || heads <= 0 || page_size <= 0 || max_ctx < 0 || q_stride % 8 != 0 || total_q > 65535 ||
      max_q_len < 0)
    return cudaErrorInvalidValue;
  if (!aligned16(q) || !aligned16(latent_cache) || !aligned16(out)) return cudaErrorInvalidValue;
  if (batch == 0 || total_q == 0) return cudaSuccess;
  const int64_t hblocks = (heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  int splits = choose_splits(hblocks * total_q, max_ctx, kMinChunkMla, mla_max_splits(max_ctx));
  const size_t per_split = static_cast<size_t>(total_q * heads) * (kDv + 2) * sizeof(float);
  if (splits > 1 && (workspace == nullptr || workspace_bytes < per_split * splits))
    splits = workspace ? static_cast<int>(std::max<size_t>(1, workspace_bytes / per_split)) : 1;
  float* po = static_cast<float*>(workspace);
  float* pml = po ? po + total_q * heads * splits * kDv : nullptr;
  cudaError_t err =
      cudaFuncSetAttribute(mla_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kMlaSmem));
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(hblocks), static_cast<unsigned>(total_q), static_cast<unsigned>(splits));
  mla_kernel<<<grid, kWarpsMla * 32, kMlaSmem, stream>>>(q, q_stride, latent_cache, block_tables, max_pages, cu_q_lens,
                                                         ctx_lens, batch, out, heads, page_size, scale * kLog2e, po,
                                                         pml);
  err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;
  return merge_splits(po, pml, total_q * heads, heads, splits, kDv, out, heads * kDv, nullptr, stream);
}

}  // namespace parasol::kernels

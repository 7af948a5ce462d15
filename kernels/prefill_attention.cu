// Prefill and chunked-prefill attention: causal, tiled flash attention (FlashAttention-2 layout) on tensor cores
// (mma.sync m16n8k16, bf16 in, fp32 accumulate), reading K/V from the paged cache.
//
// A block = 64 query rows of one sequence and one head (4 warps x 16 rows); it streams 64-key tiles of K and V into
// shared memory with cp.async, double-buffered, so the next tile loads while this one is multiplied. S = Q K^T and the
// online softmax stay in registers; P is re-packed from the accumulator layout straight into A fragments for O += P V
// (the m16n8 accumulator of two adjacent key tiles is exactly the m16k16 A layout). Rows are padded by 16 bytes in
// shared memory so ldmatrix reads of 8 rows hit 8 different bank groups.
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace parasol::kernels {
namespace detail {
namespace {

constexpr int kBM = 64, kBN = 64, kThreadsPrefill = 128;
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
constexpr int row_elems() {
  return D + 8;
}
template <int D>
constexpr size_t prefill_smem_bytes() {
  return static_cast<size_t>(kBM + 4 * kBN) * row_elems<D>() * sizeof(bf16);
}

template <int D>
__global__ void __launch_bounds__(kThreadsPrefill)
    prefill_kernel(const bf16* __restrict__ q, int64_t q_stride, const bf16* __restrict__ k_cache,
                   const bf16* __restrict__ v_cache, int64_t slot_stride, const int32_t* __restrict__ block_tables,
                   int64_t max_pages, const int32_t* __restrict__ cu_q_lens, const int32_t* __restrict__ ctx_lens,
                   bf16* __restrict__ out, int64_t heads, HeadMapping map, int64_t page_size, float scale_log2) {
  constexpr int RS = row_elems<D>();
  constexpr int CH = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sq = reinterpret_cast<bf16*>(smem_raw);
  bf16* sk = sq + kBM * RS;      // [2][kBN][RS]
  bf16* sv = sk + 2 * kBN * RS;  // [2][kBN][RS]

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t tile = gridDim.x - 1 - blockIdx.x;  // heaviest (latest) tiles first
  const int64_t q0 = cu_q_lens[b], qlen = cu_q_lens[b + 1] - q0;
  if (tile * kBM >= qlen) return;
  const int64_t ctx = ctx_lens[b];
  const int64_t first_pos = ctx - qlen + tile * kBM;  // position of the tile's first query
  const int64_t n_keys = ctx - qlen + std::min<int64_t>(qlen, (tile + 1) * kBM);
  const int n_tiles = static_cast<int>((n_keys + kBN - 1) / kBN);
  const int64_t kvh = (map.q_head_offset + h) / map.group - map.kv_head_offset;
  const int32_t* table = block_tables + b * max_pages;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // Q tile.
  for (int c = tid; c < kBM * CH; c += kThreadsPrefill) {
    const int r = c / CH, col = (c % CH) * 8;
    const int64_t row = tile * kBM + r;
    const bool ok = row < qlen;
    const bf16* src = ok ? q + (q0 + row) * q_stride + h * D + col : q;
    cp_async16(sq + r * RS + col, src, ok ? 16 : 0);
  }
  auto load_kv = [&](int j, int buf) {
    for (int c = tid; c < kBN * CH; c += kThreadsPrefill) {
      const int r = c / CH, col = (c % CH) * 8;
      const int64_t key = static_cast<int64_t>(j) * kBN + r;
      const bool ok = key < n_keys;
      int64_t off = 0;
      if (ok)
        off =
            (static_cast<int64_t>(table[key / page_size]) * page_size + key % page_size) * slot_stride + kvh * D + col;
      cp_async16(sk + (buf * kBN + r) * RS + col, k_cache + off, ok ? 16 : 0);
      cp_async16(sv + (buf * kBN + r) * RS + col, v_cache + off, ok ? 16 : 0);
    }
  };
  load_kv(0, 0);
  cp_async_commit();

  const int g = lane >> 2, t4 = lane & 3;
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  const int64_t pos0 = first_pos + warp * 16 + g, pos1 = pos0 + 8;  // this lane's two query rows
  uint32_t qa[D / 16][4];

  for (int j = 0; j < n_tiles; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_tiles) load_kv(j + 1, buf ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks)
        ldmatrix_x4(qa[ks], sq + (warp * 16 + (lane & 15)) * RS + ks * 16 + (lane >> 4) * 8);
    }
    const bf16* kt = sk + buf * kBN * RS;
    const bf16* vt = sv + buf * kBN * RS;
    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ks += 2) {
        uint32_t kb[4];
        ldmatrix_x4(kb, kt + (nt * 8 + (lane & 7)) * RS + ks * 16 + (lane >> 3) * 8);
        mma_bf16_16816(s[nt], qa[ks], kb[0], kb[1]);
        mma_bf16_16816(s[nt], qa[ks + 1], kb[2], kb[3]);
      }
    }
    // Scale, causal mask (only tiles reaching past the first query need it), online softmax.
    const int64_t key0 = static_cast<int64_t>(j) * kBN;
    const bool need_mask = key0 + kBN - 1 > first_pos + warp * 16;
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = key0 + nt * 8 + 2 * t4 + (e & 1);
        float v = s[nt][e] * scale_log2;
        if (need_mask && key > (e < 2 ? pos0 : pos1)) v = -INFINITY;
        s[nt][e] = v;
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    const float a0 = mn0 == -INFINITY ? 1.f : exp2f(m0 - mn0);
    const float a1 = mn1 == -INFINITY ? 1.f : exp2f(m1 - mn1);
    m0 = mn0;
    m1 = mn1;
    float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
      s[nt][0] = mn0 == -INFINITY ? 0.f : exp2f(s[nt][0] - mn0);
      s[nt][1] = mn0 == -INFINITY ? 0.f : exp2f(s[nt][1] - mn0);
      s[nt][2] = mn1 == -INFINITY ? 0.f : exp2f(s[nt][2] - mn1);
      s[nt][3] = mn1 == -INFINITY ? 0.f : exp2f(s[nt][3] - mn1);
      rs0 += s[nt][0] + s[nt][1];
      rs1 += s[nt][2] + s[nt][3];
    }
    l0 = l0 * a0 + rs0;
    l1 = l1 * a1 + rs1;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      o[dt][0] *= a0;
      o[dt][1] *= a0;
      o[dt][2] *= a1;
      o[dt][3] *= a1;
    }
    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dt = 0; dt < D / 16; ++dt) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, vt + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * RS + dt * 16 + (lane >> 4) * 8);
        mma_bf16_16816(o[2 * dt], pa, vb[0], vb[1]);
        mma_bf16_16816(o[2 * dt + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // the buffer is refilled next iteration
  }
  cp_async_wait<0>();

#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  const int64_t r0 = tile * kBM + warp * 16 + g, r1 = r0 + 8;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    const int col = dt * 8 + 2 * t4;
    if (r0 < qlen)
      *reinterpret_cast<uint32_t*>(out + ((q0 + r0) * heads + h) * D + col) =
          pack_bf16x2(o[dt][0] * inv0, o[dt][1] * inv0);
    if (r1 < qlen)
      *reinterpret_cast<uint32_t*>(out + ((q0 + r1) * heads + h) * D + col) =
          pack_bf16x2(o[dt][2] * inv1, o[dt][3] * inv1);
  }
}

template <int D>
cudaError_t launch_prefill(dim3 grid, const bf16* q, int64_t q_stride, const bf16* kc, const bf16* vc,
                           int64_t slot_stride, const int32_t* bt, int64_t max_pages, const int32_t* cu,
                           const int32_t* ctx, bf16* out, int64_t heads, HeadMapping map, int64_t page_size,
                           float scale_log2, cudaStream_t stream) {
  const size_t smem = prefill_smem_bytes<D>();
  cudaError_t err =
      cudaFuncSetAttribute(prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  prefill_kernel<D><<<grid, kThreadsPrefill, smem, stream>>>(q, q_stride, kc, vc, slot_stride, bt, max_pages, cu, ctx,
                                                             out, heads, map, page_size, scale_log2);
  return cudaGetLastError();
}

}  // namespace
}  // namespace detail

using namespace detail;

cudaError_t prefill_attention(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                              int64_t kv_slot_stride, const int32_t* block_tables, int64_t max_pages,
                              const int32_t* cu_q_lens, const int32_t* ctx_lens, int64_t max_q_len, bf16* out,
                              int64_t batch, int64_t heads, int64_t kv_heads, HeadMapping map, int64_t head_dim,
                              int64_t page_size, float scale, cudaStream_t stream) {
  if (batch < 0 || heads <= 0 || kv_heads <= 0 || map.group <= 0 || page_size <= 0 || max_q_len < 0 ||
      q_stride % 8 != 0 || kv_slot_stride % 8 != 0 || batch > 65535 || heads > 65535)
    return cudaErrorInvalidValue;
  if (head_dim != 64 && head_dim != 128) return cudaErrorInvalidValue;
  if (!aligned16(q) || !aligned16(k_cache) || !aligned16(v_cache) || !aligned16(out)) return cudaErrorInvalidValue;
  if (batch == 0 || max_q_len == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((max_q_len + kBM - 1) / kBM), static_cast<unsigned>(heads),
                  static_cast<unsigned>(batch));
  const float sl2 = scale * kLog2e;
  if (head_dim == 64)
    return launch_prefill<64>(grid, q, q_stride, k_cache, v_cache, kv_slot_stride, block_tables, max_pages, cu_q_lens,
                              ctx_lens, out, heads, map, page_size, sl2, stream);
  return launch_prefill<128>(grid, q, q_stride, k_cache, v_cache, kv_slot_stride, block_tables, max_pages, cu_q_lens,
                             ctx_lens, out, heads, map, page_size, sl2, stream);
}

}  // namespace parasol::kernels

// Decode attention over the paged KV cache (GQA), flash-decoding style, and the merge of split-K partial results
// (shared with MLA). Memory-bound: every K/V byte of the context is read once per kv head.
//
// Work split: a block = (kv head, group of GB query heads sharing it) x sequence x context split. Each warp streams
// tokens: LPT = head_dim / 8 lanes hold one token's row (16 bytes each, so a warp reads 32 x 16 contiguous bytes per
// load), TPW = 32 / LPT tokens per pass, U passes unrolled so 2 U independent 16-byte loads per lane are in flight.
// The K row is reused for all GB query heads (GQA), which is why one block serves a head group and not one head.
// Online softmax per warp in log2 units; the warps of a block are merged through shared memory; splits through
// merge_splits().
#include <algorithm>
#include <cmath>

#include "kernels/common.cuh"

namespace parasol::kernels {
namespace detail {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxSplits = 32;
constexpr int64_t kMinChunk = 256;
constexpr float kLog2e = 1.4426950408889634f;

template <int D, int GB, int U>
__global__ void __launch_bounds__(kWarps * 32)
    decode_kernel(const bf16* __restrict__ q, int64_t q_stride, const bf16* __restrict__ k_cache,
                  const bf16* __restrict__ v_cache, int64_t slot_stride, const int32_t* __restrict__ block_tables,
                  int64_t max_pages, const int32_t* __restrict__ ctx_lens, bf16* out, int64_t heads, HeadMapping map,
                  int64_t page_size, float scale_log2, float* part_o, float* part_ml) {
  constexpr int LPT = D / 8;
  constexpr int TPW = 32 / LPT;
  constexpr int STEP = TPW * U;  // tokens per warp iteration
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane % LPT, tok = lane / LPT;
  const int64_t h0 = static_cast<int64_t>(blockIdx.x) * GB;  // GB divides group and q_head_offset: one KV head
  const int64_t kvh = (map.q_head_offset + h0) / map.group - map.kv_head_offset;
  const int64_t b = blockIdx.y;
  const int split = blockIdx.z, splits = gridDim.z;
  const int64_t len = ctx_lens[b];
  const int64_t chunk = ((len + splits - 1) / splits + 15) / 16 * 16;
  const int64_t start = std::min<int64_t>(len, split * chunk);
  const int64_t end = std::min<int64_t>(len, start + chunk);

  float qf[GB][8];
#pragma unroll
  for (int h = 0; h < GB; ++h) {
    to_float8(load8(q + b * q_stride + (h0 + h) * D + sub * 8), qf[h]);
#pragma unroll
    for (int e = 0; e < 8; ++e) qf[h][e] *= scale_log2;
  }
  float acc[GB][8], m[GB], l[GB];
#pragma unroll
  for (int h = 0; h < GB; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.f;
  }

  const int32_t* table = block_tables + b * max_pages;
  const int64_t head_off = kvh * D + sub * 8;
  for (int64_t base = start + warp * STEP; base < end; base += kWarps * STEP) {
    Bf16x8 kr[U], vr[U];
    bool valid[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t t = base + u * TPW + tok;
      valid[u] = t < end;
      if (valid[u]) {
        const int64_t page = table[t / page_size];
        const int64_t off = (page * page_size + t % page_size) * slot_stride + head_off;
        kr[u] = load8_stream(k_cache + off);
        vr[u] = load8_stream(v_cache + off);
      }
    }
    float s[U][GB];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
      if (valid[u]) to_float8(kr[u], kf);
#pragma unroll
      for (int h = 0; h < GB; ++h) {
        float d = 0.f;
        if (valid[u]) {
#pragma unroll
          for (int e = 0; e < 8; ++e) d += qf[h][e] * kf[e];
        }
#pragma unroll
        for (int o = LPT / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[u][h] = valid[u] ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < GB; ++h) {
      float mx = s[0][h];
#pragma unroll
      for (int u = 1; u < U; ++u) mx = fmaxf(mx, s[u][h]);
#pragma unroll
      for (int o = LPT; o < 32; o <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m[h], mx);
      if (m_new == -INFINITY) continue;  // nothing valid yet
      const float alpha = exp2f(m[h] - m_new);
      m[h] = m_new;
      l[h] *= alpha;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] *= alpha;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float p = exp2f(s[u][h] - m_new);
        if (valid[u]) {
          float vf[8];
          to_float8(vr[u], vf);
          l[h] += p;
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[h][e] += p * vf[e];
        }
      }
    }
  }

  // Sum over the token slots of the warp (same m everywhere in the warp).
#pragma unroll
  for (int h = 0; h < GB; ++h) {
#pragma unroll
    for (int o = LPT; o < 32; o <<= 1) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], o);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] += __shfl_xor_sync(0xffffffffu, acc[h][e], o);
    }
  }
  __shared__ float sm_acc[kWarps][GB][D];
  __shared__ float sm_m[kWarps][GB], sm_l[kWarps][GB];
  if (tok == 0) {
#pragma unroll
    for (int h = 0; h < GB; ++h) {
#pragma unroll
      for (int e = 0; e < 8; ++e) sm_acc[warp][h][sub * 8 + e] = acc[h][e];
      if (sub == 0) {
        sm_m[warp][h] = m[h];
        sm_l[warp][h] = l[h];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < GB * D; i += blockDim.x) {
    const int h = i / D, d = i % D;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, sm_m[w][h]);
    float ll = 0.f, o = 0.f;
    if (mm != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = sm_m[w][h] == -INFINITY ? 0.f : exp2f(sm_m[w][h] - mm);
        ll += sm_l[w][h] * f;
        o += sm_acc[w][h][d] * f;
      }
    }
    const int64_t row = b * heads + h0 + h;
    if (splits == 1) {
      out[row * D + d] = __float2bfloat16(ll > 0.f ? o / ll : 0.f);
    } else {
      part_o[(row * splits + split) * D + d] = o;
      if (d == 0) {
        part_ml[(row * splits + split) * 2] = mm;
        part_ml[(row * splits + split) * 2 + 1] = ll;
      }
    }
  }
}

__global__ void merge_kernel(const float* part_o, const float* part_ml, int64_t heads, int splits, int64_t dim,
                             bf16* out, int64_t out_token_stride) {
  const int64_t row = blockIdx.x;
  const int64_t t = row / heads, h = row % heads;
  float mm = -INFINITY;
  for (int s = 0; s < splits; ++s) mm = fmaxf(mm, part_ml[(row * splits + s) * 2]);
  float ll = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float ms = part_ml[(row * splits + s) * 2];
    if (ms != -INFINITY) ll += part_ml[(row * splits + s) * 2 + 1] * exp2f(ms - mm);
  }
  const float inv = ll > 0.f ? 1.f / ll : 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < splits; ++s) {
      const float ms = part_ml[(row * splits + s) * 2];
      if (ms != -INFINITY) o += part_o[(row * splits + s) * dim + d] * exp2f(ms - mm);
    }
    out[t * out_token_stride + h * dim + d] = __float2bfloat16(o * inv);
  }
}

struct DecodeArgs {
  const bf16* q;
  int64_t q_stride;
  const bf16* kc;
  const bf16* vc;
  int64_t slot_stride;
  const int32_t* bt;
  int64_t max_pages;
  const int32_t* ctx;
  bf16* out;
  int64_t heads;
  HeadMapping map;
  int64_t page_size;
  float scale_log2;
  float* po;
  float* pml;
};

template <int D, int GB>
cudaError_t launch_decode(dim3 grid, const DecodeArgs& a, cudaStream_t stream) {
  constexpr int U = GB >= 8 ? 2 : 4;
  decode_kernel<D, GB, U><<<grid, kWarps * 32, 0, stream>>>(a.q, a.q_stride, a.kc, a.vc, a.slot_stride, a.bt,
                                                            a.max_pages, a.ctx, a.out, a.heads, a.map, a.page_size,
                                                            a.scale_log2, a.po, a.pml);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_decode_d(int gb, dim3 grid, const DecodeArgs& a, cudaStream_t stream) {
  switch (gb) {
    case 8:
      return launch_decode<D, 8>(grid, a, stream);
    case 4:
      return launch_decode<D, 4>(grid, a, stream);
    case 2:
      return launch_decode<D, 2>(grid, a, stream);
    default:
      return launch_decode<D, 1>(grid, a, stream);
  }
}

int max_splits_for(int64_t max_ctx) {
  return static_cast<int>(std::min<int64_t>(kMaxSplits, std::max<int64_t>(1, (max_ctx + kMinChunk - 1) / kMinChunk)));
}

}  // namespace

cudaError_t merge_splits(const float* part_o, const float* part_ml, int64_t rows, int64_t heads, int splits,
                         int64_t dim, bf16* out, int64_t out_token_stride, const int32_t* /*valid_splits*/,
                         cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  merge_kernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(part_o, part_ml, heads, splits, dim, out,
                                                                out_token_stride);
  return cudaGetLastError();
}

}  // namespace detail

using namespace detail;

size_t decode_attention_workspace_bytes(int64_t batch, int64_t heads, int64_t head_dim, int64_t max_ctx) {
  const int splits = max_splits_for(max_ctx);
  if (splits <= 1) return 0;
  return static_cast<size_t>(batch * heads * splits) * static_cast<size_t>(head_dim + 2) * sizeof(float);
}

cudaError_t decode_attention(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                             int64_t kv_slot_stride, const int32_t* block_tables, int64_t max_pages,
                             const int32_t* ctx_lens, int64_t max_ctx, bf16* out, int64_t batch, int64_t heads,
                             int64_t kv_heads, HeadMapping map, int64_t head_dim, int64_t page_size, float scale,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (batch < 0 || heads <= 0 || kv_heads <= 0 || map.group <= 0 || page_size <= 0 || max_ctx < 0 ||
      q_stride % 8 != 0 || kv_slot_stride % 8 != 0 || batch > 65535)
    return cudaErrorInvalidValue;
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) return cudaErrorInvalidValue;
  if (!aligned16(q) || !aligned16(k_cache) || !aligned16(v_cache) || !aligned16(out)) return cudaErrorInvalidValue;
  if (batch == 0) return cudaSuccess;
  // GB query heads per block must share one KV head: GB divides the group, the local head count and the offset.
  auto fits = [&](int gb) { return map.group % gb == 0 && heads % gb == 0 && map.q_head_offset % gb == 0; };
  const int gb = fits(8) ? 8 : fits(4) ? 4 : fits(2) ? 2 : 1;
  const int64_t base_blocks = (heads / gb) * batch;
  int splits = choose_splits(base_blocks, max_ctx, kMinChunk, max_splits_for(max_ctx));
  const size_t per_split = static_cast<size_t>(batch * heads) * static_cast<size_t>(head_dim + 2) * sizeof(float);
  if (splits > 1 && (workspace == nullptr || workspace_bytes < per_split * splits))
    splits = workspace ? static_cast<int>(std::max<size_t>(1, workspace_bytes / per_split)) : 1;
  float* po = static_cast<float*>(workspace);
  float* pml = po ? po + batch * heads * splits * head_dim : nullptr;
  const dim3 grid(static_cast<unsigned>(heads / gb), static_cast<unsigned>(batch), static_cast<unsigned>(splits));
  const DecodeArgs args{q,   q_stride, k_cache, v_cache,   kv_slot_stride, block_tables, max_pages, ctx_lens,
                        out, heads,    map,     page_size, scale * kLog2e, po,           pml};
  cudaError_t err;
  if (head_dim == 64)
    err = launch_decode_d<64>(gb, grid, args, stream);
  else if (head_dim == 128)
    err = launch_decode_d<128>(gb, grid, args, stream);
  else
    err = launch_decode_d<256>(gb, grid, args, stream);
  if (err != cudaSuccess || splits == 1) return err;
  return merge_splits(po, pml, batch * heads, heads, splits, head_dim, out, heads * head_dim, nullptr, stream);
}

}  // namespace parasol::kernels

// Device helpers shared by the kernels of parasol_kernels: 16-byte vectors of bf16, warp reductions, tensor-core
// fragments (mma.sync m16n8k16 bf16 -> fp32, ldmatrix, cp.async) and the per-device multiprocessor count.
// Internal to kernels/: not part of the launcher API in kernels.cuh.
// Thread behaviour: sm_count() caches per device in a small static table (benign race: every writer stores the same).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernels.cuh"

namespace parasol::kernels::detail {

// Eight bf16 in one 16-byte word.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 h[4];
};

__device__ __forceinline__ void to_float8(const Bf16x8& v, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 p = __bfloat1622float2(v.h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__device__ __forceinline__ Bf16x8 from_float8(const float (&f)[8]) {
  Bf16x8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return v;
}

__device__ __forceinline__ Bf16x8 load8(const bf16* p) {
  return *reinterpret_cast<const Bf16x8*>(p);
}
__device__ __forceinline__ void store8(bf16* p, const Bf16x8& v) {
  *reinterpret_cast<Bf16x8*>(p) = v;
}
// Streaming read-only load (data read once: KV cache), bypassing L1 allocation.
__device__ __forceinline__ Bf16x8 load8_stream(const bf16* p) {
  int4 r = __ldcs(reinterpret_cast<const int4*>(p));
  return *reinterpret_cast<Bf16x8*>(&r);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum for blockDim.x a multiple of 32 (<= 1024). Every thread gets the result. Uses 33 floats of smem.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < warps ? partial[lane] : 0.f;
    s = warp_sum(s);
    if (lane == 0) partial[32] = s;
  }
  __syncthreads();
  float r = partial[32];
  __syncthreads();
  return r;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// D = A * B + D for one m16n8k16 tile: A 4 regs (row-major 16x16), B 2 regs ("col" 16x8), D 4 fp32.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// 16-byte global -> shared copy; src_bytes 0 zero-fills the destination (masked rows).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

inline cudaError_t launch_status() {
  return cudaGetLastError();
}

// Multiprocessor count of the current device (cached).
int sm_count();

// Number of splits of a context for split-K attention: enough blocks to fill the GPU a few times over, at least
// `min_chunk` tokens per split, at most `max_splits`.
int choose_splits(int64_t base_blocks, int64_t max_ctx, int64_t min_chunk, int max_splits);

// Merges split-K partial attention results: part_o [rows, splits, dim] fp32 unnormalized, part_ml [rows, splits, 2]
// (running max in log2 units, sum) -> out [rows, dim] bf16, where row r = token * heads + head is written at
// out + token * out_token_stride + head * dim. splits_of_row(token) splits are valid.
cudaError_t merge_splits(const float* part_o, const float* part_ml, int64_t rows, int64_t heads, int splits,
                         int64_t dim, bf16* out, int64_t out_token_stride, const int32_t* valid_splits,
                         cudaStream_t stream);

}  // namespace parasol::kernels::detail

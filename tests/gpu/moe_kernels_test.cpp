// MoE token permutation kernels (not behind a Backend op of their own): moe_align must sort (token, choice) pairs by
// expert stably — the same order as a host stable sort — keep only this rank's experts, and moe_permute /
// moe_unpermute must round-trip to the weighted sum computed on the host. Label gpu: skipped without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "exec/cuda/cuda_backend.hpp"
#include "exec/half.hpp"
#include "kernels/kernels.cuh"

namespace parasol::kernels {
namespace {

template <class T>
T* dev(const std::vector<T>& h) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(h.size() * sizeof(T), 16)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<T*>(p);
}
template <class T>
std::vector<T> host(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

TEST(MoeKernels, AlignSortsPairsByExpertStablyAndPermuteRoundTrips) {
  if (exec::cuda::device_count() == 0) GTEST_SKIP() << "no usable CUDA device";
  const int64_t T = 300, K = 4, E = 16, begin = 4, local = 8, Hd = 64;
  std::mt19937_64 rng(5);
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  for (auto& v : ids) v = static_cast<int32_t>(rng() % E);
  std::vector<float> w(ids.size());
  for (auto& v : w) v = static_cast<float>(rng() % 1000) / 1000.0f;
  std::vector<uint16_t> x(static_cast<size_t>(T * Hd));
  for (auto& v : x) v = exec::f32_to_bf16(static_cast<float>(static_cast<int>(rng() % 200) - 100) / 64.0f);
  int32_t* d_ids = dev(ids);
  float* d_w = dev(w);
  auto* d_x = reinterpret_cast<bf16*>(dev(x));
  int32_t *off = dev(std::vector<int32_t>(local + 1)), *sorted = dev(std::vector<int32_t>(ids.size())),
          *rows = dev(std::vector<int32_t>(ids.size()));
  ASSERT_EQ(moe_align(d_ids, T, K, begin, local, off, sorted, rows, nullptr), cudaSuccess);
  // Host reference: stable order of the local pairs by expert.
  std::vector<int32_t> order;
  for (int32_t i = 0; i < static_cast<int32_t>(ids.size()); ++i)
    if (ids[i] >= begin && ids[i] < begin + local) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  const auto h_off = host(off, local + 1), h_sorted = host(sorted, ids.size()), h_rows = host(rows, ids.size());
  ASSERT_EQ(h_off[local], static_cast<int32_t>(order.size()));
  for (size_t i = 0; i < order.size(); ++i) ASSERT_EQ(h_sorted[i], order[i]) << i;
  for (size_t i = order.size(); i < ids.size(); ++i) ASSERT_EQ(h_sorted[i], -1);
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(h_rows[i] >= 0, ids[i] >= begin && ids[i] < begin + local) << i;
  // Identity experts: unpermute(permute(x)) = sum of the kept weights times x.
  bf16* xs = reinterpret_cast<bf16*>(dev(std::vector<uint16_t>(ids.size() * Hd)));
  bf16* out = reinterpret_cast<bf16*>(dev(std::vector<uint16_t>(static_cast<size_t>(T * Hd))));
  ASSERT_EQ(moe_permute(d_x, sorted, T * K, K, Hd, xs, nullptr), cudaSuccess);
  ASSERT_EQ(moe_unpermute(xs, rows, d_w, T, K, Hd, false, out, nullptr), cudaSuccess);
  const auto h_out = host(reinterpret_cast<uint16_t*>(out), static_cast<size_t>(T * Hd));
  for (int64_t t = 0; t < T; ++t) {
    float ws = 0;
    for (int64_t j = 0; j < K; ++j)
      if (ids[static_cast<size_t>(t * K + j)] >= begin && ids[static_cast<size_t>(t * K + j)] < begin + local)
        ws += w[static_cast<size_t>(t * K + j)];
    for (int64_t c = 0; c < Hd; c += 13) {
      const float want = ws * exec::bf16_to_f32(x[static_cast<size_t>(t * Hd + c)]);
      EXPECT_NEAR(exec::bf16_to_f32(h_out[static_cast<size_t>(t * Hd + c)]), want, 1e-2f * (1.0f + std::abs(want)));
    }
  }
  for (void* p :
       {static_cast<void*>(d_ids), static_cast<void*>(d_w), static_cast<void*>(d_x), static_cast<void*>(off),
        static_cast<void*>(sorted), static_cast<void*>(rows), static_cast<void*>(xs), static_cast<void*>(out)})
    cudaFree(p);
}

}  // namespace
}  // namespace parasol::kernels

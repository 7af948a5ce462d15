// The cuda backend against the cpu backend: every op on fresh random inputs (tools/device/op_checks.hpp), and the
// tensor-parallel tiny Llama on one GPU through the device-local communicator against the unsharded run.
// Label gpu: without a usable CUDA device every test here skips (cudaGetDeviceCount fails without a driver).
#include "exec/cuda/cuda_backend.hpp"

#include <gtest/gtest.h>

#include "core/common/error.hpp"
#include "exec/backend.hpp"
#include "tools/device/op_checks.hpp"
#include "tools/device/sharded_check.hpp"

namespace parasol::device_check {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (exec::cuda::device_count() == 0) GTEST_SKIP() << "no usable CUDA device"

TEST(CudaBackend, WithoutADeviceConstructionFailsWithARuntimeFailure) {
  if (exec::cuda::device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_THROW(exec::make_backend("cuda"), RuntimeFailure);
}

TEST(CudaBackend, EveryOpMatchesTheCpuBackendOnRandomInputs) {
  SKIP_WITHOUT_GPU();
  auto cpu = exec::make_backend("cpu");
  auto gpu = exec::make_backend("cuda");
  OpChecker k(*cpu, *gpu, 20261126);
  run_all_op_checks(k, false);
  ASSERT_FALSE(k.results().empty());
  for (const auto& r : k.results())
    EXPECT_TRUE(r.ok) << r.op << " " << r.shape << " " << r.dtype << ": rel err " << r.rel_err << " (tol " << r.tol
                      << ")" << (r.written ? "" : ", some outputs not written");
}

TEST(CudaBackend, OpsOnTheSameInputsAreDeterministic) {
  SKIP_WITHOUT_GPU();
  auto cpu = exec::make_backend("cpu");
  auto gpu = exec::make_backend("cuda");
  OpChecker k(*cpu, *gpu, 7);
  exec::SeqBatch s;
  int64_t S = 0;
  s = k.seq_batch({1, 1}, {900, 3000}, 16, &S);
  Twin q = k.random(exec::ElemType::kBf16, {2, 32, 128});
  Twin kc = k.random(exec::ElemType::kBf16, {S, 8, 128});
  Twin vc = k.random(exec::ElemType::kBf16, {S, 8, 128});
  Twin o1 = k.poisoned(exec::ElemType::kBf16, {2, 32, 128}), o2 = k.poisoned(exec::ElemType::kBf16, {2, 32, 128});
  gpu->attention(*q.g, *kc.g, *vc.g, s, exec::HeadMap{4, 0, 0}, 0.088f, *o1.g);
  gpu->attention(*q.g, *kc.g, *vc.g, s, exec::HeadMap{4, 0, 0}, 0.088f, *o2.g);
  EXPECT_EQ(exec::download_f32(*gpu, *o1.g), exec::download_f32(*gpu, *o2.g));
}

class ShardedOnOneGpu : public ::testing::TestWithParam<std::tuple<int, exec::ElemType>> {};

TEST_P(ShardedOnOneGpu, TensorParallelLogitsMatchTheUnshardedRun) {
  SKIP_WITHOUT_GPU();
  const auto [tp, t] = GetParam();
  const TpResult r = run_tp_check(tp, t, 0, 99);
  EXPECT_TRUE(r.error.empty()) << r.error;
  EXPECT_LE(r.rel_err, r.tol) << "tp" << tp << " " << r.dtype;
  if (t == exec::ElemType::kF32) {
    EXPECT_TRUE(r.tokens_equal);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, ShardedOnOneGpu,
                         ::testing::Combine(::testing::Values(2, 4),
                                            ::testing::Values(exec::ElemType::kBf16, exec::ElemType::kF32)));

}  // namespace
}  // namespace parasol::device_check

// The nccl communicator within one process over the GPUs of this node (needs two or more GPUs, else skipped):
// all-reduce against the host sum, split into sub-groups, all-to-all-v, and an op that a peer never joins failing
// with a CommError (communicator aborted) within the timeout. Label gpu.
#include <gtest/gtest.h>

#include <thread>

#include "exec/backend.hpp"
#include "exec/cuda/communicators.hpp"
#include "exec/cuda/cuda_backend.hpp"

namespace parasol::exec {
namespace {

struct NcclWorld {
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Communicator>> comms;
  NcclWorld(int n, double timeout_s) {
    std::vector<Backend*> raw;
    for (int i = 0; i < n; ++i) {
      BackendOptions o;
      o.device = i;
      backends.push_back(make_backend("cuda", o));
      raw.push_back(backends.back().get());
    }
    comms = cuda::make_nccl_world_local(raw, timeout_s);
  }
  void run(const std::function<void(int)>& fn) {
    std::vector<std::thread> th;
    std::vector<std::exception_ptr> err(backends.size());
    for (size_t r = 0; r < backends.size(); ++r)
      th.emplace_back([&, r] {
        try {
          fn(static_cast<int>(r));
        } catch (...) {
          err[r] = std::current_exception();
        }
      });
    for (auto& t : th) t.join();
    for (auto& e : err)
      if (e) std::rethrow_exception(e);
  }
};

TEST(NcclCommunicator, AllReduceSplitAndAllToAllVAgreeWithTheHost) {
  const int n = cuda::device_count();
  if (n < 2) GTEST_SKIP() << "needs two or more GPUs (NCCL refuses two ranks on one GPU)";
  NcclWorld w(n, 30.0);
  w.run([&](int r) {
    Backend& b = *w.backends[r];
    OwnedTensor x(b, ElemType::kF32, {1000});
    upload_f32(b, std::vector<float>(1000, static_cast<float>(r + 1)), *x);
    w.comms[r]->all_reduce(x->data, x->data, 1000, ElemType::kF32, "ar");
    EXPECT_EQ(download_f32(b, *x)[999], static_cast<float>(n * (n + 1) / 2));
    auto sub = w.comms[r]->split(r % 2, r);
    ASSERT_TRUE(sub);
    EXPECT_EQ(sub->world_rank(), r);
    std::vector<int64_t> counts(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) counts[static_cast<size_t>(j)] = j + 1;  // rank r sends j+1 to j, receives r+1
    int64_t total = 0;
    for (auto c : counts) total += c;
    OwnedTensor s(b, ElemType::kF32, {total}), d(b, ElemType::kF32, {n * (r + 1)});
    upload_f32(b, std::vector<float>(static_cast<size_t>(total), static_cast<float>(r)), *s);
    std::vector<int64_t> recv(static_cast<size_t>(n), r + 1);
    w.comms[r]->all_to_all_v(s->data, counts, d->data, recv, ElemType::kF32, "a2av");
    auto got = download_f32(b, *d);
    for (int j = 0; j < n; ++j) EXPECT_EQ(got[static_cast<size_t>(j * (r + 1))], static_cast<float>(j));
  });
}

TEST(NcclCommunicator, AnOpAPeerNeverJoinsFailsWithinTheTimeout) {
  const int n = cuda::device_count();
  if (n < 2) GTEST_SKIP() << "needs two or more GPUs";
  NcclWorld w(n, 2.0);
  std::string error;
  w.run([&](int r) {
    if (r != 0) return;
    OwnedTensor x(*w.backends[r], ElemType::kF32, {16});
    try {
      w.comms[r]->all_reduce(x->data, x->data, 16, ElemType::kF32, "L0.mlp.allreduce");
    } catch (const CommError& e) {
      error = e.what();
    }
  });
  EXPECT_NE(error.find("L0.mlp.allreduce"), std::string::npos) << error;
  EXPECT_NE(error.find("aborted"), std::string::npos) << error;
}

}  // namespace
}  // namespace parasol::exec

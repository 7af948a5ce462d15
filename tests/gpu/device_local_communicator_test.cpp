// The device-local communicator: several ranks (threads) on one GPU. Collectives against closed forms computed on
// the host, bitwise-equal results on every rank, split, point-to-point, and a missing rank named in a CommError
// within the timeout instead of a hang. Label gpu: skipped without a usable CUDA device.
#include <gtest/gtest.h>

#include <thread>

#include "exec/backend.hpp"
#include "exec/communicator.hpp"
#include "exec/cuda/communicators.hpp"
#include "exec/cuda/cuda_backend.hpp"

namespace parasol::exec {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (cuda::device_count() == 0) GTEST_SKIP() << "no usable CUDA device"

struct World {
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Communicator>> comms;
  explicit World(int n, double timeout_s = 20.0) {
    std::vector<Backend*> raw;
    for (int i = 0; i < n; ++i) {
      backends.push_back(make_backend("cuda"));
      raw.push_back(backends.back().get());
    }
    comms = cuda::make_device_local_world(raw, timeout_s);
  }
  // Runs fn(rank) on one thread per rank; rethrows the first failure.
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

std::vector<float> values(int rank, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = 0.25f * static_cast<float>((rank + 1) * (i % 97)) - 3.0f;
  return v;
}

TEST(DeviceLocalCommunicator, AllReduceSumsInRankOrderAndEveryRankGetsTheSameBits) {
  SKIP_WITHOUT_GPU();
  const int n = 3;
  const int64_t count = 10007;
  World w(n);
  std::vector<std::vector<float>> got(n);
  w.run([&](int r) {
    OwnedTensor x(*w.backends[r], ElemType::kF32, {count});
    upload_f32(*w.backends[r], values(r, count), *x);
    w.comms[r]->all_reduce(x->data, x->data, count, ElemType::kF32, "test.allreduce");
    got[r] = download_f32(*w.backends[r], *x);
  });
  for (int64_t i = 0; i < count; ++i) {
    float want = 0.0f;
    for (int r = 0; r < n; ++r) want += values(r, count)[static_cast<size_t>(i)];
    ASSERT_EQ(got[0][static_cast<size_t>(i)], want) << i;
  }
  EXPECT_EQ(got[0], got[1]);
  EXPECT_EQ(got[0], got[2]);
}

TEST(DeviceLocalCommunicator, GatherScatterAndAllToAllMoveEveryBlockToItsPlace) {
  SKIP_WITHOUT_GPU();
  const int n = 4;
  const int64_t c = 333;
  World w(n);
  w.run([&](int r) {
    Backend& b = *w.backends[r];
    Communicator& comm = *w.comms[r];
    OwnedTensor x(b, ElemType::kF32, {n * c}), y(b, ElemType::kF32, {n * c}), z(b, ElemType::kF32, {c});
    std::vector<float> mine(static_cast<size_t>(n * c));
    for (int64_t i = 0; i < n * c; ++i) mine[static_cast<size_t>(i)] = static_cast<float>(r * 100000 + i);
    upload_f32(b, mine, *x);
    comm.all_gather(x->data, y->data, c, ElemType::kF32, "gather");
    auto g = download_f32(b, *y);
    for (int j = 0; j < n; ++j) ASSERT_EQ(g[static_cast<size_t>(j * c + 5)], static_cast<float>(j * 100000 + 5));
    comm.reduce_scatter(x->data, z->data, c, ElemType::kF32, "rs");
    auto rs = download_f32(b, *z);
    float want = 0;
    for (int j = 0; j < n; ++j) want += static_cast<float>(j * 100000 + r * c + 7);
    ASSERT_EQ(rs[7], want);
    comm.all_to_all(x->data, y->data, c, ElemType::kF32, "a2a");
    auto a = download_f32(b, *y);
    for (int j = 0; j < n; ++j)
      ASSERT_EQ(a[static_cast<size_t>(j * c + 1)], static_cast<float>(j * 100000 + r * c + 1));
  });
}

TEST(DeviceLocalCommunicator, SendRecvAndSplitFormTheRequestedGroups) {
  SKIP_WITHOUT_GPU();
  const int n = 4;
  World w(n);
  w.run([&](int r) {
    Backend& b = *w.backends[r];
    OwnedTensor x(b, ElemType::kBf16, {64});
    upload_f32(b, std::vector<float>(64, static_cast<float>(r)), *x);
    auto sub = w.comms[r]->split(r % 2, -r);  // groups {0, 2} and {1, 3}, ordered by descending rank
    ASSERT_TRUE(sub);
    ASSERT_EQ(sub->size(), 2);
    EXPECT_EQ(sub->world_rank(), r);
    sub->all_reduce(x->data, x->data, 64, ElemType::kBf16, "sub");
    EXPECT_EQ(download_f32(b, *x)[3], static_cast<float>(r % 2 == 0 ? 2 : 4));
    if (r == 0) w.comms[r]->send(x->data, 64, ElemType::kBf16, 3, "p2p");
    if (r == 3) {
      w.comms[r]->recv(x->data, 64, ElemType::kBf16, 0, "p2p");
      EXPECT_EQ(download_f32(b, *x)[10], 2.0f);
    }
  });
}

TEST(DeviceLocalCommunicator, HostBuffersAreStagedThroughTheDevice) {
  SKIP_WITHOUT_GPU();
  const int n = 3;
  World w(n);
  w.run([&](int r) {
    int32_t mine = 10 * r + 1;
    std::vector<int32_t> all(n, -1);
    w.comms[r]->all_gather(&mine, all.data(), 1, ElemType::kI32, "host.gather");
    for (int j = 0; j < n; ++j) EXPECT_EQ(all[static_cast<size_t>(j)], 10 * j + 1);
    std::vector<float> v(5, static_cast<float>(r));
    w.comms[r]->all_reduce(v.data(), v.data(), 5, ElemType::kF32, "host.allreduce");
    EXPECT_EQ(v[4], 3.0f);
  });
}

TEST(DeviceLocalCommunicator, AMissingRankIsNamedInsteadOfHanging) {
  SKIP_WITHOUT_GPU();
  World w(3, 0.5);
  std::vector<std::string> errors(3);
  w.run([&](int r) {
    if (r == 2) return;  // rank 2 never joins
    OwnedTensor x(*w.backends[r], ElemType::kF32, {8});
    try {
      w.comms[r]->all_reduce(x->data, x->data, 8, ElemType::kF32, "L7.attn.allreduce");
    } catch (const CommError& e) {
      errors[r] = e.what();
      EXPECT_EQ(e.missing_ranks(), std::vector<int>{2});
    }
  });
  EXPECT_NE(errors[0].find("L7.attn.allreduce"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("rank 2"), std::string::npos) << errors[0];
}

}  // namespace
}  // namespace parasol::exec

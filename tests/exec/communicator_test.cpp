// The local communicator: every collective against its definition, sub-groups, and the no-hang guarantee (a rank
// that stalls makes the others fail within the timeout, naming it).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>

#include "exec/communicator.hpp"

namespace parasol::exec {
namespace {

// Runs fn(comm) on n threads; rethrows the first exception of rank order.
void run_ranks(int n, double timeout_s, const std::function<void(Communicator&)>& fn) {
  auto world = make_local_world(n, timeout_s);
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(*world[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

float value(int rank, int64_t i) { return 0.25f * static_cast<float>(rank + 1) + 0.001f * static_cast<float>(i); }

TEST(LocalCommunicator, AllReduceIsTheRankOrderSumOnEveryRank) {
  const int n = 4;
  const int64_t count = 37;
  std::vector<std::vector<float>> results(n);
  run_ranks(n, 10, [&](Communicator& c) {
    std::vector<float> buf(count);
    for (int64_t i = 0; i < count; ++i) buf[i] = value(c.rank(), i);
    c.all_reduce(buf.data(), buf.data(), count, ElemType::kF32, "test");  // in place
    results[c.rank()] = buf;
  });
  for (int64_t i = 0; i < count; ++i) {
    float expect = 0.0f;
    for (int r = 0; r < n; ++r) expect += value(r, i);
    for (int r = 0; r < n; ++r) EXPECT_EQ(results[r][i], expect) << "rank " << r << " element " << i;
  }
}

TEST(LocalCommunicator, AllGatherVAndReduceScatterMatchTheirDefinitions) {
  const int n = 3;
  run_ranks(n, 10, [&](Communicator& c) {
    std::vector<int64_t> counts{2, 0, 3};
    std::vector<float> mine(counts[c.rank()]);
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = value(c.rank(), static_cast<int64_t>(i));
    std::vector<float> all(5);
    c.all_gather_v(mine.data(), all.data(), counts, ElemType::kF32, "gv");
    std::vector<float> expect{value(0, 0), value(0, 1), value(2, 0), value(2, 1), value(2, 2)};
    EXPECT_EQ(all, expect);

    const int64_t per = 4;
    std::vector<float> send(per * n), out(per);
    for (int64_t i = 0; i < per * n; ++i) send[i] = value(c.rank(), i);
    c.reduce_scatter(send.data(), out.data(), per, ElemType::kF32, "rs");
    for (int64_t i = 0; i < per; ++i) {
      float e = 0.0f;
      for (int r = 0; r < n; ++r) e += value(r, c.rank() * per + i);
      EXPECT_EQ(out[i], e);
    }
  });
}

TEST(LocalCommunicator, AllToAllVDeliversEveryBlockToItsRank) {
  const int n = 4;
  run_ranks(n, 10, [&](Communicator& c) {
    // rank i sends (i + j) % 3 elements to rank j, each encoding (from, to, index).
    std::vector<int64_t> sc(n), rc(n);
    std::vector<int32_t> send;
    for (int j = 0; j < n; ++j) {
      sc[j] = (c.rank() + j) % 3;
      rc[j] = (j + c.rank()) % 3;
      for (int64_t k = 0; k < sc[j]; ++k) send.push_back(c.rank() * 100 + j * 10 + static_cast<int32_t>(k));
    }
    std::vector<int32_t> recv(static_cast<size_t>(rc[0] + rc[1] + rc[2] + rc[3]));
    c.all_to_all_v(send.data(), sc, recv.data(), rc, ElemType::kI32, "a2a");
    size_t p = 0;
    for (int j = 0; j < n; ++j)
      for (int64_t k = 0; k < rc[j]; ++k) EXPECT_EQ(recv[p++], j * 100 + c.rank() * 10 + k);
  });
}

TEST(LocalCommunicator, SendRecvAndSplitFormIndependentGroups) {
  const int n = 4;
  run_ranks(n, 10, [&](Communicator& c) {
    // groups {0,2} and {1,3}; key reverses the order inside each group.
    auto sub = c.split(c.rank() % 2, -c.rank());
    ASSERT_TRUE(sub);
    EXPECT_EQ(sub->size(), 2);
    EXPECT_EQ(sub->world_rank(), c.rank());
    EXPECT_EQ(sub->rank(), c.rank() < 2 ? 1 : 0);
    float x = static_cast<float>(c.rank());
    sub->all_reduce(&x, &x, 1, ElemType::kF32, "sub");
    EXPECT_EQ(x, c.rank() % 2 == 0 ? 2.0f : 4.0f);
    // ring send/recv in the world
    int32_t out = c.rank(), in = -1;
    c.send(&out, 1, ElemType::kI32, (c.rank() + 1) % n, "ring");
    c.recv(&in, 1, ElemType::kI32, (c.rank() + n - 1) % n, "ring");
    EXPECT_EQ(in, (c.rank() + n - 1) % n);
    auto none = c.split(c.rank() == 0 ? -1 : 0, 0);
    EXPECT_EQ(none == nullptr, c.rank() == 0);
  });
}

TEST(LocalCommunicator, AStalledRankMakesTheOthersFailNamingItAndTheOp) {
  const int n = 4;
  auto start = std::chrono::steady_clock::now();
  std::vector<std::string> messages(n);
  auto world = make_local_world(n, 0.3);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        if (r == 3) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
        float x = 1.0f;
        world[r]->all_reduce(&x, &x, 1, ElemType::kF32, "L7.attn.allreduce");
      } catch (const CommError& e) {
        messages[r] = e.what();
        if (r != 3) {
          ASSERT_EQ(e.missing_ranks().size(), 1u);
          EXPECT_EQ(e.missing_ranks()[0], 3);
        }
      }
    });
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(elapsed, 30.0);  // a bound on "no hang", not a timing measurement
  for (int r = 0; r < n; ++r) EXPECT_NE(messages[r].find("L7.attn.allreduce"), std::string::npos) << messages[r];
  // the first to time out names rank 3; the others report the failed group
  int naming = 0;
  for (int r = 0; r < 3; ++r) naming += messages[r].find("rank 3 did not join") != std::string::npos;
  EXPECT_GE(naming, 1);
}

TEST(LocalCommunicator, AMissingSendTimesOutNamingThePeer) {
  auto world = make_local_world(2, 0.2);
  float x = 0;
  try {
    world[1]->recv(&x, 1, ElemType::kF32, 0, "pp.recv");
    FAIL() << "recv returned without a sender";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 did not send"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("pp.recv"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace parasol::exec

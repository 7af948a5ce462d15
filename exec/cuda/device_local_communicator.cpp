// The device-local communicator (communicators.hpp): ranks are threads sharing one GPU, each with its own cuda backend
// and stream. A collective is two host meetings with a deadline:
//   1. each rank records `ready` on its stream and publishes its send pointer; meet;
//   2. each rank's stream waits on every other rank's `ready`, then reads the other ranks' send buffers directly
//      (sum kernel or device copies) into its own scratch or recv; records `done`; meet;
//   3. each rank's stream waits on every other rank's `done` before anything later on it may touch its send buffer,
//      and only then copies the scratch into recv (so in-place calls are safe).
// Events are only re-recorded after the next meeting, so a waiter never sees a later recording. Sums run in rank
// order with fp32 accumulation (kernels/sum_*), identical on every rank.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <sstream>

#include "exec/cuda/communicators.hpp"
#include "exec/cuda/cuda_backend.hpp"
#include "exec/cuda/cuda_check.hpp"
#include "exec/cuda/staging.hpp"
#include "kernels/kernels.cuh"

namespace parasol::exec::cuda {
namespace {

using Clock = std::chrono::steady_clock;

struct Message {
  void* staging = nullptr;
  size_t bytes = 0;
  cudaEvent_t ready = nullptr;
};

struct DevGroup;

struct DevSlot {
  const void* send = nullptr;
  cudaEvent_t ready = nullptr, done = nullptr;
  const std::vector<int64_t>* counts = nullptr;
  int color = 0, key = 0;
  std::shared_ptr<DevGroup> split_result;
  uint64_t stamp = UINT64_MAX;
};

struct DevGroup {
  explicit DevGroup(std::vector<int> world) : world_ranks(std::move(world)), slots(world_ranks.size()) {}
  std::vector<int> world_ranks;
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  uint64_t gen = 0;
  bool broken = false;
  std::string broken_reason;
  std::vector<int> broken_missing;
  std::vector<DevSlot> slots;
  std::map<std::pair<int, int>, std::deque<Message>> mail;  // (src, dst) -> messages
};

std::string format_s(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

class DeviceLocalCommunicator : public Communicator {
 public:
  DeviceLocalCommunicator(std::shared_ptr<DevGroup> g, int rank, Backend& backend, double timeout_s)
      : g_(std::move(g)), rank_(rank), backend_(&backend), stream_(stream_of(backend)), device_(device_of(backend)) {
    timeout_s_ = timeout_s;
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    PARASOL_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  }
  ~DeviceLocalCommunicator() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cudaEventDestroy(ready_);
    cudaEventDestroy(done_);
    if (scratch_) cudaFree(scratch_);
  }

  std::string name() const override { return "device-local"; }
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(g_->world_ranks.size()); }
  int world_rank() const override { return g_->world_ranks[rank_]; }
  int world_rank_of(int r) const override { return g_->world_ranks.at(r); }

  void all_reduce(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    reduce_blocks("all_reduce", send, recv, 0, count, type, label);
  }

  void reduce_scatter(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    reduce_blocks("reduce_scatter", send, recv, rank_ * count, count, type, label);
  }

  void all_gather(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    std::vector<int64_t> counts(size(), count);
    all_gather_v(send, recv, counts, type, label);
  }

  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts, ElemType type,
                    const std::string& label) override {
    const size_t eb = element_bytes(type);
    arrive(send, &counts, "all_gather", label);
    char* out = static_cast<char*>(recv);
    for (int r = 0; r < size(); ++r) {
      check_sizes(g_->slots[r].counts->size() == counts.size() && (*g_->slots[r].counts)[r] == counts[r], "all_gather",
                  label, r);
      const size_t bytes = static_cast<size_t>(counts[r]) * eb;
      if (bytes && g_->slots[r].send != out)
        PARASOL_CUDA_CHECK(cudaMemcpyAsync(out, g_->slots[r].send, bytes, cudaMemcpyDeviceToDevice, stream_));
      out += bytes;
    }
    depart("all_gather", label);
  }

  void all_to_all(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    std::vector<int64_t> counts(size(), count);
    all_to_all_v(send, counts, recv, counts, type, label);
  }

  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, ElemType type, const std::string& label) override {
    const size_t eb = element_bytes(type);
    arrive(send, &send_counts, "all_to_all", label);
    // Received blocks go to a scratch first: recv may be another rank's send buffer region of ours.
    int64_t total = 0;
    for (int64_t c : recv_counts) total += c;
    char* tmp = static_cast<char*>(scratch(static_cast<size_t>(total) * eb));
    char* out = tmp;
    for (int j = 0; j < size(); ++j) {
      const auto& sc = *g_->slots[j].counts;
      check_sizes(static_cast<int>(sc.size()) == size() && sc[rank_] == recv_counts[j], "all_to_all", label, j);
      int64_t off = 0;
      for (int i = 0; i < rank_; ++i) off += sc[i];
      const size_t bytes = static_cast<size_t>(recv_counts[j]) * eb;
      if (bytes)
        PARASOL_CUDA_CHECK(cudaMemcpyAsync(out, static_cast<const char*>(g_->slots[j].send) + off * eb, bytes,
                                           cudaMemcpyDeviceToDevice, stream_));
      out += bytes;
    }
    depart("all_to_all", label);
    if (total)
      PARASOL_CUDA_CHECK(
          cudaMemcpyAsync(recv, tmp, static_cast<size_t>(total) * eb, cudaMemcpyDeviceToDevice, stream_));
  }

  void send(const void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    check_peer(peer, "send", label);
    Message m;
    m.bytes = static_cast<size_t>(count) * element_bytes(type);
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaMallocAsync(&m.staging, std::max<size_t>(m.bytes, 16), stream_));
    if (m.bytes) PARASOL_CUDA_CHECK(cudaMemcpyAsync(m.staging, buf, m.bytes, cudaMemcpyDeviceToDevice, stream_));
    PARASOL_CUDA_CHECK(cudaEventCreateWithFlags(&m.ready, cudaEventDisableTiming));
    PARASOL_CUDA_CHECK(cudaEventRecord(m.ready, stream_));
    std::lock_guard<std::mutex> lk(g_->mu);
    g_->mail[{rank_, peer}].push_back(m);
    g_->cv.notify_all();
  }

  void recv(void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    check_peer(peer, "recv", label);
    Message m;
    {
      std::unique_lock<std::mutex> lk(g_->mu);
      const auto deadline = deadline_from_now();
      auto& q = g_->mail[{peer, rank_}];
      while (q.empty()) {
        if (g_->broken) throw broken_error("recv", label);
        if (Clock::now() >= deadline) {
          std::vector<int> missing{world_rank_of(peer)};
          throw CommError(prefix("recv", label) + "rank " + std::to_string(missing[0]) + " did not send within " +
                              format_s(timeout_s_) + " s",
                          "recv", missing);
        }
        g_->cv.wait_until(lk, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
      }
      m = q.front();
      q.pop_front();
    }
    const size_t bytes = static_cast<size_t>(count) * element_bytes(type);
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaStreamWaitEvent(stream_, m.ready, 0));
    cudaEventDestroy(m.ready);  // released once the wait is satisfied
    if (m.bytes != bytes) {
      PARASOL_CUDA_CHECK(cudaFreeAsync(m.staging, stream_));
      throw CommError(prefix("recv", label) + "message of " + std::to_string(m.bytes) + " bytes from rank " +
                          std::to_string(world_rank_of(peer)) + ", expected " + std::to_string(bytes),
                      "recv", {});
    }
    if (bytes) PARASOL_CUDA_CHECK(cudaMemcpyAsync(buf, m.staging, bytes, cudaMemcpyDeviceToDevice, stream_));
    PARASOL_CUDA_CHECK(cudaFreeAsync(m.staging, stream_));
  }

  void barrier(const std::string& label) override { meet("barrier", label); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    g_->slots[rank_].color = color;
    g_->slots[rank_].key = key;
    meet("split", "");
    std::vector<std::pair<int, int>> members;  // (key, rank)
    for (int r = 0; r < size(); ++r)
      if (g_->slots[r].color == color) members.push_back({g_->slots[r].key, r});
    std::sort(members.begin(), members.end());
    const int leader = members.front().second;
    int my_index = 0;
    for (size_t i = 0; i < members.size(); ++i)
      if (members[i].second == rank_) my_index = static_cast<int>(i);
    if (color >= 0 && leader == rank_) {
      std::vector<int> world;
      for (auto& m : members) world.push_back(world_rank_of(m.second));
      g_->slots[rank_].split_result = std::make_shared<DevGroup>(world);
    }
    meet("split", "");
    if (color < 0) return nullptr;
    return std::make_unique<DeviceLocalCommunicator>(g_->slots[leader].split_result, my_index, *backend_, timeout_s_);
  }

 private:
  // Sum of every rank's send[offset, offset + count) into recv[0, count), rank order, fp32 accumulation.
  void reduce_blocks(const char* op, const void* send, void* recv, int64_t offset, int64_t count, ElemType type,
                     const std::string& label) {
    if (type != ElemType::kF32 && type != ElemType::kBf16)
      throw Error(prefix(op, label) + "sums are defined on fp32 and bf16 here, not " + to_string(type));
    if (size() > kernels::kMaxSumInputs)
      throw Error(prefix(op, label) + "at most " + std::to_string(kernels::kMaxSumInputs) + " ranks share a GPU");
    const size_t eb = element_bytes(type);
    arrive(send, nullptr, op, label);
    void* tmp = scratch(static_cast<size_t>(count) * eb);
    cudaError_t err;
    if (type == ElemType::kF32) {
      std::vector<const float*> in;
      for (int r = 0; r < size(); ++r) in.push_back(static_cast<const float*>(g_->slots[r].send) + offset);
      err = kernels::sum_f32(in.data(), size(), static_cast<float*>(tmp), count, stream_);
    } else {
      std::vector<const kernels::bf16*> in;
      for (int r = 0; r < size(); ++r) in.push_back(static_cast<const kernels::bf16*>(g_->slots[r].send) + offset);
      err = kernels::sum_bf16(in.data(), size(), static_cast<kernels::bf16*>(tmp), count, stream_);
    }
    if (err != cudaSuccess) throw RuntimeFailure(prefix(op, label) + cudaGetErrorString(err));
    depart(op, label);
    if (count)
      PARASOL_CUDA_CHECK(
          cudaMemcpyAsync(recv, tmp, static_cast<size_t>(count) * eb, cudaMemcpyDeviceToDevice, stream_));
  }

  // Phase 1: publish, meet, then order this stream after every rank's prior work.
  void arrive(const void* send, const std::vector<int64_t>* counts, const char* op, const std::string& label) {
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaEventRecord(ready_, stream_));
    g_->slots[rank_].send = send;
    g_->slots[rank_].counts = counts;
    g_->slots[rank_].ready = ready_;
    meet(op, label);
    for (int r = 0; r < size(); ++r)
      if (r != rank_) PARASOL_CUDA_CHECK(cudaStreamWaitEvent(stream_, g_->slots[r].ready, 0));
  }

  // Phase 2: every rank has issued its reads; order this stream after all of them.
  void depart(const char* op, const std::string& label) {
    PARASOL_CUDA_CHECK(cudaEventRecord(done_, stream_));
    g_->slots[rank_].done = done_;
    meet(op, label);
    for (int r = 0; r < size(); ++r)
      if (r != rank_) PARASOL_CUDA_CHECK(cudaStreamWaitEvent(stream_, g_->slots[r].done, 0));
  }

  void* scratch(size_t bytes) {
    if (bytes > scratch_bytes_) {
      if (scratch_) PARASOL_CUDA_CHECK(cudaFree(scratch_));  // synchronizes: nothing pending uses it afterwards
      scratch_ = nullptr;
      scratch_bytes_ = std::max(bytes, 2 * scratch_bytes_);
      PARASOL_CUDA_CHECK(cudaMalloc(&scratch_, scratch_bytes_));
    }
    return scratch_;
  }

  Clock::time_point deadline_from_now() const {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  }

  std::string prefix(const char* op, const std::string& label) const {
    return std::string("device-local: ") + op + (label.empty() ? "" : " '" + label + "'") + " on rank " +
           std::to_string(world_rank()) + ": ";
  }

  void check_sizes(bool ok, const char* op, const std::string& label, int peer) {
    if (!ok)
      throw CommError(prefix(op, label) + "sizes disagree with rank " + std::to_string(world_rank_of(peer)), op, {});
  }

  void check_peer(int peer, const char* op, const std::string& label) {
    if (peer < 0 || peer >= size() || peer == rank_)
      throw Error(prefix(op, label) + "peer " + std::to_string(peer) + " is not another rank of this group");
  }

  CommError broken_error(const char* op, const std::string& label) {
    return CommError(prefix(op, label) + "group failed earlier: " + g_->broken_reason, op, g_->broken_missing);
  }

  // A reusable host barrier with a deadline; a timeout breaks the group so every waiter fails promptly.
  void meet(const char* op, const std::string& label) {
    std::unique_lock<std::mutex> lk(g_->mu);
    if (g_->broken) throw broken_error(op, label);
    const uint64_t gen = g_->gen;
    g_->slots[rank_].stamp = gen;
    if (++g_->count == size()) {
      g_->count = 0;
      ++g_->gen;
      g_->cv.notify_all();
      return;
    }
    const auto deadline = deadline_from_now();
    while (g_->gen == gen) {
      if (g_->broken) throw broken_error(op, label);
      if (Clock::now() >= deadline) {
        std::vector<int> missing;
        std::string names;
        for (int r = 0; r < size(); ++r)
          if (g_->slots[r].stamp != gen) {
            missing.push_back(world_rank_of(r));
            names += (names.empty() ? "" : ", ") + std::to_string(world_rank_of(r));
          }
        const std::string msg = prefix(op, label) + "rank" + (missing.size() > 1 ? "s " : " ") + names +
                                " did not join within " + format_s(timeout_s_) + " s";
        g_->broken = true;
        g_->broken_reason = msg;
        g_->broken_missing = missing;
        g_->cv.notify_all();
        throw CommError(msg, op, missing);
      }
      g_->cv.wait_until(lk, deadline);
    }
  }

  std::shared_ptr<DevGroup> g_;
  int rank_;
  Backend* backend_;
  cudaStream_t stream_;
  int device_;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_device_local_world(const std::vector<Backend*>& backends,
                                                                   double timeout_s) {
  if (backends.empty()) throw Error("device-local communicator: no ranks");
  const int dev = device_of(*backends.front());
  std::vector<int> world;
  for (size_t i = 0; i < backends.size(); ++i) {
    if (device_of(*backends[i]) != dev)
      throw Error("device-local communicator: every rank must use the same GPU (rank " + std::to_string(i) +
                  " is on device " + std::to_string(device_of(*backends[i])) + ", rank 0 on " + std::to_string(dev) +
                  "); use the nccl communicator across GPUs");
    world.push_back(static_cast<int>(i));
  }
  auto g = std::make_shared<DevGroup>(world);
  std::vector<std::unique_ptr<Communicator>> out;
  for (size_t i = 0; i < backends.size(); ++i)
    out.push_back(with_host_staging(
        std::make_unique<DeviceLocalCommunicator>(g, static_cast<int>(i), *backends[i], timeout_s), *backends[i]));
  return out;
}

}  // namespace parasol::exec::cuda

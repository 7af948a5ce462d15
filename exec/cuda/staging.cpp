// with_host_staging(): see staging.hpp.
#include "exec/cuda/staging.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>

#include "exec/cuda/cuda_backend.hpp"
#include "exec/cuda/cuda_check.hpp"

namespace parasol::exec::cuda {
namespace {

bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

int64_t sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

class StagingCommunicator : public Communicator {
 public:
  StagingCommunicator(std::unique_ptr<Communicator> inner, Backend& b)
      : inner_(std::move(inner)), backend_(&b), stream_(stream_of(b)), device_(device_of(b)) {
    timeout_s_ = inner_->timeout_s();
  }
  std::string name() const override { return inner_->name(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  int world_rank() const override { return inner_->world_rank(); }
  int world_rank_of(int r) const override { return inner_->world_rank_of(r); }
  void set_timeout(double seconds) override {
    timeout_s_ = seconds;
    inner_->set_timeout(seconds);
  }

  void all_reduce(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    const size_t b = bytes(count, type);
    staged(send, b, recv, b, [&](const void* s, void* r) { inner_->all_reduce(s, r, count, type, label); });
  }
  void all_gather(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    staged(send, bytes(count, type), recv, bytes(count * size(), type),
           [&](const void* s, void* r) { inner_->all_gather(s, r, count, type, label); });
  }
  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts, ElemType type,
                    const std::string& label) override {
    staged(send, bytes(counts.at(static_cast<size_t>(rank())), type), recv, bytes(sum(counts), type),
           [&](const void* s, void* r) { inner_->all_gather_v(s, r, counts, type, label); });
  }
  void reduce_scatter(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    staged(send, bytes(count * size(), type), recv, bytes(count, type),
           [&](const void* s, void* r) { inner_->reduce_scatter(s, r, count, type, label); });
  }
  void all_to_all(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    staged(send, bytes(count * size(), type), recv, bytes(count * size(), type),
           [&](const void* s, void* r) { inner_->all_to_all(s, r, count, type, label); });
  }
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, ElemType type, const std::string& label) override {
    staged(send, bytes(sum(send_counts), type), recv, bytes(sum(recv_counts), type),
           [&](const void* s, void* r) { inner_->all_to_all_v(s, send_counts, r, recv_counts, type, label); });
  }
  void send(const void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    staged(buf, bytes(count, type), nullptr, 0,
           [&](const void* s, void*) { inner_->send(s, count, type, peer, label); });
  }
  void recv(void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    staged(nullptr, 0, buf, bytes(count, type),
           [&](const void*, void* r) { inner_->recv(r, count, type, peer, label); });
  }
  void barrier(const std::string& label) override { inner_->barrier(label); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    auto sub = inner_->split(color, key);
    if (!sub) return nullptr;
    return std::make_unique<StagingCommunicator>(std::move(sub), *backend_);
  }

 private:
  static size_t bytes(int64_t count, ElemType t) { return static_cast<size_t>(count) * element_bytes(t); }

  template <class F>
  void staged(const void* send, size_t sbytes, void* recv, size_t rbytes, F&& fn) {
    const bool send_dev = send == nullptr || sbytes == 0 || on_device(send);
    const bool recv_dev = recv == nullptr || rbytes == 0 || on_device(recv);
    if (send_dev && recv_dev) {
      fn(send, recv);
      return;
    }
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    const bool same = send != nullptr && send == recv;
    void* ds = nullptr;
    void* dr = nullptr;
    if (!send_dev) {
      PARASOL_CUDA_CHECK(cudaMallocAsync(&ds, std::max<size_t>(same ? std::max(sbytes, rbytes) : sbytes, 16), stream_));
      PARASOL_CUDA_CHECK(cudaMemcpyAsync(ds, send, sbytes, cudaMemcpyHostToDevice, stream_));
    }
    if (same && !send_dev) {
      dr = ds;
    } else if (!recv_dev) {
      PARASOL_CUDA_CHECK(cudaMallocAsync(&dr, std::max<size_t>(rbytes, 16), stream_));
    }
    fn(send_dev ? send : ds, recv_dev ? recv : dr);
    if (!recv_dev) PARASOL_CUDA_CHECK(cudaMemcpyAsync(recv, dr, rbytes, cudaMemcpyDeviceToHost, stream_));
    if (ds) PARASOL_CUDA_CHECK(cudaFreeAsync(ds, stream_));
    if (dr && dr != ds) PARASOL_CUDA_CHECK(cudaFreeAsync(dr, stream_));
    // A host result must be complete when the call returns; a host send needs no wait (the bytes were staged).
    if (!recv_dev) PARASOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  std::unique_ptr<Communicator> inner_;
  Backend* backend_;
  cudaStream_t stream_;
  int device_;
};

}  // namespace

std::unique_ptr<Communicator> with_host_staging(std::unique_ptr<Communicator> inner, Backend& backend) {
  return std::make_unique<StagingCommunicator>(std::move(inner), backend);
}

}  // namespace parasol::exec::cuda

// The nccl communicator (communicators.hpp). Every NCCL communicator is created nonblocking (blocking = 0), so no
// NCCL call can hang the host: a call returns ncclSuccess or ncclInProgress, and wait() then polls
// ncclCommGetAsyncError (enqueue / async failures) and cudaStreamQuery (completion) against the timeout. A failure
// or a timeout aborts the communicator (ncclCommAbort; NCCL's recovery model: every surviving rank aborts its own
// communicator) and throws CommError naming the op, the label and this rank. NCCL has no per-peer progress view, so
// the missing-rank list of a timeout is empty and the message says so.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "exec/cuda/communicators.hpp"
#include "exec/cuda/cuda_backend.hpp"
#include "exec/cuda/cuda_check.hpp"
#include "exec/cuda/staging.hpp"

#ifdef PARASOL_HAVE_MPI
#include <mpi.h>
#endif

namespace parasol::exec::cuda {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(ElemType t) {
  switch (t) {
    case ElemType::kF32:
      return ncclFloat32;
    case ElemType::kBf16:
      return ncclBfloat16;
    case ElemType::kF16:
      return ncclFloat16;
    case ElemType::kI32:
      return ncclInt32;
  }
  return ncclFloat32;
}

ncclConfig_t nonblocking_config() {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  c.blocking = 0;
  return c;
}

std::string format_s(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

// Polls a communicator until its pending initialization / enqueue is done; throws on error or timeout.
void settle(ncclComm_t comm, double timeout_s, const std::string& what) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  ncclResult_t st = ncclInProgress;
  while (true) {
    PARASOL_NCCL_CHECK(ncclCommGetAsyncError(comm, &st));
    if (st == ncclSuccess) return;
    if (st != ncclInProgress) {
      ncclCommAbort(comm);
      throw CommError(what + ": " + ncclGetErrorString(st) + "; communicator aborted", "init", {});
    }
    if (Clock::now() >= deadline) {
      ncclCommAbort(comm);
      throw CommError(what + ": not complete within " + format_s(timeout_s) + " s; communicator aborted", "init", {});
    }
    std::this_thread::yield();
  }
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, Backend& backend, std::vector<int> world_ranks, double timeout_s)
      : comm_(comm),
        backend_(&backend),
        stream_(stream_of(backend)),
        device_(device_of(backend)),
        world_(std::move(world_ranks)) {
    timeout_s_ = timeout_s;
    int r = 0, n = 0;
    PARASOL_NCCL_CHECK(ncclCommUserRank(comm_, &r));
    PARASOL_NCCL_CHECK(ncclCommCount(comm_, &n));
    rank_ = r;
    size_ = n;
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaMalloc(&tiny_, 64));
  }
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (comm_) {
      if (!aborted_) {
        cudaStreamSynchronize(stream_);
        ncclCommFinalize(comm_);
        ncclResult_t st = ncclInProgress;
        const auto deadline = Clock::now() + std::chrono::seconds(10);
        while (ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st == ncclInProgress && Clock::now() < deadline)
          std::this_thread::yield();
        if (st == ncclSuccess)
          ncclCommDestroy(comm_);
        else
          ncclCommAbort(comm_);
      }
    }
    cudaFree(tiny_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int world_rank() const override { return world_.at(rank_); }
  int world_rank_of(int r) const override { return world_.at(r); }

  void all_reduce(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    enter();
    call("all_reduce", label,
         ncclAllReduce(send, recv, static_cast<size_t>(count), nccl_type(type), ncclSum, comm_, stream_));
    wait("all_reduce", label);
  }

  void all_gather(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    enter();
    call("all_gather", label, ncclAllGather(send, recv, static_cast<size_t>(count), nccl_type(type), comm_, stream_));
    wait("all_gather", label);
  }

  // NCCL has no all-gather-v: one broadcast per root, grouped.
  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts, ElemType type,
                    const std::string& label) override {
    enter();
    const size_t eb = element_bytes(type);
    call("all_gather_v", label, ncclGroupStart());
    int64_t off = 0;
    for (int r = 0; r < size_; ++r) {
      call("all_gather_v", label,
           ncclBroadcast(send, static_cast<char*>(recv) + off * eb, static_cast<size_t>(counts.at(r)), nccl_type(type),
                         r, comm_, stream_));
      off += counts[r];
    }
    call("all_gather_v", label, ncclGroupEnd());
    wait("all_gather_v", label);
  }

  void reduce_scatter(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    enter();
    call("reduce_scatter", label,
         ncclReduceScatter(send, recv, static_cast<size_t>(count), nccl_type(type), ncclSum, comm_, stream_));
    wait("reduce_scatter", label);
  }

  void all_to_all(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    std::vector<int64_t> counts(size_, count);
    all_to_all_v(send, counts, recv, counts, type, label);
  }

  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, ElemType type, const std::string& label) override {
    enter();
    const size_t eb = element_bytes(type);
    call("all_to_all", label, ncclGroupStart());
    int64_t so = 0, ro = 0;
    for (int j = 0; j < size_; ++j) {
      if (send_counts.at(j))
        call("all_to_all", label,
             ncclSend(static_cast<const char*>(send) + so * eb, static_cast<size_t>(send_counts[j]), nccl_type(type), j,
                      comm_, stream_));
      if (recv_counts.at(j))
        call("all_to_all", label,
             ncclRecv(static_cast<char*>(recv) + ro * eb, static_cast<size_t>(recv_counts[j]), nccl_type(type), j,
                      comm_, stream_));
      so += send_counts[j];
      ro += recv_counts[j];
    }
    call("all_to_all", label, ncclGroupEnd());
    wait("all_to_all", label);
  }

  // Enqueued, not awaited: the matching recv on the peer completes it (and a later wait on this rank covers it).
  void send(const void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    enter();
    call("send", label, ncclSend(buf, static_cast<size_t>(count), nccl_type(type), peer, comm_, stream_));
    settle_enqueue("send", label);
  }

  void recv(void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    enter();
    call("recv", label, ncclRecv(buf, static_cast<size_t>(count), nccl_type(type), peer, comm_, stream_));
    wait("recv", label);
  }

  void barrier(const std::string& label) override {
    enter();
    call("barrier", label, ncclAllReduce(tiny_, tiny_, 1, ncclFloat32, ncclSum, comm_, stream_));
    wait("barrier", label);
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    enter();
    ncclConfig_t cfg = nonblocking_config();
    ncclComm_t sub = nullptr;
    call("split", "", ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &sub, &cfg));
    settle_enqueue("split", "");
    if (color < 0 || sub == nullptr) return nullptr;
    settle(sub, timeout_s_, prefix("split", ""));
    // World ranks of the new group's members, gathered over the new communicator.
    int n = 0;
    PARASOL_NCCL_CHECK(ncclCommCount(sub, &n));
    int32_t* d = nullptr;
    PARASOL_CUDA_CHECK(cudaMalloc(&d, sizeof(int32_t) * (n + 1)));
    const int32_t mine = world_rank();
    PARASOL_CUDA_CHECK(cudaMemcpyAsync(d + n, &mine, sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    PARASOL_NCCL_CHECK(ncclAllGather(d + n, d, 1, ncclInt32, sub, stream_));
    settle(sub, timeout_s_, prefix("split", ""));
    std::vector<int32_t> h(static_cast<size_t>(n));
    PARASOL_CUDA_CHECK(cudaMemcpyAsync(h.data(), d, sizeof(int32_t) * n, cudaMemcpyDeviceToHost, stream_));
    PARASOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
    cudaFree(d);
    return std::make_unique<NcclCommunicator>(sub, *backend_, std::vector<int>(h.begin(), h.end()), timeout_s_);
  }

 private:
  void enter() {
    if (aborted_) throw CommError(prefix("call", "") + "communicator was aborted after an earlier failure", "call", {});
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
  }

  std::string prefix(const char* op, const std::string& label) const {
    return std::string("nccl: ") + op + (label.empty() ? "" : " '" + label + "'") + " on rank " +
           std::to_string(world_rank()) + ": ";
  }

  [[noreturn]] void fail(const char* op, const std::string& label, const std::string& why) {
    ncclCommAbort(comm_);
    aborted_ = true;
    throw CommError(prefix(op, label) + why + "; communicator aborted", op, {});
  }

  void call(const char* op, const std::string& label, ncclResult_t r) {
    if (r != ncclSuccess && r != ncclInProgress) fail(op, label, ncclGetErrorString(r));
  }

  Clock::time_point deadline() const {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  }

  // The calls are enqueued (nonblocking communicators may still be working on it).
  void settle_enqueue(const char* op, const std::string& label) {
    const auto end = deadline();
    ncclResult_t st = ncclInProgress;
    while (true) {
      if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) fail(op, label, "ncclCommGetAsyncError failed");
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) fail(op, label, ncclGetErrorString(st));
      if (Clock::now() >= end) fail(op, label, "not enqueued within " + format_s(timeout_s_) + " s");
      std::this_thread::yield();
    }
  }

  // Until the stream has run the op: polls completion and NCCL's async error under the timeout.
  void wait(const char* op, const std::string& label) {
    const auto end = deadline();
    ncclResult_t st = ncclSuccess;
    while (true) {
      if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) fail(op, label, "ncclCommGetAsyncError failed");
      if (st != ncclSuccess && st != ncclInProgress) fail(op, label, ncclGetErrorString(st));
      if (st == ncclSuccess) {
        const cudaError_t q = cudaStreamQuery(stream_);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) fail(op, label, std::string("CUDA: ") + cudaGetErrorString(q));
      }
      if (Clock::now() >= end)
        fail(op, label,
             "did not complete within " + format_s(timeout_s_) +
                 " s (a peer did not join or stalled; NCCL does not say which)");
      std::this_thread::yield();
    }
  }

  ncclComm_t comm_;
  Backend* backend_;
  cudaStream_t stream_;
  int device_;
  std::vector<int> world_;
  int rank_ = 0, size_ = 1;
  bool aborted_ = false;
  void* tiny_ = nullptr;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_nccl_world_local(const std::vector<Backend*>& backends,
                                                                 double timeout_s) {
  const int n = static_cast<int>(backends.size());
  if (n == 0) throw Error("nccl communicator: no ranks");
  ncclUniqueId id;
  PARASOL_NCCL_CHECK(ncclGetUniqueId(&id));
  std::vector<ncclComm_t> comms(static_cast<size_t>(n), nullptr);
  std::vector<ncclConfig_t> cfgs(static_cast<size_t>(n), nonblocking_config());
  // One thread creating several ranks: the documented group pattern around ncclCommInitRankConfig.
  PARASOL_NCCL_CHECK(ncclGroupStart());
  for (int r = 0; r < n; ++r) {
    PARASOL_CUDA_CHECK(cudaSetDevice(device_of(*backends[static_cast<size_t>(r)])));
    PARASOL_NCCL_CHECK(ncclCommInitRankConfig(&comms[static_cast<size_t>(r)], n, id, r, &cfgs[static_cast<size_t>(r)]));
  }
  PARASOL_NCCL_CHECK(ncclGroupEnd());
  std::vector<int> world(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) world[static_cast<size_t>(r)] = r;
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < n; ++r) {
    settle(comms[static_cast<size_t>(r)], timeout_s, "nccl: init of rank " + std::to_string(r));
    out.push_back(
        with_host_staging(std::make_unique<NcclCommunicator>(comms[static_cast<size_t>(r)],
                                                             *backends[static_cast<size_t>(r)], world, timeout_s),
                          *backends[static_cast<size_t>(r)]));
  }
  return out;
}

#ifdef PARASOL_HAVE_MPI
namespace {
void ensure_mpi() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  }
}
}  // namespace

int mpi_local_rank() {
  ensure_mpi();
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int r = 0;
  MPI_Comm_rank(node, &r);
  MPI_Comm_free(&node);
  return r;
}

std::unique_ptr<Communicator> make_nccl_world_mpi(Backend& backend, double timeout_s) {
  ensure_mpi();
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  ncclUniqueId id;
  if (rank == 0) PARASOL_NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
  PARASOL_CUDA_CHECK(cudaSetDevice(device_of(backend)));
  ncclConfig_t cfg = nonblocking_config();
  ncclComm_t comm = nullptr;
  PARASOL_NCCL_CHECK(ncclCommInitRankConfig(&comm, n, id, rank, &cfg));
  settle(comm, timeout_s, "nccl: init of rank " + std::to_string(rank));
  std::vector<int> world(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) world[static_cast<size_t>(r)] = r;
  return with_host_staging(std::make_unique<NcclCommunicator>(comm, backend, world, timeout_s), backend);
}
#endif

}  // namespace parasol::exec::cuda

// The mpi communicator: one process per rank (mpirun -np N parasol exec ...). Every operation is built on one
// primitive, exchange(): nonblocking MPI_Isend / MPI_Irecv to the peers involved, polled with MPI_Testall under our own
// deadline. So a peer that died or stalls is detected by us (MPI has no timeouts): the peers whose messages did not
// arrive are named in a CommError, and the caller aborts the job (mpi_abort). Sums are taken in rank order on one
// rank per block (reduce-scatter by all-to-all, then all-gather), so results are bitwise those of the local
// communicator and identical on every rank.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "exec/communicator.hpp"

namespace parasol::exec {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kP2pTag = 1;
constexpr int kCollectiveTagBase = 2;
constexpr int kCollectiveTags = 30000;  // MPI guarantees tags up to 32767

void ensure_mpi() {
  int init = 0;
  MPI_Initialized(&init);
  if (init) return;
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  std::atexit([] {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  });
}

struct Transfer {
  int peer;
  void* data;
  size_t bytes;
};

std::string fmt_s(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, double timeout_s) : comm_(comm) {
    timeout_s_ = timeout_s;
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Group g, wg;
    MPI_Comm_group(comm_, &g);
    MPI_Comm_group(MPI_COMM_WORLD, &wg);
    std::vector<int> mine(size_), world(size_);
    for (int i = 0; i < size_; ++i) mine[i] = i;
    MPI_Group_translate_ranks(g, size_, mine.data(), wg, world.data());
    world_ranks_ = world;
    MPI_Group_free(&g);
    MPI_Group_free(&wg);
  }
  ~MpiCommunicator() override {
    for (auto& p : pending_) MPI_Request_free(&p.request);
    if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int world_rank() const override { return world_ranks_[rank_]; }
  int world_rank_of(int r) const override { return world_ranks_.at(r); }

  void all_reduce(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    if (type != ElemType::kF32) throw Error(prefix("all_reduce", label) + "sums are defined on fp32 only");
    // reduce-scatter of balanced blocks, then all-gather
    std::vector<int64_t> counts(size_);
    for (int r = 0; r < size_; ++r) counts[r] = count * (r + 1) / size_ - count * r / size_;
    int64_t my_off = count * rank_ / size_;
    std::vector<float> in(static_cast<size_t>(count));
    std::memcpy(in.data(), send, static_cast<size_t>(count) * 4);
    std::vector<float> blocks(static_cast<size_t>(counts[rank_] * size_));
    std::vector<Transfer> s, r;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      s.push_back({p, in.data() + count * p / size_, static_cast<size_t>(counts[p]) * 4});
      r.push_back({p, blocks.data() + counts[rank_] * p, static_cast<size_t>(counts[rank_]) * 4});
    }
    std::memcpy(blocks.data() + counts[rank_] * rank_, in.data() + my_off, static_cast<size_t>(counts[rank_]) * 4);
    exchange("all_reduce", label, s, r);
    std::vector<float> acc(static_cast<size_t>(counts[rank_]), 0.0f);
    for (int p = 0; p < size_; ++p)
      for (int64_t i = 0; i < counts[rank_]; ++i) acc[i] += blocks[counts[rank_] * p + i];
    all_gather_v(acc.data(), recv, counts, ElemType::kF32, label);
  }

  void all_gather(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    all_gather_v(send, recv, std::vector<int64_t>(size_, count), type, label);
  }

  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts, ElemType type,
                    const std::string& label) override {
    size_t eb = element_bytes(type);
    std::vector<char> mine(static_cast<const char*>(send), static_cast<const char*>(send) + counts[rank_] * eb);
    std::vector<Transfer> s, r;
    char* out = static_cast<char*>(recv);
    size_t off = 0, my_off = 0;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) {
        my_off = off;
      } else {
        s.push_back({p, mine.data(), mine.size()});
        r.push_back({p, out + off, static_cast<size_t>(counts[p]) * eb});
      }
      off += counts[p] * eb;
    }
    exchange("all_gather", label, s, r);
    if (!mine.empty()) std::memcpy(out + my_off, mine.data(), mine.size());
  }

  void reduce_scatter(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    if (type != ElemType::kF32) throw Error(prefix("reduce_scatter", label) + "sums are defined on fp32 only");
    std::vector<float> in(static_cast<size_t>(count * size_)), blocks(static_cast<size_t>(count * size_));
    std::memcpy(in.data(), send, in.size() * 4);
    std::vector<Transfer> s, r;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      s.push_back({p, in.data() + count * p, static_cast<size_t>(count) * 4});
      r.push_back({p, blocks.data() + count * p, static_cast<size_t>(count) * 4});
    }
    std::memcpy(blocks.data() + count * rank_, in.data() + count * rank_, static_cast<size_t>(count) * 4);
    exchange("reduce_scatter", label, s, r);
    std::vector<float> acc(static_cast<size_t>(count), 0.0f);
    for (int p = 0; p < size_; ++p)
      for (int64_t i = 0; i < count; ++i) acc[i] += blocks[count * p + i];
    std::memcpy(recv, acc.data(), acc.size() * 4);
  }

  void all_to_all(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    std::vector<int64_t> c(size_, count);
    all_to_all_v(send, c, recv, c, type, label);
  }

  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, ElemType type, const std::string& label) override {
    size_t eb = element_bytes(type);
    int64_t total = 0;
    for (int64_t c : send_counts) total += c;
    std::vector<char> in(static_cast<const char*>(send), static_cast<const char*>(send) + total * eb);
    std::vector<Transfer> s, r;
    char* out = static_cast<char*>(recv);
    size_t so = 0, ro = 0, my_so = 0, my_ro = 0;
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) {
        my_so = so;
        my_ro = ro;
      } else {
        s.push_back({p, in.data() + so, static_cast<size_t>(send_counts[p]) * eb});
        r.push_back({p, out + ro, static_cast<size_t>(recv_counts[p]) * eb});
      }
      so += send_counts[p] * eb;
      ro += recv_counts[p] * eb;
    }
    if (send_counts[rank_] != recv_counts[rank_])
      throw CommError(prefix("all_to_all", label) + "send and receive counts to itself differ", "all_to_all", {});
    exchange("all_to_all", label, s, r);
    if (send_counts[rank_]) std::memcpy(out + my_ro, in.data() + my_so, static_cast<size_t>(send_counts[rank_]) * eb);
  }

  void send(const void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    progress();
    Pending p;
    p.data.assign(static_cast<const char*>(buf), static_cast<const char*>(buf) + count * element_bytes(type));
    p.peer = peer;
    p.label = label;
    pending_.push_back(std::move(p));
    Pending& q = pending_.back();
    MPI_Isend(q.data.data(), static_cast<int>(q.data.size()), MPI_BYTE, peer, kP2pTag, comm_, &q.request);
  }

  void recv(void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    progress();
    std::vector<Transfer> r{{peer, buf, static_cast<size_t>(count) * element_bytes(type)}};
    wait("recv", label, {}, r, kP2pTag, " did not send");
  }

  void barrier(const std::string& label) override {
    std::vector<Transfer> s, r;
    char dummy = 0;
    for (int p = 0; p < size_; ++p)
      if (p != rank_) {
        s.push_back({p, &dummy, 0});
        r.push_back({p, &dummy, 0});
      }
    exchange("barrier", label, s, r);
    // pending point-to-point sends must be out before a barrier completes
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    while (!pending_.empty()) {
      progress();
      if (pending_.empty()) break;
      if (Clock::now() >= deadline) {
        const Pending& p = pending_.front();
        throw CommError(prefix("send", p.label) + "rank " + std::to_string(world_rank_of(p.peer)) +
                            " did not receive within " + fmt_s(timeout_s_) + " s",
                        "send", {world_rank_of(p.peer)});
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm out = MPI_COMM_NULL;
    MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &out);
    if (out == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCommunicator>(out, timeout_s_);
  }

 private:
  struct Pending {
    std::vector<char> data;
    int peer = 0;
    std::string label;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  std::string prefix(const char* op, const std::string& label) const {
    return std::string("mpi: ") + op + (label.empty() ? "" : " '" + label + "'") + " on rank " +
           std::to_string(world_rank()) + ": ";
  }

  // Completes what it can of the buffered sends, without waiting.
  void progress() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done ? pending_.erase(it) : it + 1;
    }
  }

  void exchange(const char* op, const std::string& label, const std::vector<Transfer>& s,
                const std::vector<Transfer>& r) {
    progress();
    int tag = kCollectiveTagBase + static_cast<int>(seq_++ % kCollectiveTags);
    wait(op, label, s, r, tag, " did not join");
  }

  // Posts the receives and sends, then polls them until done or the deadline.
  void wait(const char* op, const std::string& label, const std::vector<Transfer>& s, const std::vector<Transfer>& r,
            int tag, const char* verb) {
    std::vector<MPI_Request> req(r.size() + s.size(), MPI_REQUEST_NULL);
    for (size_t i = 0; i < r.size(); ++i)
      MPI_Irecv(r[i].data, static_cast<int>(r[i].bytes), MPI_BYTE, r[i].peer, tag, comm_, &req[i]);
    for (size_t i = 0; i < s.size(); ++i)
      MPI_Isend(s[i].data, static_cast<int>(s[i].bytes), MPI_BYTE, s[i].peer, tag, comm_, &req[r.size() + i]);
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    int spins = 0;
    for (;;) {
      int done = 0;
      MPI_Testall(static_cast<int>(req.size()), req.data(), &done, MPI_STATUSES_IGNORE);
      if (done) return;
      if (Clock::now() >= deadline) break;
      if (++spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    // Name the peers whose messages did not arrive (or, failing that, did not leave).
    std::vector<int> missing;
    for (size_t i = 0; i < req.size(); ++i) {
      int done = 0;
      if (req[i] != MPI_REQUEST_NULL) MPI_Test(&req[i], &done, MPI_STATUS_IGNORE);
      if (req[i] != MPI_REQUEST_NULL && !done) {
        int peer = i < r.size() ? r[i].peer : s[i - r.size()].peer;
        int w = world_rank_of(peer);
        if (std::find(missing.begin(), missing.end(), w) == missing.end()) missing.push_back(w);
      }
    }
    // Withdraw what is still posted, so nothing lands in buffers the caller is about to free.
    for (size_t i = 0; i < req.size(); ++i) {
      if (req[i] == MPI_REQUEST_NULL) continue;
      if (i < r.size()) {
        MPI_Cancel(&req[i]);
        MPI_Wait(&req[i], MPI_STATUS_IGNORE);
      } else {
        MPI_Request_free(&req[i]);
      }
    }
    std::sort(missing.begin(), missing.end());
    std::string list;
    for (int m : missing) list += (list.empty() ? "" : ", ") + std::to_string(m);
    throw CommError(prefix(op, label) + "rank" + (missing.size() > 1 ? "s " : " ") + list + verb + " within " +
                        fmt_s(timeout_s_) + " s",
                    op, missing);
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
  uint64_t seq_ = 0;
  std::vector<Pending> pending_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_world(double timeout_s) {
  ensure_mpi();
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, timeout_s);
}

void mpi_abort(int code) {
  ensure_mpi();
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace parasol::exec

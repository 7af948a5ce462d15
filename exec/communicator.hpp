// Communicator: the collectives and point-to-point transfers of a Step, over a group of ranks. Implementations:
// `local` (ranks are threads of one process; exec/local_communicator.cpp), `mpi` (one process per rank;
// exec/mpi/, built when MPI is found) and later `nccl` (cuda helper). Buffers live in the memory of the Backend the
// ranks use: host memory for local and mpi (Backend::host_memory()), device memory for nccl.
//
// Semantics every implementation keeps (tests/exec/communicator_test.cpp checks local, tests/mpi/ checks mpi):
//   - sums are taken in rank order (r0 + r1 + ...) and every rank gets bitwise the same result, so replicated
//     activations stay identical across tensor-parallel ranks;
//   - every call takes a label (the Step op name, e.g. "L3.attn.allreduce") used in errors;
//   - no call waits forever: when a peer has not joined within timeout_s the call throws CommError naming the op, the
//     label and the (world) rank(s) that are missing. A stalled or dead rank therefore makes the others fail, not hang.
//   - split() is collective over this communicator and returns the sub-group (MPI_Comm_split semantics).
// Thread behaviour: one Communicator object per rank, used by that rank's thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/common/error.hpp"
#include "exec/tensor.hpp"

namespace parasol::exec {

// A peer failed or stalled. what(): "mpi: all_reduce 'L3.attn.allreduce' on rank 0: rank 3 did not join within 2 s".
class CommError : public RuntimeFailure {
 public:
  CommError(const std::string& message, std::string op, std::vector<int> missing_ranks)
      : RuntimeFailure(message), op_(std::move(op)), missing_(std::move(missing_ranks)) {}
  const std::string& op() const { return op_; }
  const std::vector<int>& missing_ranks() const { return missing_; }  // world ranks

 private:
  std::string op_;
  std::vector<int> missing_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;  // "local", "mpi", "nccl"
  virtual int rank() const = 0;          // in this group
  virtual int size() const = 0;
  virtual int world_rank() const = 0;    // in the communicator this group was split from, recursively
  // World rank of group member r (for error messages and for mapping Step groups).
  virtual int world_rank_of(int r) const = 0;

  double timeout_s() const { return timeout_s_; }
  // Applies to this communicator and to groups split from it afterwards.
  virtual void set_timeout(double seconds) { timeout_s_ = seconds; }

  // All buffers hold `count` elements of `type` per rank unless stated. In-place is allowed where send == recv.
  // recv = sum over ranks of send (f32 only for sums; rank order).
  virtual void all_reduce(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) = 0;
  // recv [size * count] = concatenation of every rank's send [count], in rank order.
  virtual void all_gather(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) = 0;
  // Variable counts: rank r contributes recv_counts[r] elements; recv is their concatenation.
  virtual void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& recv_counts, ElemType type,
                            const std::string& label) = 0;
  // send [size * count]; recv [count] = sum over ranks of their block `rank()` (rank order).
  virtual void reduce_scatter(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) = 0;
  // send [size * count]: block j goes to rank j; recv [size * count]: block j came from rank j.
  virtual void all_to_all(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) = 0;
  // send_counts[j] elements (consecutive, in j order) go to rank j; recv_counts[j] come from rank j, stored in j order.
  // Both sides must agree (recv_counts[j] on rank i == send_counts[i] on rank j).
  virtual void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                            const std::vector<int64_t>& recv_counts, ElemType type, const std::string& label) = 0;
  // Point-to-point within this group. send may return before the peer receives (buffered).
  virtual void send(const void* buf, int64_t count, ElemType type, int peer, const std::string& label) = 0;
  virtual void recv(void* buf, int64_t count, ElemType type, int peer, const std::string& label) = 0;
  virtual void barrier(const std::string& label) = 0;
  // Collective: ranks with the same color form a group, ordered by (key, rank). color < 0: no group (nullptr).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

 protected:
  double timeout_s_ = 60.0;
};

// A world of `n` local ranks (threads of this process). Each thread takes its own with `world[r]`.
std::vector<std::unique_ptr<Communicator>> make_local_world(int n, double timeout_s = 60.0);

#ifdef PARASOL_HAVE_MPI
// The MPI world (MPI_COMM_WORLD). Initializes MPI on first use (MPI_THREAD_SERIALIZED), finalizes at exit.
std::unique_ptr<Communicator> make_mpi_world(double timeout_s = 60.0);
// Abort every process of the MPI job (after a CommError, so that a stalled rank does not keep mpirun alive).
[[noreturn]] void mpi_abort(int code);
#endif

}  // namespace parasol::exec

// The CUDA communicators behind exec/communicator.hpp. Buffers are device memory of the `cuda` backends the ranks use;
// every transfer is ordered on the rank's backend stream, so a collective sees the results of the ops before it and
// the ops after it see its result.
//
//   device-local  several ranks (threads of this process) share ONE GPU — NCCL refuses two ranks on one device
//                 ("Duplicate GPU detected"), so tensor/expert-parallel layouts are checked for correctness on a
//                 one-GPU machine through this. Collectives meet on the host (with the timeout), then each rank's
//                 stream waits on the others' events and reads their buffers directly; sums are taken in rank order
//                 with fp32 accumulation, so every rank gets bitwise the same result. Types: sums in fp32 or bf16.
//   nccl          one GPU per rank, through NCCL: bootstrapped over MPI (rank 0's ncclUniqueId broadcast, one process
//                 per GPU) or within one process for the GPUs of one node; sub-groups by ncclCommSplit. Communicators
//                 are nonblocking (ncclConfig_t.blocking = 0): every call is polled with ncclCommGetAsyncError and
//                 cudaStreamQuery under the communicator's timeout; on an error or a timeout the communicator is
//                 aborted (ncclCommAbort) and a CommError names the op, the label and this rank. Sums follow NCCL's
//                 reduction order (identical on every rank, not necessarily rank order).
// Host buffers are accepted too (staging.hpp): they are staged through device memory on the rank's stream, and a host
// result is complete when the call returns — convenient for small metadata, slow for activations.
// Thread behaviour: one Communicator per rank, used by that rank's thread only (as the interface says); a world's
// ranks run on distinct threads.
#pragma once

#include <memory>
#include <vector>

#include "exec/backend.hpp"
#include "exec/communicator.hpp"

namespace parasol::exec::cuda {

// backends[r] is rank r's cuda backend; all on the same device. The backends must outlive the communicators.
std::vector<std::unique_ptr<Communicator>> make_device_local_world(const std::vector<Backend*>& backends,
                                                                   double timeout_s = 60.0);

// One process, one GPU per backend (distinct devices), NCCL.
std::vector<std::unique_ptr<Communicator>> make_nccl_world_local(const std::vector<Backend*>& backends,
                                                                 double timeout_s = 60.0);

#ifdef PARASOL_HAVE_MPI
// One process per GPU under MPI: this process's rank of MPI_COMM_WORLD on `backend`'s device. Initializes MPI when
// nobody has. Collective over MPI_COMM_WORLD.
std::unique_ptr<Communicator> make_nccl_world_mpi(Backend& backend, double timeout_s = 60.0);
// This process's rank among the processes of its node (MPI_COMM_TYPE_SHARED): the device ordinal to use.
int mpi_local_rank();
#endif

}  // namespace parasol::exec::cuda

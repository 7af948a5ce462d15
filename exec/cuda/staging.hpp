// Host-memory staging for the CUDA communicators (internal to exec/cuda/). NCCL and the device-local communicator
// move device memory; callers sometimes hand small host buffers to a collective (token counts, sampled ids, logits
// gathered for a report). with_host_staging() wraps a device communicator so that any host buffer is copied to
// stream-ordered device memory on the rank's stream, the inner call runs, and results are copied back (then the
// stream is synchronized, so the host sees them). Calls on device buffers pass straight through.
// Thread behaviour: like the wrapped communicator (one per rank thread).
#pragma once

#include <memory>

#include "exec/backend.hpp"
#include "exec/communicator.hpp"

namespace parasol::exec::cuda {

std::unique_ptr<Communicator> with_host_staging(std::unique_ptr<Communicator> inner, Backend& backend);

}  // namespace parasol::exec::cuda

// The `cuda` Backend (exec/backend.hpp) and what the CUDA communicators need from it. Ops run asynchronously on the
// backend's own stream: GEMMs through cuBLAS (bf16/fp16 in, fp32 accumulate; fp32 GEMMs in true fp32, no TF32), the
// rest through parasol_kernels — the fast bf16 kernels when every operand is bf16 with a supported shape, the generic
// kernels (any of fp32/bf16/fp16, the cpu backend's rounding points) otherwise. Host metadata (SeqBatch, slot tables)
// is uploaded per call into a device scratch area that is reused in stream order.
// Thread behaviour: one thread at a time per backend (the Backend contract). Several backends may share one GPU
// (ranks of the device-local communicator), each with its own stream.
#pragma once

#include <cuda_runtime_api.h>

#include "exec/backend.hpp"

namespace parasol::exec::cuda {

// The stream and device of a backend made by make_cuda_backend(); a RuntimeFailure for any other backend.
cudaStream_t stream_of(Backend& backend);
int device_of(Backend& backend);

// Number of CUDA devices usable here; 0 when there is no driver or no device (never throws).
int device_count();

}  // namespace parasol::exec::cuda

// Error checks for CUDA runtime, cuBLAS and NCCL calls: each macro evaluates the call once and, on failure, throws
// parasol::RuntimeFailure whose what() names the expression, the library's error string and file:line — the
// breadcrumb NCCL's own checks leave. Device code never throws; only host code uses these.
// Thread behaviour: stateless.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <string>

#include "core/common/error.hpp"

namespace parasol::exec::cuda {

[[noreturn]] void throw_cuda_failure(const char* library, const std::string& error, const char* expr, const char* file,
                                     int line);
const char* cublas_status_string(cublasStatus_t s);

}  // namespace parasol::exec::cuda

#define PARASOL_CUDA_CHECK(expr)                                                                                \
  do {                                                                                                          \
    const cudaError_t parasol_cuda_err_ = (expr);                                                               \
    if (parasol_cuda_err_ != cudaSuccess)                                                                       \
      ::parasol::exec::cuda::throw_cuda_failure("CUDA", cudaGetErrorString(parasol_cuda_err_), #expr, __FILE__, \
                                                __LINE__);                                                      \
  } while (0)

#define PARASOL_CUBLAS_CHECK(expr)                                                                               \
  do {                                                                                                           \
    const cublasStatus_t parasol_cublas_st_ = (expr);                                                            \
    if (parasol_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                             \
      ::parasol::exec::cuda::throw_cuda_failure(                                                                 \
          "cuBLAS", ::parasol::exec::cuda::cublas_status_string(parasol_cublas_st_), #expr, __FILE__, __LINE__); \
  } while (0)

// ncclInProgress is not a failure: nonblocking communicators return it and are then polled (nccl_communicator.cpp).
#define PARASOL_NCCL_CHECK(expr)                                                                                \
  do {                                                                                                          \
    const ncclResult_t parasol_nccl_res_ = (expr);                                                              \
    if (parasol_nccl_res_ != ncclSuccess && parasol_nccl_res_ != ncclInProgress)                                \
      ::parasol::exec::cuda::throw_cuda_failure("NCCL", ncclGetErrorString(parasol_nccl_res_), #expr, __FILE__, \
                                                __LINE__);                                                      \
  } while (0)

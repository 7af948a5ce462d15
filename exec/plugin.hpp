// The cuda plugin: the cuda backend and the CUDA communicators (exec/cuda/, kernels/) live in a shared module,
// libparasol_cuda.so, that a program opens with dlopen (RTLD_LOCAL) the first time it asks for them
// (make_backend("cuda"), cuda_plugin()). `parasol` itself therefore links neither the CUDA runtime, cuBLAS/cuBLASLt
// nor NCCL, and every command that does not run on a GPU starts without loading them (docs/executor.md, "How the cuda
// backend is loaded"; docs/benchmarks.md, start-up). The loader is generic (plugin_candidates()); the mpi communicator
// is not a plugin, for the reason in exec/CMakeLists.txt.
// The contract between a program and a plugin is one extern "C" entry point (parasol_cuda_plugin()) returning a
// table that opens with a PluginAbi. The loader refuses a plugin whose PluginAbi
// differs from its own (version, layout of the shared types, compiler and C++ library), so a stale or foreign module is
// an error message, never a crash. The tables' functions are C++ (std::unique_ptr, exceptions): both sides must be
// built by the same toolchain from the same sources, which is what the PluginAbi checks.
//
// Where a module is looked for, first match wins (plugin_candidates()):
//   1. $PARASOL_CUDA_PLUGIN, when set and not empty: that file only;
//   2. a copy already in this process (a program linked with the library directly: tests/gpu, parasol_gpu_check);
//   3. the directory of the running executable (/proc/self/exe): the build tree and a flat install;
//   4. <executable dir>/<relative path from the install bin dir to the install lib dir>/parasol, then that lib dir
//      as an absolute path (cmake --install);
//   5. the build tree that built this program (test executables live in a subdirectory of it).
// Thread behaviour: cuda_plugin() loads under a lock; once loaded the table is immutable and returned to every later
// call. A failed search is not remembered (the next call searches again). The module is never unloaded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/common/error.hpp"
#include "exec/backend.hpp"
#include "exec/communicator.hpp"

namespace parasol::exec {

// Bump when CudaPlugin or any type crossing the boundary (Backend, Communicator, Tensor, SeqBatch, ...) changes.
inline constexpr uint32_t kPluginAbiVersion = 1;
inline constexpr const char* kCudaPluginFile = "libparasol_cuda.so";
inline constexpr const char* kCudaPluginEntry = "parasol_cuda_plugin";
inline constexpr const char* kCudaPluginEnv = "PARASOL_CUDA_PLUGIN";

#define PARASOL_PLUGIN_STR2(x) #x
#define PARASOL_PLUGIN_STR(x) PARASOL_PLUGIN_STR2(x)

// What both sides must agree on. Plain C layout: the loader reads it before trusting anything else in the table.
struct PluginAbi {
  uint32_t version = 0;
  uint32_t tensor_bytes = 0;
  uint32_t seq_batch_bytes = 0;
  uint32_t backend_options_bytes = 0;
  const char* toolchain = "";  // compiler and C++ library versions, e.g. "gcc 11.4.0, libstdc++ 20230528, abi 1"

  // This translation unit's view; the loader compares the plugin's against it.
  static constexpr PluginAbi current() {
    return PluginAbi{kPluginAbiVersion, static_cast<uint32_t>(sizeof(Tensor)), static_cast<uint32_t>(sizeof(SeqBatch)),
                     static_cast<uint32_t>(sizeof(BackendOptions)),
                     "compiler " __VERSION__
#ifdef __GLIBCXX__
                     ", libstdc++ " PARASOL_PLUGIN_STR(__GLIBCXX__) ", cxx11 abi " PARASOL_PLUGIN_STR(
                         _GLIBCXX_USE_CXX11_ABI)
#endif
    };
  }
};

// The table parasol_cuda_plugin() returns (static storage in the plugin). abi first, always.
struct CudaPlugin {
  PluginAbi abi;
  // Number of usable CUDA devices; 0 without a driver or device. Never throws, creates no context.
  int (*device_count)();
  // The `cuda` Backend (exec/cuda/cuda_backend.hpp). Throws RuntimeFailure without a usable device.
  std::unique_ptr<Backend> (*make_backend)(const BackendOptions& options);
  // exec/cuda/communicators.hpp: several ranks on one GPU (threads), and NCCL over the GPUs of this node.
  std::vector<std::unique_ptr<Communicator>> (*make_device_local_world)(const std::vector<Backend*>& backends,
                                                                        double timeout_s);
  std::vector<std::unique_ptr<Communicator>> (*make_nccl_world_local)(const std::vector<Backend*>& backends,
                                                                      double timeout_s);
};

// The entry point's type: extern "C" const CudaPlugin* parasol_cuda_plugin();
using CudaPluginEntry = const CudaPlugin* (*)();

// Load the plugin (once) and return its table. When it cannot be found or loaded, or its ABI differs, throw a
// ConfigError (exit code 2) naming every file tried and why each failed (dlerror(), or the ABI field that differs).
const CudaPlugin& cuda_plugin();

// The files a search for `file` tries, in order (for messages, docs and tests). "(loaded)" stands for step 2.
std::vector<std::string> plugin_candidates(const std::string& file, const char* env_var);
std::vector<std::string> cuda_plugin_candidates();

// Load the module at `path` (no search), resolve the entry point and check its ABI; ConfigError with the reason.
const CudaPlugin& load_cuda_plugin_file(const std::string& path);

// True when this build produced the plugin (nvcc, cuBLAS and NCCL found at configure time).
bool cuda_plugin_built();

}  // namespace parasol::exec

// The cuda plugin's entry point (exec/plugin.hpp): the one extern "C" symbol a program looks up after dlopen of
// libparasol_cuda.so. Returns a table of static storage; its PluginAbi is this build's, which the loader compares with
// its own before calling anything else.
// Thread behaviour: the table is a constant; the function may be called from any thread.
#include "exec/cuda/communicators.hpp"
#include "exec/cuda/cuda_backend.hpp"
#include "exec/plugin.hpp"

extern "C" __attribute__((visibility("default"))) const parasol::exec::CudaPlugin* parasol_cuda_plugin() {
  using namespace parasol::exec;
  static const CudaPlugin table{PluginAbi::current(), &cuda::device_count, &make_cuda_backend,
                                &cuda::make_device_local_world, &cuda::make_nccl_world_local};
  return &table;
}

// The plugin loader (exec/plugin.hpp), without a GPU: a missing or foreign module is a ConfigError naming the file
// and dlerror()'s reason; $PARASOL_CUDA_PLUGIN replaces the search; and when this build made the cuda plugin
// (PARASOL_CUDA_PLUGIN_PATH) it loads, its entry point resolves, its ABI equals this program's, the search finds the
// same module, and an exception thrown inside it is caught here by its type. No device is created.
#include "exec/plugin.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "core/common/error.hpp"
#include "exec/backend.hpp"

namespace parasol::exec {
namespace {

// Sets an environment variable for the scope of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

std::string config_error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError";
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(CudaPlugin, AMissingFileIsAConfigErrorNamingTheFileAndWhyItCouldNotLoad) {
  const std::string path = "/nonexistent-parasol-dir/libparasol_cuda.so";
  const std::string msg = config_error_of([&] { load_cuda_plugin_file(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  EXPECT_TRUE(contains(msg, "No such file")) << msg;  // dlerror()'s reason
}

TEST(CudaPlugin, ALibraryWithoutTheEntryPointIsRefused) {
  // libc is loaded in every process; dlopen finds it by its soname.
  const std::string msg = config_error_of([&] { load_cuda_plugin_file("libc.so.6"); });
  EXPECT_TRUE(contains(msg, "no entry point")) << msg;
  EXPECT_TRUE(contains(msg, kCudaPluginEntry)) << msg;
}

TEST(CudaPlugin, TheEnvironmentVariableReplacesTheSearchAndMakeBackendNamesIt) {
  const std::string path = "/nonexistent-parasol-dir/libparasol_cuda.so";
  ScopedEnv env(kCudaPluginEnv, path);
  EXPECT_EQ(cuda_plugin_candidates(), std::vector<std::string>{path});
  const std::string msg = config_error_of([&] { make_backend("cuda"); });
  EXPECT_TRUE(contains(msg, std::string(kCudaPluginEnv) + "=" + path)) << msg;
  EXPECT_TRUE(contains(msg, "No such file")) << msg;
  // cpu never touches the plugin.
  EXPECT_EQ(make_backend("cpu")->name(), "cpu");
}

TEST(CudaPlugin, WithoutTheVariableTheSearchStartsNextToTheExecutable) {
  ::unsetenv(kCudaPluginEnv);
  const auto c = cuda_plugin_candidates();
  ASSERT_GE(c.size(), 2u);
  EXPECT_EQ(c[0], "(loaded)");
  const auto exe_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path();
  EXPECT_EQ(c[1], (exe_dir / kCudaPluginFile).string());
}

#ifdef PARASOL_CUDA_PLUGIN_PATH
TEST(CudaPlugin, TheBuiltPluginLoadsWithThisProgramsAbi) {
  const CudaPlugin& p = load_cuda_plugin_file(PARASOL_CUDA_PLUGIN_PATH);
  const PluginAbi ours = PluginAbi::current();
  EXPECT_EQ(p.abi.version, kPluginAbiVersion);
  EXPECT_EQ(p.abi.tensor_bytes, ours.tensor_bytes);
  EXPECT_EQ(p.abi.seq_batch_bytes, ours.seq_batch_bytes);
  EXPECT_EQ(p.abi.backend_options_bytes, ours.backend_options_bytes);
  EXPECT_STREQ(p.abi.toolchain, ours.toolchain);
  EXPECT_NE(p.device_count, nullptr);
  EXPECT_NE(p.make_backend, nullptr);
  EXPECT_NE(p.make_device_local_world, nullptr);
  EXPECT_NE(p.make_nccl_world_local, nullptr);
  EXPECT_GE(p.device_count(), 0);  // never throws, creates no context
}

TEST(CudaPlugin, TheSearchFindsTheModuleThisBuildMade) {
  ::unsetenv(kCudaPluginEnv);
  const CudaPlugin& direct = load_cuda_plugin_file(PARASOL_CUDA_PLUGIN_PATH);
  EXPECT_EQ(&cuda_plugin(), &direct);  // one module, one table
  const auto names = available_backends();
  EXPECT_NE(std::find(names.begin(), names.end(), "cuda"), names.end());
}

TEST(CudaPlugin, WithoutADeviceMakeBackendThrowsARuntimeFailureAcrossTheModuleBoundary) {
  const CudaPlugin& p = load_cuda_plugin_file(PARASOL_CUDA_PLUGIN_PATH);
  if (p.device_count() > 0) GTEST_SKIP() << "a CUDA device is present (this test must not create one)";
  EXPECT_THROW(p.make_backend(BackendOptions{}), RuntimeFailure);
}
#endif

}  // namespace
}  // namespace parasol::exec

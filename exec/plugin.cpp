// Finding, loading and checking plugins (exec/plugin.hpp). Paths compiled in by exec/CMakeLists.txt (this file only):
//   PARASOL_PLUGIN_INSTALL_DIR  absolute install lib dir of the plugins (CMAKE_INSTALL_FULL_LIBDIR/parasol)
//   PARASOL_PLUGIN_INSTALL_REL  the same, relative to the install bin dir (e.g. "../lib/parasol")
//   PARASOL_PLUGIN_BUILD_DIR    where this build writes the plugins
//   PARASOL_HAVE_CUDA_PLUGIN    defined when this build produces the cuda plugin
#include "exec/plugin.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace parasol::exec {
namespace {

namespace fs = std::filesystem;

// What a search needs to know about one plugin.
struct Module {
  const char* file;
  const char* entry;
  const char* env;
  const char* what;    // "the cuda backend"
  const char* target;  // CMake target that builds it
  const char* without; // why a build may lack it
  bool built;
  int mode;  // RTLD_LOCAL or RTLD_GLOBAL
};

std::string exe_dir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

std::string join(const std::string& dir, const std::string& rel, const std::string& file) {
  return (fs::path(dir) / rel / file).lexically_normal().string();
}

// What differs between the plugin's ABI and ours; empty when they agree.
std::string abi_mismatch(const PluginAbi& theirs) {
  const PluginAbi ours = PluginAbi::current();
  auto num = [](const char* what, uint32_t t, uint32_t o) {
    return std::string(what) + " " + std::to_string(t) + " (this program: " + std::to_string(o) + ")";
  };
  if (theirs.version != ours.version) return num("ABI version", theirs.version, ours.version);
  if (theirs.tensor_bytes != ours.tensor_bytes) return num("sizeof(Tensor)", theirs.tensor_bytes, ours.tensor_bytes);
  if (theirs.seq_batch_bytes != ours.seq_batch_bytes)
    return num("sizeof(SeqBatch)", theirs.seq_batch_bytes, ours.seq_batch_bytes);
  if (theirs.backend_options_bytes != ours.backend_options_bytes)
    return num("sizeof(BackendOptions)", theirs.backend_options_bytes, ours.backend_options_bytes);
  const char* tc = theirs.toolchain ? theirs.toolchain : "";
  if (std::strcmp(tc, ours.toolchain) != 0)
    return std::string("toolchain '") + tc + "' (this program: '" + ours.toolchain + "')";
  return {};
}

// dlsym + ABI check of an opened module. Null with `why` set on failure. A module that loaded but was refused stays
// loaded (unloading a library linked with the CUDA runtime is not worth the risk).
const PluginAbi* check(const Module& m, void* handle, std::string& why) {
  dlerror();
  void* sym = dlsym(handle, m.entry);
  if (!sym) {
    const char* e = dlerror();
    why = std::string("no entry point ") + m.entry + " (" + (e ? e : "dlsym failed") + ")";
    return nullptr;
  }
  // Every table opens with its PluginAbi (standard layout), so the entry may be called as returning one.
  using Entry = const PluginAbi* (*)();
  Entry entry = nullptr;
  static_assert(sizeof(entry) == sizeof(sym));
  std::memcpy(&entry, &sym, sizeof(entry));
  const PluginAbi* abi = entry();
  if (!abi) {
    why = std::string(m.entry) + "() returned no table";
    return nullptr;
  }
  std::string mismatch = abi_mismatch(*abi);
  if (!mismatch.empty()) {
    why = "built against another parasol: " + mismatch + "; rebuild the plugin with this parasol";
    return nullptr;
  }
  return abi;
}

// dlopen (why = dlerror() on failure) + check.
const PluginAbi* open_and_check(const Module& m, const std::string& path, std::string& why) {
  dlerror();
  void* handle = dlopen(path.c_str(), RTLD_NOW | m.mode);
  if (!handle) {
    const char* e = dlerror();
    why = e ? e : "dlopen failed";
    return nullptr;
  }
  return check(m, handle, why);
}

const PluginAbi* load_file(const Module& m, const std::string& path) {
  std::string why;
  const PluginAbi* abi = open_and_check(m, path, why);
  if (!abi) throw ConfigError(std::string(m.what) + " plugin " + path + ": " + why);
  return abi;
}

std::mutex g_mu;

// The search of plugin_candidates(), once per process per module (`cache`).
const PluginAbi* search(const Module& m, const PluginAbi*& cache) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (cache) return cache;
  const char* env = std::getenv(m.env);
  const bool from_env = env && *env;
  std::string tried;
  for (const auto& path : plugin_candidates(m.file, m.env)) {
    std::string why;
    const PluginAbi* abi = nullptr;
    if (path == "(loaded)") {
      // Only a copy this program already has (linked directly); otherwise this step is silent.
      void* handle = dlopen(m.file, RTLD_NOW | RTLD_NOLOAD);
      if (!handle) continue;
      abi = check(m, handle, why);
    } else {
      abi = open_and_check(m, path, why);
    }
    if (abi) return cache = abi;
    tried += (tried.empty() ? "" : "; ") + (from_env ? std::string(m.env) + "=" : std::string()) +
             (path == "(loaded)" ? std::string(m.file) + " (linked in)" : path) + ": " + why;
  }
  std::string msg =
      std::string(m.what) + " is a plugin, " + m.file + ", and it could not be loaded: " + tried + ". ";
  if (!m.built && !from_env) msg += std::string("This parasol was configured without it (") + m.without + "); ";
  msg += std::string("build it (cmake --build BUILD --target ") + m.target +
         "), keep it next to the parasol executable, or set " + m.env + " to its path";
  throw ConfigError(msg);
}

#ifdef PARASOL_HAVE_CUDA_PLUGIN
constexpr bool kCudaBuilt = true;
#else
constexpr bool kCudaBuilt = false;
#endif

const Module kCuda{kCudaPluginFile, kCudaPluginEntry, kCudaPluginEnv, "the cuda backend", "parasol_cuda",
                   "nvcc, cuBLAS or NCCL not found", kCudaBuilt, RTLD_LOCAL};
const PluginAbi* g_cuda = nullptr;

}  // namespace

bool cuda_plugin_built() { return kCudaBuilt; }

std::vector<std::string> plugin_candidates(const std::string& file, const char* env_var) {
  if (const char* env = std::getenv(env_var); env && *env) return {env};
  std::vector<std::string> out{"(loaded)"};
  auto add = [&](const std::string& p) {
    for (const auto& q : out)
      if (q == p) return;
    out.push_back(p);
  };
  const std::string dir = exe_dir();
  if (!dir.empty()) add(join(dir, ".", file));
#ifdef PARASOL_PLUGIN_INSTALL_REL
  if (!dir.empty()) add(join(dir, PARASOL_PLUGIN_INSTALL_REL, file));
#endif
#ifdef PARASOL_PLUGIN_INSTALL_DIR
  add(join(PARASOL_PLUGIN_INSTALL_DIR, ".", file));
#endif
#ifdef PARASOL_PLUGIN_BUILD_DIR
  add(join(PARASOL_PLUGIN_BUILD_DIR, ".", file));
#endif
  return out;
}

std::vector<std::string> cuda_plugin_candidates() { return plugin_candidates(kCudaPluginFile, kCudaPluginEnv); }

// The tables open with their PluginAbi (standard layout), so the PluginAbi's address is the table's.
const CudaPlugin& cuda_plugin() { return *reinterpret_cast<const CudaPlugin*>(search(kCuda, g_cuda)); }
const CudaPlugin& load_cuda_plugin_file(const std::string& path) {
  return *reinterpret_cast<const CudaPlugin*>(load_file(kCuda, path));
}

}  // namespace parasol::exec

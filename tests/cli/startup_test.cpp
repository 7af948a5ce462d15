// What `parasol` loads at start-up (docs/benchmarks.md, start-up): the CUDA libraries live in the cuda plugin
// (exec/plugin.hpp), so neither the binary's DT_NEEDED entries nor the dynamic loader's full closure of it name the
// CUDA runtime, cuBLAS/cuBLASLt or NCCL, while the plugin's do; and `parasol exec --backend cuda` with the plugin
// missing ends with exit code 2 and one error line naming the file and the loader's reason, never a crash.
#include <elf.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

// The dynamic section of a 64-bit ELF file, read from its section headers: DT_NEEDED entries and the names of the
// symbols it defines and exports (.dynsym entries with a section, global or weak).
struct DynamicInfo {
  std::vector<std::string> needed;
  std::vector<std::string> exported;
};

DynamicInfo read_dynamic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(Elf64_Ehdr)) throw std::runtime_error(path + ": not an ELF file");
  Elf64_Ehdr eh;
  std::memcpy(&eh, bytes.data(), sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64)
    throw std::runtime_error(path + ": not a 64-bit ELF file");
  auto section = [&](size_t i) {
    Elf64_Shdr sh;
    const size_t off = eh.e_shoff + i * eh.e_shentsize;
    if (off + sizeof sh > bytes.size()) throw std::runtime_error(path + ": truncated section table");
    std::memcpy(&sh, bytes.data() + off, sizeof sh);
    return sh;
  };
  DynamicInfo out;
  for (size_t i = 0; i < eh.e_shnum; ++i) {
    const Elf64_Shdr sec = section(i);
    if (sec.sh_type != SHT_DYNAMIC && sec.sh_type != SHT_DYNSYM) continue;
    const Elf64_Shdr str = section(sec.sh_link);
    if (sec.sh_type == SHT_DYNAMIC) {
      for (size_t off = sec.sh_offset; off + sizeof(Elf64_Dyn) <= sec.sh_offset + sec.sh_size;
           off += sizeof(Elf64_Dyn)) {
        Elf64_Dyn d;
        std::memcpy(&d, bytes.data() + off, sizeof d);
        if (d.d_tag == DT_NULL) break;
        if (d.d_tag == DT_NEEDED) out.needed.emplace_back(bytes.data() + str.sh_offset + d.d_un.d_val);
      }
    } else {
      for (size_t off = sec.sh_offset; off + sizeof(Elf64_Sym) <= sec.sh_offset + sec.sh_size;
           off += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        std::memcpy(&sym, bytes.data() + off, sizeof sym);
        const int bind = ELF64_ST_BIND(sym.st_info);
        if (sym.st_shndx == SHN_UNDEF || (bind != STB_GLOBAL && bind != STB_WEAK)) continue;
        out.exported.emplace_back(bytes.data() + str.sh_offset + sym.st_name);
      }
    }
  }
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string all;
  for (const auto& n : v) all += n + " ";
  return all;
}

// Loaded only by the cuda plugin (exec/plugin.hpp).
const char* const kPluginOnlyLibraries[] = {"libcublasLt", "libcublas", "libcudart", "libnccl", "libcuda."};

TEST(Startup, TheParasolBinaryNeedsNoCudaLibraryDirectly) {
  const std::string all = joined(read_dynamic(PARASOL_BINARY).needed);
  // The parser read the real table: every dynamically linked program needs libc.
  EXPECT_NE(all.find("libc.so"), std::string::npos) << all;
  for (const char* lib : kPluginOnlyLibraries) EXPECT_EQ(all.find(lib), std::string::npos) << lib << " in " << all;
}

TEST(Startup, TheDynamicLoaderLoadsNoCudaLibraryForParasol) {
  // LD_TRACE_LOADED_OBJECTS makes the loader list the whole closure it would map (what ldd prints) and exit.
  ::setenv("LD_TRACE_LOADED_OBJECTS", "1", 1);
  const RunResult r = run_parasol({"--help"});
  ::unsetenv("LD_TRACE_LOADED_OBJECTS");
  ASSERT_TRUE(r.exited()) << r.err;
  EXPECT_NE(r.out.find("libstdc++"), std::string::npos) << r.out;
  for (const char* lib : kPluginOnlyLibraries) EXPECT_EQ(r.out.find(lib), std::string::npos) << lib << " in\n" << r.out;
}

TEST(Startup, ExecOnCudaWithThePluginMissingExitsTwoNamingTheFileAndTheReason) {
  const std::string path = "/nonexistent-parasol-dir/libparasol_cuda.so";
  ::setenv("PARASOL_CUDA_PLUGIN", path.c_str(), 1);
  const RunResult r =
      run_parasol({"exec", "--model", "builtin:test-llama", "--backend", "cuda", "--prompts", "1", "--decode", "1"});
  ::unsetenv("PARASOL_CUDA_PLUGIN");
  ASSERT_TRUE(r.exited()) << "signal " << r.signal << (r.timed_out ? " (timed out)" : "") << "\n" << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(line_count(r.err), 1) << r.err;
  EXPECT_EQ(r.err.rfind("parasol: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("PARASOL_CUDA_PLUGIN=" + path), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No such file"), std::string::npos) << r.err;  // dlerror()'s reason
  EXPECT_TRUE(r.out.empty()) << r.out;
}

#ifdef PARASOL_CUDA_PLUGIN_PATH
TEST(Startup, TheCudaPluginCarriesTheCudaLibrariesAndExportsItsEntryPoint) {
  const DynamicInfo d = read_dynamic(PARASOL_CUDA_PLUGIN_PATH);
  const std::string needed = joined(d.needed);
  for (const char* lib : {"libcublas", "libcudart", "libnccl"})
    EXPECT_NE(needed.find(lib), std::string::npos) << lib << " not in " << needed;
  EXPECT_NE(std::find(d.exported.begin(), d.exported.end(), "parasol_cuda_plugin"), d.exported.end());
}
#endif

}  // namespace
}  // namespace parasol::testing

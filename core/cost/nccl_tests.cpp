// nccl-tests text output -> Samples (nccl_tests.hpp).
#include "core/cost/nccl_tests.hpp"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/common/error.hpp"

namespace parasol::cost {

namespace {

struct Token {
  std::string text;
  int column = 0;  // 1-based
};

std::vector<Token> split_ws(const std::string& line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    if (i >= line.size()) break;
    const size_t b = i;
    while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    out.push_back({line.substr(b, i - b), static_cast<int>(b) + 1});
  }
  return out;
}

bool parse_double(const std::string& s, double& v) {
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return end && *end == '\0' && !s.empty();
}

// nccl-tests' type names (src/common.cu test_typenames).
bool parse_type(const std::string& t, DType& dt) {
  if (t == "half") dt = DType::kFp16;
  else if (t == "bfloat16") dt = DType::kBf16;
  else if (t == "float" || t == "int32" || t == "uint32") dt = DType::kFp32;
  else if (t == "double" || t == "int64" || t == "uint64") dt = DType::kFp32;  // 8 bytes: costed by bytes anyway
  else if (t == "int8" || t == "uint8") dt = DType::kInt8;
  else if (t == "f8e4m3" || t == "f8e5m2" || t == "fp8_e4m3" || t == "fp8_e5m2") dt = DType::kFp8;
  else return false;
  return true;
}

plan::OpKind kind_of(const std::string& family) {
  if (family == "all_reduce") return plan::OpKind::kAllReduce;
  if (family == "all_gather") return plan::OpKind::kAllGather;
  if (family == "reduce_scatter") return plan::OpKind::kReduceScatter;
  return plan::OpKind::kAllToAll;
}

}  // namespace

std::string nccl_tests_family(const std::string& test) {
  std::string t = test;
  const size_t slash = t.find_last_of('/');
  if (slash != std::string::npos) t = t.substr(slash + 1);
  for (const char* f : {"all_reduce", "all_gather", "reduce_scatter", "alltoall"})
    if (t == std::string(f) + "_perf" || t == std::string(f) + "_perf_mpi") return f;
  return "";
}

std::vector<Sample> nccl_tests_samples(const std::string& text, const std::string& name, const std::string& gpu) {
  std::vector<Sample> out;
  std::istringstream in(text);
  std::string line, family, test;
  int ranks = 0, line_no = 0, test_line = 0;
  bool counting = false;  // inside the "# Using devices" block of the current test
  auto reset = [&](const std::string& t, int at) {
    test = t, test_line = at, family = nccl_tests_family(t), ranks = 0, counting = true;
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto tok = split_ws(line);
    if (tok.empty()) continue;
    if (tok[0].text[0] == '#') {
      const size_t at = line.find("Collective test starting:");
      if (at != std::string::npos) {
        const auto rest = split_ws(line.substr(at + 25));
        reset(rest.empty() ? "" : rest[0].text, line_no);
      } else if (line.find("Rank") != std::string::npos && line.find("device") != std::string::npos) {
        if (!counting) reset(test, test_line);  // a second run of the same binary without its banner
        ++ranks;
      }
      continue;
    }
    counting = false;
    if (test.empty()) {  // no banner: the binary's name may be the file's
      test = std::filesystem::path(name).stem().string();
      family = nccl_tests_family(test);
    }
    if (family.empty())
      throw ConfigError(name, test_line ? test_line : line_no, 1, "test",
                        "an nccl-tests collective parasol models (all_reduce_perf, all_gather_perf, reduce_scatter_perf, "
                        "alltoall_perf)",
                        test.empty() ? "none named" : "'" + test + "'");
    if (ranks < 2)
      throw ConfigError(name, line_no, 1, "ranks", "'#  Rank N ... device ...' lines for at least 2 ranks before the rows",
                        std::to_string(ranks));
    // size count type redop [root] time algbw busbw #wrong time algbw busbw #wrong
    const bool has_root = tok.size() >= 13;
    if (tok.size() != 13 && tok.size() != 12)
      throw ConfigError(name, line_no, tok[0].column, "row",
                        "size count type redop root time algbw busbw #wrong (out-of-place, then in-place)",
                        std::to_string(tok.size()) + " fields");
    double size = 0, time_us = 0;
    if (!parse_double(tok[0].text, size) || !(size > 0))
      throw ConfigError(name, line_no, tok[0].column, "size", "a size in bytes above 0", "'" + tok[0].text + "'");
    DType dt = DType::kBf16;
    if (!parse_type(tok[2].text, dt))
      throw ConfigError(name, line_no, tok[2].column, "type", "an nccl-tests type (half, bfloat16, float, int8, ...)",
                        "'" + tok[2].text + "'");
    const Token& t = tok[has_root ? 5 : 4];
    if (!parse_double(t.text, time_us) || !(time_us > 0))
      throw ConfigError(name, line_no, t.column, "time", "the out-of-place time in us, above 0", "'" + t.text + "'");
    Sample s;
    s.family = family;
    s.gpu = gpu;
    s.where = name + ":" + std::to_string(line_no);
    s.key = "nccl-tests " + family + " " + tok[2].text + " n=" + std::to_string(ranks) + " S=" + tok[0].text;
    plan::Op op;
    op.kind = kind_of(family);
    op.name = family;
    op.dtype = dt;
    op.comm_bytes = size;
    if (op.kind == plan::OpKind::kAllToAll) op.a2a_send_bytes.assign(static_cast<size_t>(ranks), size / ranks);
    s.ops.push_back(std::move(op));
    s.num_gpus = ranks;
    s.time_s = time_us * 1e-6;
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Sample> load_nccl_tests(const std::string& path, const std::string& gpu) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ConfigError(path, 0, 0, "--nccl-tests", "a readable nccl-tests output file", "cannot open it");
  std::ostringstream ss;
  ss << f.rdbuf();
  return nccl_tests_samples(ss.str(), path, gpu);
}

}  // namespace parasol::cost

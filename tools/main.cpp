// parasol: plan, simulate and run distributed LLM inference. main() only parses and maps outcomes to exit codes.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include <cerrno>
#include <cstring>

#include "core/common/error.hpp"
#include "core/common/hash.hpp"
#include "tools/cli.hpp"
#include "tools/signals.hpp"
#include "tools/version.hpp"

namespace parasol::tools {
namespace {

struct Entry {
  std::string name;
  int order;
  CommandSetup setup;
};

std::vector<Entry>& registry() {
  static std::vector<Entry> r;
  return r;
}

std::map<std::string, std::vector<std::string>>& example_registry() {
  static std::map<std::string, std::vector<std::string>> r;
  return r;
}

std::string examples_text(const std::vector<std::string>& examples) {
  std::string s = "Examples:\n";
  for (const auto& e : examples) s += "  " + e + "\n";
  return s;
}

// One line for a usage error, naming the help to read.
int usage_error(const CLI::App& app, const CLI::ParseError& e) {
  std::string where = "parasol";
  for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
  std::cerr << "parasol: usage error: " << e.what() << " (see '" << where << " --help')\n";
  return 2;
}

}  // namespace

CommandRegistration::CommandRegistration(const char* name, int order, CommandSetup setup) {
  registry().push_back({name, order, std::move(setup)});
}

void add_common_options(CLI::App* sub, CommonOptions& common) {
  sub->add_flag("--json", common.json, "Print a machine-readable JSON result on stdout");
  sub->add_option("--out", common.out_dir, "Directory for output files");
  sub->add_option("--seed", common.seed, "Random seed (same inputs + seed = identical outputs)");
  sub->add_flag(
      "-q,--quiet", [&common](int64_t) { common.verbosity = 0; }, "Print only errors");
  sub->add_flag(
      "-v,--verbose", [&common](int64_t n) { common.verbosity = 1 + static_cast<int>(n); },
      "More detail (repeat for more)");
}

void set_examples(CLI::App* sub, const std::vector<std::string>& examples) {
  example_registry()[sub->get_name()] = examples;
  sub->footer(examples_text(examples));
}

const std::vector<std::string>& examples_of(const std::string& command) {
  static const std::vector<std::string> kNone;
  auto it = example_registry().find(command);
  return it == example_registry().end() ? kNone : it->second;
}

int worse_exit_code(int a, int b) {
  auto rank = [](int c) { return c == 0 ? 0 : c == 2 ? 1 : 2; };
  return rank(a) >= rank(b) ? a : b;
}

namespace {
std::filesystem::path temp_path_for(const std::filesystem::path& final_path) {
  std::filesystem::path tmp = final_path;
  tmp += ".tmp." + std::to_string(::getpid());
  return tmp;
}
}  // namespace

StagedFile::FdBuf::~FdBuf() {
  if (fd_ >= 0) ::close(fd_);
}

bool StagedFile::FdBuf::open(const std::string& path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    error_ = errno;
    return false;
  }
  setp(buf_.data(), buf_.data() + buf_.size());
  return true;
}

bool StagedFile::FdBuf::drain() {
  const char* p = pbase();
  while (p < pptr() && error_ == 0) {
    const ssize_t n = ::write(fd_, p, static_cast<size_t>(pptr() - p));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) error_ = n < 0 ? errno : EIO;
    else p += n;
  }
  setp(buf_.data(), buf_.data() + buf_.size());
  return error_ == 0;
}

StagedFile::FdBuf::int_type StagedFile::FdBuf::overflow(int_type c) {
  if (fd_ < 0 || !drain()) return traits_type::eof();
  if (!traits_type::eq_int_type(c, traits_type::eof())) {
    *pptr() = traits_type::to_char_type(c);
    pbump(1);
  }
  return traits_type::not_eof(c);
}

int StagedFile::FdBuf::sync() { return fd_ >= 0 && drain() ? 0 : -1; }

bool StagedFile::FdBuf::close() {
  if (fd_ < 0) return error_ == 0;
  drain();
  if (::close(fd_) != 0 && error_ == 0) error_ = errno;
  fd_ = -1;
  return error_ == 0;
}

void StagedFile::fail_write() const {
  const int e = buf_.error();
  throw RuntimeFailure("writing " + tmp_path_ + " (for " + final_path_ + ") failed: " +
                       (e ? std::strerror(e) : "I/O error"));
}

StagedFile::StagedFile(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw ConfigError(dir, 0, 0, "--out", "a directory that can be created", ec.message());
  const fs::path final_path = fs::path(dir) / name;
  final_path_ = final_path.string();
  tmp_path_ = temp_path_for(final_path).string();
  if (!buf_.open(tmp_path_))
    throw ConfigError(tmp_path_, 0, 0, "--out", "a file that can be created in " + dir, std::strerror(buf_.error()));
  register_temp_file(tmp_path_);  // a signal before commit() removes it
}

StagedFile::~StagedFile() {
  if (committed_) return;
  buf_.close();
  std::error_code ec;
  std::filesystem::remove(tmp_path_, ec);  // best effort: an unwinding error is already on its way
  unregister_temp_file(tmp_path_);
}

void StagedFile::check() {
  os_.flush();
  if (!os_ || buf_.error()) fail_write();
}

void StagedFile::commit() {
  check();
  if (!buf_.close()) fail_write();
  std::error_code ec;
  std::filesystem::rename(tmp_path_, final_path_, ec);
  if (ec) throw RuntimeFailure("renaming " + tmp_path_ + " to " + final_path_ + " failed: " + ec.message());
  committed_ = true;
  unregister_temp_file(tmp_path_);
}

void write_file_atomic(const std::string& dir, const std::string& name, const std::string& text) {
  StagedFile f(dir, name);
  f.stream() << text;
  f.commit();
}

namespace {
CLI::Validator bounded(double lo, double hi, const std::string& expected) {
  return CLI::Validator(
      [lo, hi, expected](std::string& text) -> std::string {
        double v = 0;
        const char* b = text.c_str();
        char* end = nullptr;
        v = std::strtod(b, &end);
        if (end == b || *end != '\0' || !(v >= lo) || !(v <= hi)) return "expected " + expected + ", found " + text;
        return {};
      },
      "");
}
}  // namespace

CLI::Validator at_least(double lo, const std::string& what) { return bounded(lo, 1e308, what); }

CLI::Validator in_range(double lo, double hi, const std::string& what) { return bounded(lo, hi, what); }

std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "unreadable";
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return hex64(fnv1a64(bytes.str()));
}

void write_run_json(const std::string& dir, const std::string& command, const std::vector<std::string>& inputs,
                    uint64_t seed) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& path : inputs) files.push_back({{"path", path}, {"hash", file_hash(path)}});
  const nlohmann::json j = {{"command", command},   {"parasol", build_version()}, {"commit", build_commit()},
                            {"seed", seed},         {"inputs", files}};
  write_file_atomic(dir, "run.json", j.dump(2) + "\n");
}

std::string resolve_data_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::exists(path)) return path;
  fs::path p = fs::path(PARASOL_DATA_DIR) / path;
  if (fs::exists(p)) return p.string();
  return path;
}

}  // namespace parasol::tools

int main(int argc, char** argv) {
  using namespace parasol::tools;
  CLI::App app{"parasol: plan, simulate and run distributed LLM inference"};
  app.require_subcommand(0, 1);
  app.set_version_flag("--version", std::string("parasol ") + parasol::build_version() + " (" +
                                        parasol::build_commit() + ")");
  auto& reg = registry();
  std::stable_sort(reg.begin(), reg.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::vector<std::unique_ptr<CommonOptions>> commons;
  std::vector<std::pair<CLI::App*, std::function<int()>>> runs;
  for (auto& e : reg) {
    commons.push_back(std::make_unique<CommonOptions>());
    auto run = e.setup(app, *commons.back());
    runs.emplace_back(app.get_subcommand(e.name), std::move(run));
  }
  // The first example of every command, from set_examples or, for a command that wrote its own footer, the first
  // footer line that shows the command.
  std::vector<std::string> firsts;
  for (auto& e : reg) {
    if (!examples_of(e.name).empty()) {
      firsts.push_back(examples_of(e.name).front());
      continue;
    }
    std::istringstream footer(app.get_subcommand(e.name)->get_footer());
    std::string line;
    while (std::getline(footer, line)) {
      auto at = line.find("parasol " + e.name);
      if (at == std::string::npos) continue;
      firsts.push_back(line.substr(at));
      break;
    }
  }
  app.footer(examples_text(firsts) +
             "\n'parasol' alone prints this help. Run 'parasol COMMAND --help' for a command's options and examples.\n"
             "Exit codes: 0 ok, 2 bad input or usage, 1 internal failure.");
  install_signal_handlers();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e);
  }
  try {
    for (auto& [sub, run] : runs)
      if (sub->parsed()) return run();
    std::cout << app.help();
    return 0;
  } catch (const parasol::ConfigError& e) {
    std::cerr << "parasol: error: " << e.what() << "\n";
    return 2;
  } catch (const parasol::Error& e) {
    std::cerr << "parasol: failed: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "parasol: internal error: " << e.what() << "\n";
    return 1;
  }
}

// Test helpers for the CLI tests: run the `parasol` binary (PARASOL_BINARY) with arguments under a timeout, capturing
// exit status, stdout and stderr; make and remove scratch directories. Header-only; used by tests/cli/*_test.cpp.
// Thread behaviour: run_parasol may be called from several threads (each call has its own files).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace parasol::testing {

struct RunResult {
  int exit_code = -1;      // when the process exited normally
  int signal = 0;          // when a signal killed it (a crash: SIGSEGV, SIGABRT, ...)
  bool timed_out = false;  // killed by us after the timeout
  std::string out;
  std::string err;
  bool exited() const { return !timed_out && signal == 0; }
};

inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << text;
}

// A scratch directory removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "parasol-cli-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Runs `program` with `args` (argv[0] is the program); kills it after `timeout_s`. `tick`, when given, is called with
// the child's pid while it runs (every 0.2-20 ms), e.g. to signal it.
inline RunResult run_program(const std::string& program, const std::vector<std::string>& args, double timeout_s,
                             const std::function<void(pid_t)>& tick = {}) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path();
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const auto out_path = dir / ("parasol-run-" + tag + ".out");
  const auto err_path = dir / ("parasol-run-" + tag + ".err");

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> argv_s;
  argv_s.push_back(program);
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot spawn " + program);

  RunResult r;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    if (tick) tick(pid);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
  if (!r.timed_out) {
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  }
  r.out = read_all(out_path);
  r.err = read_all(err_path);
  std::error_code ec;
  std::filesystem::remove(out_path, ec);
  std::filesystem::remove(err_path, ec);
  return r;
}

// Runs PARASOL_BINARY with `args`; kills it after `timeout_s`.
inline RunResult run_parasol(const std::vector<std::string>& args, double timeout_s = 10.0,
                             const std::function<void(pid_t)>& tick = {}) {
  return run_program(PARASOL_BINARY, args, timeout_s, tick);
}

// Number of lines in `s` (a trailing newline does not start a line).
inline int line_count(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  if (!s.empty() && s.back() != '\n') ++n;
  return n;
}

// Every shipped YAML/JSON data file under scenarios/ and topologies/ of the source tree, sorted.
inline std::vector<std::filesystem::path> shipped_data_files() {
  std::vector<std::filesystem::path> files;
  for (const char* top : {"scenarios", "topologies"}) {
    std::filesystem::path root = std::filesystem::path(PARASOL_DATA_DIR) / top;
    if (!std::filesystem::exists(root)) continue;
    for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
      if (!e.is_regular_file()) continue;
      const auto ext = e.path().extension().string();
      if (ext == ".yaml" || ext == ".yml" || ext == ".json") files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace parasol::testing

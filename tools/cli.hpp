// The CLI's plumbing: every command registers itself here (PARASOL_COMMAND in its own cmd_<name>.cpp), gets the common
// options (--json, --out, --seed, -q/-v) and returns an exit code. Exit codes: 0 ok, 2 bad input or usage (ConfigError,
// CLI11 parse errors), 1 internal failure. main() maps exceptions to these codes; commands just throw.
// Thread behaviour: registration happens during static initialization, before main; nothing here is thread-safe.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <fstream>
#include <functional>
#include <streambuf>
#include <string>
#include <vector>

namespace parasol::tools {

struct CommonOptions {
  bool json = false;    // machine-readable result on stdout
  std::string out_dir;  // where files go (none written when empty, unless the command says otherwise)
  uint64_t seed = 1;
  int verbosity = 1;  // 0 quiet, 1 normal, 2+ verbose
};

// A command adds its subcommand to `app`, its options bound to storage it owns, and returns the function that runs it.
using CommandSetup = std::function<std::function<int()>(CLI::App& app, CommonOptions& common)>;

struct CommandRegistration {
  CommandRegistration(const char* name, int order, CommandSetup setup);
};

// Adds --json, --out, --seed, -q, -v to a subcommand.
void add_common_options(CLI::App* sub, CommonOptions& common);

// Sets the "Examples:" footer of a subcommand's --help (every command has some; tests/cli checks it). Each example is
// one command line, optionally followed by "  # what it does". The first example also appears in `parasol --help`.
void set_examples(CLI::App* sub, const std::vector<std::string>& examples);
// The examples registered for `command` (empty when none).
const std::vector<std::string>& examples_of(const std::string& command);

// The exit code of a run that had outcomes `a` and `b`: internal failure (1) beats bad input (2) beats ok (0).
int worse_exit_code(int a, int b);

// Writes `text` to `dir/name` atomically (temp file + rename), creating `dir`. Nothing half-written on failure.
void write_file_atomic(const std::string& dir, const std::string& name, const std::string& text);

// A file streamed into `dir/name.tmp.PID` and renamed to `dir/name` by commit(): readers never see a half-written
// output. Destroyed without commit() (an error unwound past it), it removes the temporary file. Creates `dir`.
class StagedFile {
 public:
  StagedFile(const std::string& dir, const std::string& name);
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  std::ostream& stream() { return os_; }
  void check();   // flushes and checks the stream: RuntimeFailure naming the file and the errno on an I/O error
  void commit();  // check(), close and rename; throws RuntimeFailure on an I/O error

 private:
  // A buffered stream over the file descriptor that keeps the errno of the first failed write (a std::ofstream
  // only says that something failed).
  class FdBuf : public std::streambuf {
   public:
    ~FdBuf() override;
    bool open(const std::string& path);
    bool close();   // flush and close; false on an error (see error())
    int error() const { return error_; }

   protected:
    int_type overflow(int_type c) override;
    int sync() override;

   private:
    bool drain();
    int fd_ = -1;
    int error_ = 0;
    std::vector<char> buf_ = std::vector<char>(1 << 16);
  };
  std::string final_path_, tmp_path_;
  FdBuf buf_;
  std::ostream os_{&buf_};
  bool committed_ = false;
  [[noreturn]] void fail_write() const;
};

// Validators for numeric options whose messages a person can read ("--requests: expected a count >= 0, found -5"),
// where CLI11's own print the whole double range.
CLI::Validator at_least(double lo, const std::string& what = "a number");
CLI::Validator in_range(double lo, double hi, const std::string& what = "a number");
inline CLI::Validator positive_count() { return at_least(1, "a count >= 1"); }
inline CLI::Validator non_negative_count() { return at_least(0, "a count >= 0"); }

// FNV-1a 64 of a file's bytes, hex ("unreadable" when it cannot be read): how outputs name their inputs.
std::string file_hash(const std::string& path);

// Writes DIR/run.json: where the folder's files come from (the command, parasol's version and git commit, the seed,
// each input file's path and FNV-1a 64 hash of its bytes) -- every command that writes an --out folder calls it.
void write_run_json(const std::string& dir, const std::string& command, const std::vector<std::string>& inputs,
                    uint64_t seed);

// Path of a shipped data file: as given when it exists, else relative to the source tree (PARASOL_DATA_DIR).
std::string resolve_data_path(const std::string& path);

}  // namespace parasol::tools

#define PARASOL_CONCAT_INNER(a, b) a##b
#define PARASOL_CONCAT(a, b) PARASOL_CONCAT_INNER(a, b)
// PARASOL_COMMAND("describe", 10, [](CLI::App& app, CommonOptions& c) { ...; return [&]{ return 0; }; });
#define PARASOL_COMMAND(name, order, ...) \
  static ::parasol::tools::CommandRegistration PARASOL_CONCAT(parasol_command_, __LINE__)(name, order, __VA_ARGS__)

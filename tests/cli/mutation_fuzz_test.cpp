// Mutation fuzzing of every shipped YAML/JSON file (issue 2, item 8): deterministic, seeded mutants (delete,
// duplicate or swap a line, change a number to -1/0/1e30/"abc"/..., swap or drop a unit, rename a key, re-indent,
// null a value, truncate, insert garbage) are fed to `parasol describe`, which must only ever exit 0 or 2 — never
// crash, never report an internal error (1), never hang (each run has a timeout). Mutants are written into a mirror
// of the data tree (symlinks to the shipped files) next to the file they mutate, so relative references resolve.
// All mutants of one file go through one process (describe --json reports each file's exit code); a few also run
// alone, through the single-file path. When a batch misbehaves, its mutants are rerun alone to name the culprit.
#include <gtest/gtest.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kMutantsPerFile = 30;
constexpr int kSingleRunsPerFile = 2;
constexpr double kSingleTimeout_s = 10.0;
constexpr double kBatchTimeoutPerMutant_s = 2.0;

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string cur;
  for (char c : text) {
    if (c == '\n') {
      lines.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) lines.push_back(cur);
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

struct Mutant {
  std::string text;
  std::string what;
};

// Deterministic mutator: only the RNG's raw output is used (no std distributions), so every platform gets the same
// mutants for the same seed.
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  Mutant mutate(const std::string& text) {
    for (int attempt = 0; attempt < 8; ++attempt) {
      Mutant m = try_once(text);
      if (m.text != text) return m;
    }
    return {text.substr(0, text.size() / 2), "truncate at half"};
  }

 private:
  size_t pick(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  // Occurrences of `re` in `text` as (position, length).
  static std::vector<std::pair<size_t, size_t>> find_all(const std::string& text, const std::regex& re, int group) {
    std::vector<std::pair<size_t, size_t>> out;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
      if ((*it)[group].matched)
        out.emplace_back(static_cast<size_t>(it->position(group)), static_cast<size_t>(it->length(group)));
    return out;
  }

  Mutant replace_match(const std::string& text, const std::regex& re, int group,
                       const std::vector<std::string>& choices, const std::string& what) {
    auto hits = find_all(text, re, group);
    if (hits.empty()) return {text, what};
    auto [pos, len] = hits[pick(hits.size())];
    const std::string& to = choices[pick(choices.size())];
    std::string t = text;
    t.replace(pos, len, to);
    return {t, what + " '" + text.substr(pos, len) + "' -> '" + to + "' at byte " + std::to_string(pos)};
  }

  Mutant try_once(const std::string& text) {
    static const std::regex kNumber(R"((^|[\s\[,:{"])(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?))");
    static const std::regex kUnit(R"([0-9] ?((Ki|Mi|Gi|Ti|k|M|G|T|P)?(B/s|b/s|B|FLOP/s|W|Hz)|us|ms|ns|s)\b)");
    static const std::regex kKey(R"re((^|\n)[ \t-]*"?([A-Za-z_][A-Za-z0-9_]*)"?[ \t]*:)re");
    static const std::regex kValue(R"(:[ \t]+([^\n#{}\[\],]+))");
    auto lines = split_lines(text);
    const size_t nl = lines.size();
    switch (pick(11)) {
      case 0: {
        if (nl == 0) break;
        size_t i = pick(nl);
        std::string what = "delete line " + std::to_string(i + 1);
        lines.erase(lines.begin() + static_cast<long>(i));
        return {join_lines(lines), what};
      }
      case 1: {
        if (nl == 0) break;
        size_t i = pick(nl);
        lines.insert(lines.begin() + static_cast<long>(i), lines[i]);
        return {join_lines(lines), "duplicate line " + std::to_string(i + 1)};
      }
      case 2: {
        if (nl < 2) break;
        size_t i = pick(nl - 1);
        std::swap(lines[i], lines[i + 1]);
        return {join_lines(lines), "swap lines " + std::to_string(i + 1) + " and " + std::to_string(i + 2)};
      }
      case 3:
      case 4:
        return replace_match(text, kNumber, 2,
                             {"-1", "0", "1e30", "\"abc\"", "abc", "1e-30", "-0.5", "0.5", "4294967297",
                              "9223372036854775807", "nan", "-1e30", "1e308", "3.7"},
                             "number");
      case 5:
        return replace_match(text, kUnit, 1, {"", "GB/s", "GiB", "TFLOP/s", "ms", "W", "parsec", "Gb/s", "s", "GHz"},
                             "unit");
      case 6: {
        auto r = replace_match(text, kKey, 2, {"x"}, "key");
        if (r.text == text) break;
        // Prefer a near-miss of the real key (did-you-mean) half of the time.
        auto hits = find_all(text, kKey, 2);
        auto [pos, len] = hits[pick(hits.size())];
        std::string key = text.substr(pos, len);
        std::string renamed = key.size() > 1 ? key.substr(0, key.size() - 1) : key + "x";
        if (pick(2)) renamed = key + "s";
        std::string t = text;
        t.replace(pos, len, renamed);
        return {t, "rename key '" + key + "' -> '" + renamed + "'"};
      }
      case 7:
        return replace_match(text, kValue, 1, {"~", "[]", "{}", "[1, 2]", "{a: 1}", "\"\"", "true", "- x"}, "value");
      case 8:
        return {text.substr(0, pick(text.size() + 1)), "truncate"};
      case 9: {
        static const std::vector<std::string> kGarbage = {"{",
                                                          "}",
                                                          "[",
                                                          "]",
                                                          ":",
                                                          "\"",
                                                          "'",
                                                          "- ",
                                                          "\n  x: [",
                                                          "&a ",
                                                          "*a",
                                                          "!!binary ",
                                                          "\t",
                                                          "%",
                                                          "@",
                                                          "`",
                                                          "\n---\n",
                                                          "? ",
                                                          "|",
                                                          ">",
                                                          std::string(1, '\x01'),
                                                          "\xc3\xbc",
                                                          "\xff\xfe",
                                                          "\n:\n",
                                                          ",",
                                                          "#",
                                                          "\\",
                                                          "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
                                                          "{a: {b: {c: {d: {e: {f: {g: 1}}}}}}}",
                                                          "\n<<: *x\n",
                                                          std::string(1, '\0')};
        size_t pos = pick(text.size() + 1);
        const std::string& g = kGarbage[pick(kGarbage.size())];
        std::string t = text;
        t.insert(pos, g);
        return {t, "insert garbage at byte " + std::to_string(pos)};
      }
      case 10: {
        if (nl == 0) break;
        size_t i = pick(nl);
        if (pick(2) && lines[i].rfind("  ", 0) == 0)
          lines[i] = lines[i].substr(2);
        else
          lines[i] = "  " + lines[i];
        return {join_lines(lines), "re-indent line " + std::to_string(i + 1)};
      }
    }
    return {text, "no-op"};
  }

  std::mt19937_64 rng_;
};

// A mirror of the data tree: a symlink per shipped file at the same relative path.
void build_mirror(const fs::path& mirror, const std::vector<fs::path>& files) {
  for (const auto& f : files) {
    fs::path dst = mirror / fs::relative(f, PARASOL_DATA_DIR);
    fs::create_directories(dst.parent_path());
    fs::create_symlink(f, dst);
  }
}

std::string describe_run(const RunResult& r) {
  if (r.timed_out) return "timed out";
  if (r.signal) return "killed by signal " + std::to_string(r.signal);
  return "exit " + std::to_string(r.exit_code) + ", stderr: " + r.err.substr(0, 400);
}

// Runs the mutants of one shipped file; appends what went wrong to `failures`.
void fuzz_file(const fs::path& mirror, const fs::path& shipped, std::vector<std::string>& failures, int counts[3]) {
  const fs::path rel = fs::relative(shipped, PARASOL_DATA_DIR);
  const std::string original = read_all(shipped);
  Mutator mut(fnv1a(rel.string()) ^ 0x5eed);
  std::vector<fs::path> paths;
  std::vector<std::string> whats;
  for (int k = 0; k < kMutantsPerFile; ++k) {
    Mutant m = mut.mutate(original);
    fs::path p =
        mirror / rel.parent_path() / (rel.stem().string() + ".mut" + std::to_string(k) + rel.extension().string());
    write_text(p, m.text);
    paths.push_back(p);
    whats.push_back(rel.string() + " mutant " + std::to_string(k) + ": " + m.what);
  }

  std::vector<std::string> args = {"describe", "--json"};
  for (const auto& p : paths) args.push_back(p.string());
  RunResult batch = run_parasol(args, 10.0 + kBatchTimeoutPerMutant_s * kMutantsPerFile);
  bool batch_ok = batch.exited() && (batch.exit_code == 0 || batch.exit_code == 2);
  std::vector<int> codes;
  if (batch_ok) {
    try {
      auto j = nlohmann::json::parse(batch.out);
      batch_ok = j.is_array() && j.size() == paths.size();
      for (size_t i = 0; batch_ok && i < j.size(); ++i) {
        int c = j[i].at("exit_code").get<int>();
        codes.push_back(c);
        ++counts[c == 0 ? 0 : c == 2 ? 1 : 2];
        if (j[i].at("file").get<std::string>() != paths[i].string()) batch_ok = false;
        if (c != 0 && c != 2)
          failures.push_back(whats[i] + ": exit code " + std::to_string(c) + ": " + j[i].value("error", std::string()));
      }
    } catch (const std::exception&) {
      batch_ok = false;
    }
  }
  if (!batch_ok) {
    // Name the culprit(s).
    for (size_t i = 0; i < paths.size(); ++i) {
      RunResult r = run_parasol({"describe", "--json", paths[i].string()}, kSingleTimeout_s);
      if (!r.exited() || (r.exit_code != 0 && r.exit_code != 2)) failures.push_back(whats[i] + ": " + describe_run(r));
    }
    if (failures.empty()) failures.push_back(rel.string() + ": batch run failed (" + describe_run(batch) + ")");
    return;
  }
  // The single-file path, for the first few mutants: same verdict as in the batch; errors are one line each.
  for (size_t i = 0; i < paths.size() && i < static_cast<size_t>(kSingleRunsPerFile); ++i) {
    RunResult r = run_parasol({"describe", paths[i].string()}, kSingleTimeout_s);
    if (!r.exited() || r.exit_code != codes[i]) {
      failures.push_back(whats[i] + ": alone: " + describe_run(r) + " (in batch: " + std::to_string(codes[i]) + ")");
      continue;
    }
    if (r.exit_code == 2 && (line_count(r.err) != 1 || r.err.rfind("parasol: error: ", 0) != 0))
      failures.push_back(whats[i] + ": expected one 'parasol: error:' line, got: " + r.err);
  }
}

TEST(MutationFuzz, ShippedFilesNeverCrashOrHangOnlyExitZeroOrTwo) {
  const auto files = shipped_data_files();
  ASSERT_FALSE(files.empty());
  TempDir tmp;
  build_mirror(tmp.path(), files);
  {
    // Unmutated, every file describes cleanly from the mirror too (so rejections below are the mutations' doing).
    std::vector<std::string> args = {"describe", "-q"};
    for (const auto& f : files) args.push_back((tmp.path() / fs::relative(f, PARASOL_DATA_DIR)).string());
    RunResult r = run_parasol(args, 60.0);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // Two workers: the machine running the suite has few cores.
  std::mutex mu;
  size_t next = 0;
  std::vector<std::string> failures;
  int counts[3] = {0, 0, 0};  // mutants that exited 0, 2, other
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (next >= files.size()) return;
        i = next++;
      }
      std::vector<std::string> local;
      int local_counts[3] = {0, 0, 0};
      fuzz_file(tmp.path(), files[i], local, local_counts);
      std::lock_guard<std::mutex> lock(mu);
      for (int k = 0; k < 3; ++k) counts[k] += local_counts[k];
      failures.insert(failures.end(), local.begin(), local.end());
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  std::sort(failures.begin(), failures.end());
  for (const auto& f : failures) ADD_FAILURE() << f;
  std::cout << "fuzzed " << files.size() << " files x " << kMutantsPerFile << " mutants: " << counts[0] << " accepted, "
            << counts[1] << " rejected as bad input, " << counts[2] << " other\n";
}

TEST(MutationFuzz, MutatorIsDeterministicAndChangesTheText) {
  const std::string text = "schema: parasol.gpu/1\nname: X\nhbm: 80 GiB\nbw: 3.35 TB/s\nlist: [1, 2, 3]\n";
  Mutator a(42), b(42), c(43);
  int differ = 0;
  for (int i = 0; i < 50; ++i) {
    Mutant ma = a.mutate(text), mb = b.mutate(text), mc = c.mutate(text);
    EXPECT_EQ(ma.text, mb.text);
    EXPECT_EQ(ma.what, mb.what);
    EXPECT_NE(ma.text, text) << ma.what;
    differ += ma.text != mc.text;
  }
  EXPECT_GT(differ, 25);
}

}  // namespace
}  // namespace parasol::testing

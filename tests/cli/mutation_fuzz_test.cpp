// Mutation fuzzing of every input kind: deterministic, seeded mutants (delete, duplicate or swap a line, change a
// number to -1/0/1e30/"abc"/..., swap or drop a unit, rename a key, re-indent, null a value, truncate, insert garbage)
// of every shipped YAML/JSON file, of a plan `parasol plan` wrote, and of request traces in every format (Azure,
// Mooncake, BurstGPT and parasol CSV: small ones written here, and the head of each trace in ../shared when it is
// there). They are fed to `parasol describe`, which must only ever exit 0 or 2 -- never crash, never report an
// internal error (1), never hang (each run has a timeout) -- and whose every exit-2 message names a file and a line
// or key. Mutants are written into a mirror of the data tree (symlinks to the shipped files) next to the file they
// mutate, so relative references resolve. All mutants of one file go through one process (describe --json reports
// each file's exit code); a few also run alone, and the first trace mutants run through `parasol sim --trace` and a
// trace scenario under `sim --plan`, which must reach the same verdict. When a batch misbehaves, its mutants are
// rerun alone to name the culprit.
#include <gtest/gtest.h>

#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "core/common/hash.hpp"
#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kMutantsPerFile = 40;
constexpr int kMutantsPerTrace = 100;
constexpr int kMutantsOfThePlan = 80;
constexpr int kSimRunsPerTrace = 3;
constexpr int kSingleRunsPerFile = 2;
constexpr double kSingleTimeout_s = 10.0;
constexpr double kBatchTimeoutPerMutant_s = 2.0;

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

// An input error a person can act on: it names a file (an absolute path: every input here has one) and a line or a
// key. Command-line errors name the option instead; none arise here.
bool names_file_and_place(const std::string& err) {
  static const std::regex kFile(R"(/[^\s:']+\.(yaml|yml|json|csv|jsonl))");
  static const std::regex kLine(R"(\.(yaml|yml|json|csv|jsonl):\d+:\d+: )");
  return std::regex_search(err, kFile) && (std::regex_search(err, kLine) || err.find("key '") != std::string::npos);
}

struct Tally {
  int accepted = 0, rejected = 0, other = 0;
  void add(const Tally& t) { accepted += t.accepted, rejected += t.rejected, other += t.other; }
  int total() const { return accepted + rejected + other; }
};

// One seed input: its path in the mirror, its text, how many mutants, and extra describe arguments.
struct Seed {
  fs::path path;  // in the mirror (mutants are written beside it)
  std::string label;
  std::string text;
  int mutants = kMutantsPerFile;
  std::string trace_format;  // traces: their format (then also run through `parasol sim`)
};

// A fixed deployment for the trace runs: the default scenario and a plan for it (no search per run).
struct SimRig {
  fs::path scenario, plan;
};

// Runs the mutants of one seed; appends what went wrong to `failures`.
void fuzz_seed(const Seed& seed, const SimRig* rig, std::vector<std::string>& failures, Tally& tally) {
  Mutator mut(fnv1a64(seed.label) ^ 0x5eed);
  std::vector<fs::path> paths;
  std::vector<std::string> whats;
  for (int k = 0; k < seed.mutants; ++k) {
    Mutant m = mut.mutate(seed.text);
    fs::path p = seed.path.parent_path() /
                 (seed.path.stem().string() + ".mut" + std::to_string(k) + seed.path.extension().string());
    write_text(p, m.text);
    paths.push_back(p);
    whats.push_back(seed.label + " mutant " + std::to_string(k) + ": " + m.what);
  }
  std::vector<std::string> format;
  if (!seed.trace_format.empty()) format = {"--trace-format", seed.trace_format};

  std::vector<std::string> args = {"describe", "--json"};
  args.insert(args.end(), format.begin(), format.end());
  for (const auto& p : paths) args.push_back(p.string());
  RunResult batch = run_parasol(args, 10.0 + kBatchTimeoutPerMutant_s * seed.mutants);
  bool batch_ok = batch.exited() && (batch.exit_code == 0 || batch.exit_code == 2);
  std::vector<int> codes;
  if (batch_ok) {
    try {
      auto j = nlohmann::json::parse(batch.out);
      batch_ok = j.is_array() && j.size() == paths.size();
      for (size_t i = 0; batch_ok && i < j.size(); ++i) {
        int c = j[i].at("exit_code").get<int>();
        codes.push_back(c);
        (c == 0 ? tally.accepted : c == 2 ? tally.rejected : tally.other) += 1;
        if (j[i].at("file").get<std::string>() != paths[i].string()) batch_ok = false;
        const std::string err = j[i].value("error", std::string());
        if (c != 0 && c != 2) failures.push_back(whats[i] + ": exit code " + std::to_string(c) + ": " + err);
        if (c == 2 && !names_file_and_place(err)) failures.push_back(whats[i] + ": names no file and line/key: " + err);
      }
    } catch (const std::exception&) {
      batch_ok = false;
    }
  }
  if (!batch_ok) {
    // Name the culprit(s).
    for (size_t i = 0; i < paths.size(); ++i) {
      std::vector<std::string> one = {"describe", "--json"};
      one.insert(one.end(), format.begin(), format.end());
      one.push_back(paths[i].string());
      RunResult r = run_parasol(one, kSingleTimeout_s);
      if (!r.exited() || (r.exit_code != 0 && r.exit_code != 2)) failures.push_back(whats[i] + ": " + describe_run(r));
    }
    if (failures.empty()) failures.push_back(seed.label + ": batch run failed (" + describe_run(batch) + ")");
    return;
  }
  auto one_line = [&](size_t i, const RunResult& r, const std::string& how) {
    if (r.exit_code == 2 && (line_count(r.err) != 1 || r.err.rfind("parasol: error: ", 0) != 0))
      failures.push_back(whats[i] + ": " + how + ": expected one 'parasol: error:' line, got: " + r.err);
    else if (r.exit_code == 2 && !names_file_and_place(r.err))
      failures.push_back(whats[i] + ": " + how + ": names no file and line/key: " + r.err);
  };
  // The single-file path, for the first few mutants: same verdict as in the batch; errors are one line each.
  for (size_t i = 0; i < paths.size() && i < static_cast<size_t>(kSingleRunsPerFile); ++i) {
    std::vector<std::string> one = {"describe"};
    one.insert(one.end(), format.begin(), format.end());
    one.push_back(paths[i].string());
    RunResult r = run_parasol(one, kSingleTimeout_s);
    if (!r.exited() || r.exit_code != codes[i]) {
      failures.push_back(whats[i] + ": alone: " + describe_run(r) + " (in batch: " + std::to_string(codes[i]) + ")");
      continue;
    }
    one_line(i, r, "alone");
  }
  // Traces: the simulator reads them as describe does, under --trace and as a scenario's workload under --plan.
  for (size_t i = 0; rig && !seed.trace_format.empty() && i < paths.size() && i < size_t(kSimRunsPerTrace); ++i) {
    RunResult r = run_parasol({"sim", rig->scenario.string(), "--plan", rig->plan.string(), "--trace", paths[i].string(),
                               "--trace-format", seed.trace_format, "--requests", "20", "-q"},
                              30.0);
    if (!r.exited() || r.exit_code != codes[i])
      failures.push_back(whats[i] + ": sim --trace: " + describe_run(r) + " (describe: " + std::to_string(codes[i]) + ")");
    else
      one_line(i, r, "sim --trace");
    const fs::path sc = paths[i].string() + ".scenario.yaml";
    write_text(sc, read_all(rig->scenario) + "\n");
    std::string text = read_all(sc);
    const auto w = text.find("workload:");
    const auto end = text.find("\nslo:", w);
    if (w == std::string::npos || end == std::string::npos) {
      failures.push_back("the rig scenario has no workload section followed by slo:");
      return;
    }
    text.replace(w, end - w,
                 "workload:\n  kind: trace\n  requests: 20\n  trace: {path: " + paths[i].string() +
                     ", format: " + seed.trace_format + "}\n");
    write_text(sc, text);
    RunResult p = run_parasol({"sim", sc.string(), "--plan", rig->plan.string(), "-q"}, 30.0);
    if (!p.exited() || p.exit_code != codes[i])
      failures.push_back(whats[i] + ": sim --plan (trace scenario): " + describe_run(p) + " (describe: " +
                         std::to_string(codes[i]) + ")");
    else
      one_line(i, p, "sim --plan");
  }
}

// Small traces in every format (valid: the fuzzer checks that their mutants, not they, are rejected), and the first
// rows of each shared trace when ../shared is there.
std::vector<std::pair<std::string, std::string>> trace_seeds(std::vector<std::string>& formats) {
  std::vector<std::pair<std::string, std::string>> out;  // file name, text
  auto add = [&](const std::string& name, const std::string& text, const std::string& format) {
    out.emplace_back(name, text);
    formats.push_back(format);
  };
  std::string parasol = "arrival_s,input_tokens,output_tokens,prefix_hashes\n";
  std::string azure = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
  std::string burst = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n";
  std::string moon;
  for (int i = 0; i < 16; ++i) {
    const int in = 100 + 37 * i, out_t = 10 + 3 * i;
    parasol += std::to_string(0.25 * i) + "," + std::to_string(in) + "," + std::to_string(out_t) + "," +
               std::to_string(i) + " " + std::to_string(i + 1) + "\n";
    azure += "2023-11-16 18:17:0" + std::to_string(i / 4) + "." + std::to_string(1000000 + 250000 * (i % 4)).substr(1) +
             "0," + std::to_string(in) + "," + std::to_string(out_t) + "\n";
    burst += std::to_string(5 * i) + "," + (i % 3 ? "ChatGPT" : "GPT-4") + "," + std::to_string(in) + "," +
             std::to_string(i % 5 ? out_t : 0) + "," + std::to_string(in + out_t) + "," +
             (i % 2 ? "Conversation log" : "API log") + "\n";
    moon += "{\"timestamp\": " + std::to_string(250 * i) + ", \"input_length\": " + std::to_string(in) +
            ", \"output_length\": " + std::to_string(out_t) + ", \"hash_ids\": [" + std::to_string(i) + ", " +
            std::to_string(i + 1) + "]}\n";
  }
  add("small.parasol.csv", parasol, "parasol");
  add("small.azure.csv", azure, "azure");
  add("small.burstgpt.csv", burst, "burstgpt");
  add("small.mooncake.jsonl", moon, "mooncake");
  const fs::path shared = fs::path(PARASOL_DATA_DIR).parent_path() / "shared" / "traces";
  for (const auto& [rel, format] : std::vector<std::pair<std::string, std::string>>{
           {"azure_llm_2023/AzureLLMInferenceTrace_code.csv", "azure"},
           {"azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "azure"},
           {"mooncake_fast25/conversation_trace.jsonl", "mooncake"},
           {"mooncake_fast25/synthetic_trace.jsonl", "mooncake"}}) {
    std::ifstream in(shared / rel);
    if (!in) continue;
    std::string text, line;
    for (int k = 0; k < 24 && std::getline(in, line); ++k) text += line + "\n";
    add("shared." + fs::path(rel).filename().string(), text, format);
  }
  return out;
}

TEST(MutationFuzz, EveryInputKindNeverCrashesOrHangsOnlyExitZeroOrTwo) {
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
  std::vector<Seed> seeds;
  for (const auto& f : files) {
    const fs::path rel = fs::relative(f, PARASOL_DATA_DIR);
    seeds.push_back({tmp.path() / rel, rel.string(), read_all(f), kMutantsPerFile, ""});
  }
  // A plan as `parasol plan` writes it, and the rig the trace runs use.
  SimRig rig;
  rig.scenario = tmp.path() / "scenarios" / "default.yaml";
  {
    RunResult r = run_parasol({"plan", rig.scenario.string(), "-q", "--out", (tmp.path() / "plan").string()}, 60.0);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    rig.plan = tmp.path() / "plan" / "plan.yaml";
    const fs::path copy = tmp.path() / "plan" / "seed.plan.yaml";
    write_text(copy, read_all(rig.plan));
    seeds.push_back({copy, "plan.yaml (parasol plan scenarios/default.yaml)", read_all(copy), kMutantsOfThePlan, ""});
  }
  std::vector<std::string> formats;
  const auto traces = trace_seeds(formats);
  ASSERT_GE(traces.size(), 4u);
  fs::create_directories(tmp.path() / "traces");
  for (size_t i = 0; i < traces.size(); ++i) {
    const fs::path p = tmp.path() / "traces" / traces[i].first;
    write_text(p, traces[i].second);
    RunResult r = run_parasol({"describe", "-q", "--trace-format", formats[i], p.string()}, 60.0);
    ASSERT_EQ(r.exit_code, 0) << traces[i].first << ": " << r.err;
    seeds.push_back({p, "trace " + traces[i].first, traces[i].second, kMutantsPerTrace, formats[i]});
  }

  // Two workers: the machine running the suite has few cores.
  std::mutex mu;
  size_t next = 0;
  std::vector<std::string> failures;
  Tally tally;
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (next >= seeds.size()) return;
        i = next++;
      }
      std::vector<std::string> local;
      Tally t;
      fuzz_seed(seeds[i], &rig, local, t);
      std::lock_guard<std::mutex> lock(mu);
      tally.add(t);
      failures.insert(failures.end(), local.begin(), local.end());
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  std::sort(failures.begin(), failures.end());
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_GE(tally.total(), 3000);
  std::cout << "fuzzed " << seeds.size() << " inputs (" << files.size() << " shipped files, a plan, " << traces.size()
            << " traces): " << tally.total() << " mutants, " << tally.accepted << " accepted, " << tally.rejected
            << " rejected as bad input, " << tally.other << " other\n";
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

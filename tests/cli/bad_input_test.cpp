// Bad input, one test per class: each writes a small broken file into a scratch directory, runs
// `parasol describe` on it and checks exit code 2 and a single stderr line
//   parasol: error: FILE:LINE:COL: key 'a.b': expected X, found Y
// whose LINE is where the offending text is in the file, whose key path names it, and whose expected/found say what.
#include <gtest/gtest.h>

#include <regex>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

std::string data(const std::string& rel) {
  return (fs::path(PARASOL_DATA_DIR) / rel).string();
}

// A valid scenario referencing the shipped model and cluster by absolute path.
std::string valid_scenario() {
  return "schema: parasol.scenario/1\n"
         "name: probe\n"
         "model: " +
         data("scenarios/models/llama-3.1-8b.yaml") +
         "\n"
         "cluster: " +
         data("topologies/clusters/dgx-h100.yaml") +
         "\n"
         "workload:\n"
         "  kind: synthetic\n"
         "  requests: 10\n"
         "  arrival: {process: poisson, rate: 1}\n"
         "slo:\n"
         "  ttft_p99: 500 ms\n"
         "search:\n"
         "  tp: [1, 2]\n"
         "  top_n: 3\n"
         "sim:\n"
         "  duration: 10 s\n";
}

// Replaces the first occurrence of `from` by `to`; the test fails when `from` is absent.
std::string edit(std::string text, const std::string& from, const std::string& to) {
  auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

// 1-based line of the first occurrence of `needle` in `text`.
int line_of(const std::string& text, const std::string& needle) {
  auto pos = text.find(needle);
  EXPECT_NE(pos, std::string::npos) << needle;
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(pos), '\n'));
}

struct Located {
  std::string file;
  int line = 0;
  int column = 0;
  std::string key;
  std::string expected;
  std::string found;
};

// Parses the one-line error; fails the test when the shape is wrong.
Located expect_one_line_error(const RunResult& r) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(line_count(r.err), 1) << r.err;
  std::smatch m;
  static const std::regex kShape(
      R"re(parasol: error: (.+):(\d+):(\d+): (?:key '([^']*)': )?expected (.+), found (.+)\n)re");
  Located loc;
  if (!std::regex_match(r.err, m, kShape)) {
    ADD_FAILURE() << "not a located one-line error: " << r.err;
    return loc;
  }
  loc = {m[1], std::stoi(m[2]), std::stoi(m[3]), m[4], m[5], m[6]};
  EXPECT_GT(loc.column, 0);
  return loc;
}

struct Case {
  TempDir dir;
  fs::path file;
  std::string text;
  RunResult result;
  Located loc;
  Case(const std::string& name, std::string content) : file(dir / name), text(std::move(content)) {
    write_text(file, text);
    result = run_parasol({"describe", file.string()});
    loc = expect_one_line_error(result);
  }
};

TEST(BadInput, MissingRequiredKeyNamesTheKey) {
  Case c("s.yaml", edit(valid_scenario(), "name: probe\n", ""));
  EXPECT_EQ(c.loc.file, c.file.string());
  EXPECT_EQ(c.loc.key, "name");
  EXPECT_NE(c.loc.expected.find("'name'"), std::string::npos) << c.result.err;
  EXPECT_NE(c.loc.found.find("missing"), std::string::npos) << c.result.err;
}

TEST(BadInput, UnknownKeySuggestsTheClosestKnownOne) {
  Case c("s.yaml", edit(valid_scenario(), "workload:", "worklaod:"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "worklaod:"));
  EXPECT_EQ(c.loc.key, "worklaod");
  EXPECT_NE(c.loc.expected.find("did you mean 'workload'"), std::string::npos) << c.result.err;
  EXPECT_NE(c.loc.found.find("'worklaod'"), std::string::npos) << c.result.err;
}

TEST(BadInput, UnknownNestedKeyHasItsFullPath) {
  Case c("s.yaml", edit(valid_scenario(), "  top_n: 3", "  topn: 3"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "topn:"));
  EXPECT_EQ(c.loc.key, "search.topn");
  EXPECT_NE(c.loc.expected.find("did you mean 'top_n'"), std::string::npos) << c.result.err;
}

TEST(BadInput, WrongTypeSaysWhatWasExpected) {
  Case c("s.yaml", edit(valid_scenario(), "top_n: 3", "top_n: many"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "top_n: many"));
  EXPECT_EQ(c.loc.key, "search.top_n");
  EXPECT_NE(c.loc.expected.find("integer"), std::string::npos);
  EXPECT_NE(c.loc.found.find("'many'"), std::string::npos);
}

TEST(BadInput, ListWhereAMapBelongsIsAWrongType) {
  Case c("s.yaml", edit(valid_scenario(), "slo:\n  ttft_p99: 500 ms", "slo: [500 ms]"));
  EXPECT_EQ(c.loc.key, "slo");
  EXPECT_NE(c.loc.expected.find("map"), std::string::npos);
  EXPECT_NE(c.loc.found.find("list"), std::string::npos);
}

TEST(BadInput, WrongUnitIsRejectedWithAnExample) {
  Case c("s.yaml", edit(valid_scenario(), "ttft_p99: 500 ms", "ttft_p99: 500 GB/s"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "ttft_p99"));
  EXPECT_EQ(c.loc.key, "slo.ttft_p99");
  EXPECT_NE(c.loc.expected.find("a time like"), std::string::npos);
  EXPECT_NE(c.loc.found.find("'500 GB/s'"), std::string::npos);
}

TEST(BadInput, MissingUnitIsRejected) {
  Case c("s.yaml", edit(valid_scenario(), "duration: 10 s", "duration: 10"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "duration: 10"));
  EXPECT_EQ(c.loc.key, "sim.duration");
  EXPECT_NE(c.loc.expected.find("a time like"), std::string::npos);
  EXPECT_NE(c.loc.found.find("'10'"), std::string::npos);
}

TEST(BadInput, OutOfRangeValueGivesTheRange) {
  Case c("s.yaml", edit(valid_scenario(), "tp: [1, 2]", "tp: [1, 0]"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "tp: [1, 0]"));
  EXPECT_EQ(c.loc.key, "search.tp[1]");
  EXPECT_NE(c.loc.expected.find("[1, "), std::string::npos) << c.result.err;
  EXPECT_NE(c.loc.found.find("'0'"), std::string::npos);
}

TEST(BadInput, NegativeTimeIsOutOfRange) {
  Case c("s.yaml", edit(valid_scenario(), "ttft_p99: 500 ms", "ttft_p99: -5 ms"));
  EXPECT_EQ(c.loc.key, "slo.ttft_p99");
  EXPECT_NE(c.loc.found.find("'-5 ms'"), std::string::npos);
}

TEST(BadInput, YamlSyntaxErrorHasTheLocation) {
  Case c("s.yaml", edit(valid_scenario(), "  tp: [1, 2]", "  tp: [1, 2"));
  EXPECT_EQ(c.loc.file, c.file.string());
  EXPECT_GE(c.loc.line, line_of(c.text, "tp: [1, 2"));
  EXPECT_NE(c.loc.expected.find("syntax"), std::string::npos);
}

TEST(BadInput, JsonSyntaxErrorHasTheLocation) {
  // A missing comma after "hidden_size": 4096; the parser notices on the next line.
  const std::string text =
      "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"hidden_size\": 4096\n  \"vocab_size\": 5\n}\n";
  Case c("config.json", text);
  EXPECT_EQ(c.loc.line, line_of(text, "vocab_size"));
  EXPECT_NE(c.loc.expected.find("syntax"), std::string::npos);
}

TEST(BadInput, MissingReferencedFileSaysWhereItLooked) {
  Case c("s.yaml", edit(valid_scenario(), data("scenarios/models/llama-3.1-8b.yaml"), "models/no-such-model.yaml"));
  EXPECT_EQ(c.loc.line, line_of(c.text, "no-such-model"));
  EXPECT_EQ(c.loc.key, "model");
  EXPECT_NE(c.loc.expected.find("an existing file"), std::string::npos);
  EXPECT_NE(c.loc.expected.find((c.dir / "models/no-such-model.yaml").string()), std::string::npos) << c.result.err;
  EXPECT_NE(c.loc.found.find("'models/no-such-model.yaml'"), std::string::npos);
}

TEST(BadInput, MissingFileOnTheCommandLine) {
  RunResult r = run_parasol({"describe", "/no/such/dir/file.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(line_count(r.err), 1);
  EXPECT_NE(r.err.find("/no/such/dir/file.yaml"), std::string::npos);
}

TEST(BadInput, UnknownSchemaSuggestsAKnownOne) {
  Case c("s.yaml", edit(valid_scenario(), "parasol.scenario/1", "parasol.scenaro/1"));
  EXPECT_EQ(c.loc.line, 1);
  EXPECT_EQ(c.loc.key, "schema");
  EXPECT_NE(c.loc.expected.find("did you mean 'parasol.scenario/1'"), std::string::npos) << c.result.err;
}

TEST(BadInput, UnknownEnumValueListsTheChoices) {
  Case c("s.yaml", edit(valid_scenario(), "duration: 10 s", "duration: 10 s\n  fidelity: netwrok"));
  EXPECT_EQ(c.loc.key, "sim.fidelity");
  EXPECT_NE(c.loc.expected.find("analytic, network"), std::string::npos);
  EXPECT_NE(c.loc.expected.find("did you mean 'network'"), std::string::npos);
}

TEST(BadInput, GpuTypeNotInTheCluster) {
  Case c("s.yaml", valid_scenario() + "gpu_type: H100-SXN\n");
  EXPECT_EQ(c.loc.key, "gpu_type");
  EXPECT_EQ(c.loc.line, line_of(c.text, "gpu_type"));
  EXPECT_NE(c.loc.expected.find("GPU type of the cluster"), std::string::npos) << c.result.err;
}

TEST(BadInput, DisconnectedClusterIsRejectedAtTheFabric) {
  // The shipped two-node cluster with its fabric removed: the nodes cannot reach each other.
  std::string text = read_all(data("topologies/clusters/h200-2node.yaml"));
  const auto fabric = text.find("\nfabric:");
  ASSERT_NE(fabric, std::string::npos);
  text = text.substr(0, fabric) + "\nfabric:\n  kind: none\n";
  Case c("c.yaml", text);
  EXPECT_EQ(c.loc.file, c.file.string());
  EXPECT_EQ(c.loc.key, "fabric");
  EXPECT_GE(c.loc.line, line_of(c.text, "fabric:"));
  EXPECT_TRUE(c.result.err.find("reach") != std::string::npos || c.result.err.find("connected") != std::string::npos)
      << c.result.err;
}

TEST(BadInput, ErrorInAReferencedFileNamesThatFile) {
  TempDir dir;
  std::string model = read_all(data("scenarios/models/llama-3.1-8b.yaml"));
  const std::string broken = std::regex_replace(model, std::regex("\nlayers: *[0-9]+"), "\nlayers: -3",
                                                std::regex_constants::format_first_only);
  ASSERT_NE(broken, model) << "the shipped model has no top-level 'layers:'";
  write_text(dir / "m.yaml", broken);
  write_text(dir / "s.yaml", edit(valid_scenario(), data("scenarios/models/llama-3.1-8b.yaml"), "m.yaml"));
  RunResult r = run_parasol({"describe", (dir / "s.yaml").string()});
  Located loc = expect_one_line_error(r);
  EXPECT_EQ(loc.file, (dir / "m.yaml").string());
  EXPECT_EQ(loc.line, line_of(broken, "layers: -3"));
  EXPECT_EQ(loc.key, "layers");
}

// Bad trace rows under `sim --trace` and `sim --plan` (the simulation streams the trace: every row is read before it
// starts, so a bad one is the usual located error, never an abort inside the simulation).
struct TraceCase {
  TempDir dir;
  fs::path trace;
  RunResult result;
  Located loc;
  TraceCase(const std::string& name, const std::string& content, const std::string& format,
            std::vector<std::string> extra = {}) : trace(dir / name) {
    write_text(dir / "s.yaml", valid_scenario());
    write_text(trace, content);
    std::vector<std::string> args = {"sim", (dir / "s.yaml").string(), "--trace", trace.string(), "--trace-format",
                                     format, "-q"};
    args.insert(args.end(), extra.begin(), extra.end());
    result = run_parasol(args, 60);
    loc = expect_one_line_error(result);
    EXPECT_EQ(loc.file, trace.string());
  }
};

const char* const kParasolHeader = "arrival_s,input_tokens,output_tokens\n";

TEST(BadTrace, OutOfOrderArrivalNamesItsLine) {
  TraceCase c("t.csv", std::string(kParasolHeader) + "0,100,10\n5,100,10\n1,100,10\n", "parasol");
  EXPECT_EQ(c.loc.line, 4);
  EXPECT_EQ(c.loc.key, "arrival_s");
}

TEST(BadTrace, GarbageByteInANumber) {
  TraceCase c("t.csv", std::string(kParasolHeader) + "0,100,10\n5,1\xff" "0,10\n", "parasol");
  EXPECT_EQ(c.loc.line, 3);
  EXPECT_EQ(c.loc.key, "input_tokens");
}

TEST(BadTrace, TruncatedLastLine) {
  TraceCase c("t.csv", std::string(kParasolHeader) + "0,100,10\n1,10", "parasol");
  EXPECT_EQ(c.loc.line, 3);
}

TEST(BadTrace, JsonArrayInsteadOfJsonLines) {
  TraceCase c("t.jsonl", "[{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 5}]\n", "mooncake");
  EXPECT_EQ(c.loc.line, 1);
  EXPECT_NE(c.loc.expected.find("JSON object per line"), std::string::npos);
}

TEST(BadTrace, PromptOfTwoToTheSixtyThreeTokensIsOutOfBounds) {
  TraceCase c("t.csv", std::string(kParasolHeader) + "0,100,10\n1,9223372036854775807,10\n", "parasol");
  EXPECT_EQ(c.loc.line, 3);
  EXPECT_NE(c.loc.expected.find("2^40"), std::string::npos);
}

TEST(BadTrace, MooncakeLengthThatIsNotAnInteger) {
  TraceCase c("t.jsonl", "{\"timestamp\": 0, \"input_length\": 1e30, \"output_length\": 5}\n", "mooncake");
  EXPECT_EQ(c.loc.key, "input_length");
}

// The same file through a scenario whose workload is the trace, with a plan given (no search).
TEST(BadTrace, TraceScenarioUnderPlan) {
  TempDir dir;
  write_text(dir / "t.csv", std::string(kParasolHeader) + "0,100,10\n5,100,10\n1,100,10\n");
  write_text(dir / "s.yaml", edit(valid_scenario(), "workload:\n  kind: synthetic\n  requests: 10\n  arrival: {process: poisson, rate: 1}\n",
                                  "workload:\n  kind: trace\n  trace: {path: t.csv, format: parasol}\n"));
  write_text(dir / "ok.yaml", valid_scenario());  // the same deployment; `plan` on the trace scenario rejects it too
  const RunResult plan = run_parasol({"plan", (dir / "ok.yaml").string(), "-q", "--out", (dir / "p").string()}, 60);
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  const RunResult r =
      run_parasol({"sim", (dir / "s.yaml").string(), "--plan", (dir / "p" / "plan.yaml").string(), "-q"}, 60);
  const Located loc = expect_one_line_error(r);
  EXPECT_EQ(loc.file, (dir / "t.csv").string());
  EXPECT_EQ(loc.line, 4);
}

// A plan made for another model or cluster is refused, naming what the scenario has and what the plan was for.
struct PlanMismatch {
  TempDir dir;
  RunResult result;
  Located loc;
  PlanMismatch(const std::string& from, const std::string& to) {
    write_text(dir / "ok.yaml", valid_scenario());
    const RunResult plan = run_parasol({"plan", (dir / "ok.yaml").string(), "-q", "--out", (dir / "p").string()}, 60);
    EXPECT_EQ(plan.exit_code, 0) << plan.err;
    write_text(dir / "other.yaml", edit(valid_scenario(), from, to));
    result = run_parasol({"sim", (dir / "other.yaml").string(), "--plan", (dir / "p" / "plan.yaml").string(), "-q"}, 60);
    EXPECT_EQ(result.exit_code, 2) << result.err;
    EXPECT_EQ(line_count(result.err), 1) << result.err;
    EXPECT_NE(result.err.find((dir / "p" / "plan.yaml").string()), std::string::npos) << result.err;
    EXPECT_NE(result.err.find((dir / "other.yaml").string()), std::string::npos) << result.err;
  }
};

TEST(PlanMismatch, AnotherModelNamesBoth) {
  PlanMismatch m(data("scenarios/models/llama-3.1-8b.yaml"), data("scenarios/models/llama-3.1-70b.yaml"));
  EXPECT_NE(m.result.err.find("key 'model'"), std::string::npos) << m.result.err;
  EXPECT_NE(m.result.err.find("llama-3.1-70b"), std::string::npos) << m.result.err;
  EXPECT_NE(m.result.err.find("llama-3.1-8b"), std::string::npos) << m.result.err;
}

TEST(PlanMismatch, AnotherClusterNamesBoth) {
  PlanMismatch m(data("topologies/clusters/dgx-h100.yaml"), data("topologies/clusters/dgx-a100.yaml"));
  EXPECT_NE(m.result.err.find("key 'cluster'"), std::string::npos) << m.result.err;
}

// A checkout without ../shared: a scenario that replays an absent trace fails and says where traces come from; one
// that declares a stand-in (missing_trace: workload_stats) runs it and says so whatever -q or --json.
std::string trace_scenario(const std::string& extra_workload_line) {
  return edit(valid_scenario(), "workload:\n  kind: synthetic\n  requests: 10\n  arrival: {process: poisson, rate: 1}\n",
              "workload:\n  kind: trace\n" + extra_workload_line +
                  "  trace: {path: ../no-shared/traces/absent.csv, format: azure}\n");
}

std::string with_stats(const std::string& text) {
  return edit(text, "search:\n", "search:\n  workload_stats: {rate: 2, input_mean: 500, output_mean: 50}\n");
}

TEST(FreshClone, AbsentTraceSaysWhereTracesComeFrom) {
  TempDir dir;
  const std::string text = with_stats(trace_scenario(""));
  write_text(dir / "s.yaml", text);
  const RunResult r = run_parasol({"sim", (dir / "s.yaml").string(), "-q"}, 60);
  const Located loc = expect_one_line_error(r);
  EXPECT_EQ(loc.file, (dir / "s.yaml").string());
  EXPECT_EQ(loc.line, line_of(text, "absent.csv"));
  EXPECT_EQ(loc.key, "workload.trace.path");
  EXPECT_NE(loc.expected.find("../shared/traces"), std::string::npos) << r.err;
  EXPECT_NE(loc.expected.find("missing_trace: workload_stats"), std::string::npos) << r.err;
}

TEST(FreshClone, DeclaredStandInRunsAndSaysSoEvenQuietAndInJson) {
  TempDir dir;
  write_text(dir / "s.yaml", with_stats(trace_scenario("  missing_trace: workload_stats\n")));
  const RunResult q = run_parasol({"sim", (dir / "s.yaml").string(), "-q"}, 60);
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_NE(q.err.find("warning: workload: trace ../no-shared/traces/absent.csv not found"), std::string::npos) << q.err;
  const RunResult j = run_parasol({"sim", (dir / "s.yaml").string(), "--json"}, 60);
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_NE(j.out.find("\"notes\": [\"workload: trace ../no-shared/traces/absent.csv not found"), std::string::npos)
      << j.out.substr(0, 400);
}

TEST(FreshClone, StandInWithoutDeclaredStatisticsIsAnError) {
  TempDir dir;
  const std::string text = trace_scenario("  missing_trace: workload_stats\n");
  write_text(dir / "s.yaml", text);
  const Located loc = expect_one_line_error(run_parasol({"sim", (dir / "s.yaml").string(), "-q"}, 60));
  EXPECT_EQ(loc.key, "workload.missing_trace");
}

// Inputs that used to hang or grow without bound now end promptly: answers of 2^32 tokens (past any context window:
// rejected with the reason), and a 31-year gap between two arrivals (an idle span costs nothing), the latter under a
// 1 GiB address-space limit.
TEST(Bounds, FourBillionTokenAnswersEndWithTheReason) {
  TempDir dir;
  write_text(dir / "s.yaml", edit(valid_scenario(), "  arrival: {process: poisson, rate: 1}\n",
                                  "  arrival: {process: poisson, rate: 1}\n  output: {dist: fixed, value: 4294967296}\n"));
  const RunResult r = run_parasol({"sim", (dir / "s.yaml").string(), "--json"}, 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("exceed the model's context window"), std::string::npos) << r.out.substr(0, 600);
}

TEST(Bounds, AThirtyOneYearGapBetweenArrivalsCostsNothing) {
  TempDir dir;
  write_text(dir / "t.csv", "arrival_s,input_tokens,output_tokens\n0,100,10\n1000000000,100,10\n");
  write_text(dir / "s.yaml", edit(valid_scenario(), "sim:\n  duration: 10 s\n", ""));
  const std::string cmd = "ulimit -v 1048576; exec \"" + std::string(PARASOL_BINARY) + "\" sim \"" +
                          (dir / "s.yaml").string() + "\" --trace \"" + (dir / "t.csv").string() +
                          "\" --trace-format parasol --json";
  const RunResult r = run_program("/bin/sh", {"-c", cmd}, 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"completed\": 2"), std::string::npos) << r.out.substr(0, 400);
}

// A numeric option out of its range is a usage error saying what was expected, not a silent default.
TEST(BadOptions, OutOfRangeNumbersSayWhatWasExpected) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"sim", "--requests", "-5"}, "--requests: expected a count >= 0, found -5"},
      {{"step", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--tp", "0", "--batch", "decode:1@5"},
       "--tp: expected a count >= 1, found 0"},
      {{"netbench", data("topologies/clusters/dgx-h100.yaml"), "--efficiency", "3"},
       "--efficiency: expected a fraction in (0, 1], found 3"}};
  for (const auto& [args, message] : cases) {
    const RunResult r = run_parasol(args, 30);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(line_count(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace parasol::testing

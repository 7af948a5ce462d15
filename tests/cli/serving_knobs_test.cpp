// The scenario's `serving:` section: engine knobs under vLLM's names reach the planner and the schedulers (the
// summary says which ran), bad values are exit-2 errors at the key, and prefix caching serves a shared prefix from
// the cache: the second of two requests sharing k 512-token blocks prefills only the rest (k x 512 hit tokens, in
// requests.csv and the summary), none with enable_prefix_caching: false; the Mooncake trace gets a hit rate above 0.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

std::string scenario_text(const std::string& trace, const std::string& serving) {
  const std::string data = PARASOL_DATA_DIR;
  return "schema: parasol.scenario/1\nname: knobs\nmodel: " + data + "/scenarios/models/llama-3.1-8b.yaml\ncluster: " +
         data + "/topologies/clusters/dgx-h100.yaml\nworkload:\n  kind: trace\n  trace: {path: " + trace +
         ", format: parasol}\nsearch: {tp: [1], pp: [1], ep: [1], attn_dp: [1], gpus: 1}\n" + serving;
}

// Two requests; the second arrives after the first finished and shares its first `shared` prefix blocks.
std::string two_requests(int shared) {
  std::string second;
  for (int k = 0; k < 5; ++k) second += (k ? " " : "") + std::to_string(k < shared ? 100 + k : 900 + k);
  return "arrival_s,input_tokens,output_tokens,prefix_hashes\n0,2148,4,100 101 102 103 104\n30,2148,4," + second + "\n";
}

struct Served {
  int64_t hit_tokens_second = -1;
  nlohmann::json summary;
  RunResult run;
};

Served serve(const TempDir& dir, const std::string& serving, int shared) {
  write_text(dir.path() / "t.csv", two_requests(shared));
  write_text(dir.path() / "s.yaml", scenario_text((dir.path() / "t.csv").string(), serving));
  Served s;
  s.run = run_parasol({"sim", (dir.path() / "s.yaml").string(), "--json", "--out", (dir.path() / "o").string()},
                              60.0);
  if (s.run.exit_code != 0) return s;
  s.summary = nlohmann::json::parse(s.run.out);
  std::istringstream csv(read_all(dir.path() / "o" / "requests.csv"));
  std::string line;
  std::getline(csv, line);
  while (std::getline(csv, line)) {
    std::vector<std::string> col;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) col.push_back(c);
    if (col.size() > 17 && col[0] == "1") s.hit_tokens_second = std::stoll(col[17]);  // prefix_hit_tokens
  }
  return s;
}

TEST(ServingKnobs, TheSecondRequestPrefillsOnlyWhatItDoesNotShare) {
  for (int shared : {1, 3}) {
    TempDir dir;
    const Served s = serve(dir, "serving: {enable_prefix_caching: true}\n", shared);
    ASSERT_EQ(s.run.exit_code, 0) << s.run.err;
    EXPECT_EQ(s.hit_tokens_second, shared * 512) << "shared blocks " << shared;
    EXPECT_EQ(s.summary.at("prefix_cache").at("hit_tokens").get<int64_t>(), shared * 512);
    const int64_t input = s.summary.at("tokens").at("input").get<int64_t>();
    EXPECT_NEAR(s.summary.at("prefix_cache").at("hit_rate").get<double>(), shared * 512.0 / static_cast<double>(input),
                1e-9);
    EXPECT_NE(s.summary.at("run").at("serving").get<std::string>().find("prefix caching on"), std::string::npos);
  }
  TempDir dir;
  const Served off = serve(dir, "serving: {enable_prefix_caching: false}\n", 3);
  ASSERT_EQ(off.run.exit_code, 0) << off.run.err;
  EXPECT_EQ(off.hit_tokens_second, 0);
}

TEST(ServingKnobs, KnobsReachTheSchedulersAndThePlanner) {
  TempDir dir;
  const Served s = serve(dir,
                         "serving:\n  max_num_seqs: 7\n  max_num_batched_tokens: 1000\n  block_size: 32\n"
                         "  enable_chunked_prefill: false\n  max_model_len: 4096\n  router: power_of_two\n",
                         0);
  ASSERT_EQ(s.run.exit_code, 0) << s.run.err;
  const std::string serving = s.summary.at("run").at("serving").get<std::string>();
  for (const char* want : {"prefill first", "max_num_seqs 7", "max_num_batched_tokens 1000", "block 32",
                           "max_model_len 4096", "router power_of_two"})
    EXPECT_NE(serving.find(want), std::string::npos) << want << " in: " << serving;
  // The planner plans with the same limits: the plan it writes carries them.
  const RunResult p = run_parasol({"plan", (dir.path() / "s.yaml").string(), "-q", "--out", (dir.path() / "p").string()},
                                  60.0);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const std::string plan = read_all(dir.path() / "p" / "plan.yaml");
  EXPECT_NE(plan.find("max_batch_seqs: 7"), std::string::npos) << plan;
  EXPECT_NE(plan.find("max_batch_tokens: 1000"), std::string::npos) << plan;
  EXPECT_NE(plan.find("kv_block_tokens: 32"), std::string::npos) << plan;
}

TEST(ServingKnobs, PromptsPastMaxModelLenAreRejectedWithTheReason) {
  TempDir dir;
  const Served s = serve(dir, "serving: {max_model_len: 2000}\n", 0);
  ASSERT_EQ(s.run.exit_code, 0) << s.run.err;
  EXPECT_EQ(s.summary.at("requests").at("rejected").get<int64_t>(), 2);
  const std::string csv = read_all(dir.path() / "o" / "requests.csv");
  EXPECT_NE(csv.find("context window of 2000"), std::string::npos) << csv;
}

TEST(ServingKnobs, BadValuesAreExitCode2AtTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"serving: {gpu_memory_utilization: 1.5}\n", "gpu_memory_utilization"},
      {"serving: {preemption_mode: sometimes}\n", "preemption_mode"},
      {"serving: {max_num_seq: 8}\n", "max_num_seqs"},  // did you mean
      {"serving: {block_size: 24, enable_prefix_caching: true}\n", "block_size"},
      {"serving: {max_model_len: 99999999}\n", "max_model_len"},
      {"serving: {router: {policy: fastest}}\n", "fastest"},
      {"serving: {max_num_batched_tokens: 0}\n", "max_num_batched_tokens"},
  };
  for (const auto& [serving, key] : cases) {
    TempDir dir;
    const Served s = serve(dir, serving, 0);
    EXPECT_EQ(s.run.exit_code, 2) << serving << s.run.err;
    EXPECT_NE(s.run.err.find(key), std::string::npos) << serving << " -> " << s.run.err;
    EXPECT_FALSE(fs::exists(dir.path() / "o" / "summary.json")) << serving;
  }
}

TEST(ServingKnobs, MooncakeTraceHitsThePrefixCacheByDefault) {
  const fs::path trace =
      fs::path(PARASOL_DATA_DIR).parent_path() / "shared" / "traces" / "mooncake_fast25" / "conversation_trace.jsonl";
  if (!fs::exists(trace)) GTEST_SKIP() << "needs ../shared/traces (absent: " << trace << ")";
  const RunResult r = run_parasol(
      {"sim", std::string(PARASOL_DATA_DIR) + "/scenarios/pd-disagg-mooncake.yaml", "--requests", "2000", "--json"},
      120.0);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j.at("prefix_cache").at("hit_tokens").get<int64_t>(), 0);
  EXPECT_GT(j.at("prefix_cache").at("hit_rate").get<double>(), 0.0);
}

}  // namespace
}  // namespace parasol::testing

// The executor under MPI: `mpirun -np N parasol exec --comm mpi` for every layout of the done-when list gives the
// logits and greedy tokens of the unsharded in-process run (within 1e-5 relative, fp32), and a rank that stalls or
// dies makes the job fail within the timeout, naming the rank and the op, instead of hanging.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "core/spec/model.hpp"
#include "exec/generate.hpp"
#include "exec/serve_check.hpp"
#include "exec/test_models.hpp"

namespace parasol::exec {
namespace {

struct Outcome {
  int rc = 0;
  std::string output;
  double wall_s = 0;
};

Outcome run_command(const std::string& cmd) {
  Outcome o;
  auto start = std::chrono::steady_clock::now();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed", 0};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) o.output.append(buf.data(), n);
  int status = pclose(p);
  o.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  o.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return o;
}

std::string mpirun(int np, const std::string& args) {
  return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(np) + " " + PARASOL_BINARY + " exec " +
         args;
}

constexpr int kPrompts = 3, kDecode = 5;
constexpr uint64_t kSeed = 5;

// The same generation as `parasol exec --prompts 3 --decode 5 --seed 5 --logits-out` on one local rank.
GenerateResult reference(const spec::Model& m) {
  SyntheticWeights weights(kSeed);
  GenerateResult out;
  run_local(1, 30, [&](int rank, Communicator& comm) {
    auto be = make_cpu_backend({0, 1});
    plan::ParallelConfig c;
    RunnerOptions opt;
    opt.all_logits = true;
    opt.kv_blocks = 512;
    ModelRunner runner(m, RankLayout::make(m, c, {}, 0), *be, comm, weights, opt);
    GenerateSpec spec;
    spec.prompts = synthetic_prompts(kPrompts, 8, 16, m.vocab, kSeed);
    spec.decode_steps = kDecode;
    spec.prompt_logits = true;
    out = generate(runner, comm, spec, m.vocab);
  });
  return out;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b, size_t row) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t r = 0; r * row < b.size() && a.size() == b.size(); ++r) {
    double scale = 1e-30, d = 0;
    for (size_t j = r * row; j < (r + 1) * row; ++j) {
      scale = std::max(scale, std::fabs(static_cast<double>(b[j])));
      d = std::max(d, std::fabs(static_cast<double>(a[j]) - b[j]));
    }
    worst = std::max(worst, d / scale);
  }
  return worst;
}

// `model`: a builtin test model, or "tiny-NAME" for scenarios/models/tiny-NAME.yaml.
void check_family(const std::string& model, const std::vector<std::string>& layouts) {
  const bool from_file = model.rfind("tiny-", 0) == 0;
  const std::string path = std::string(PARASOL_DATA_DIR) + "/scenarios/models/" + model + ".yaml";
  spec::Model m = from_file ? spec::load_model_file(path) : test_model(model);
  const std::string model_arg = from_file ? path : "builtin:" + model;
  GenerateResult ref = reference(m);
  for (const std::string& layout : layouts) {
    SCOPED_TRACE(model + " " + layout);
    auto cfg = plan::ParallelConfig::parse_label(layout);
    ASSERT_TRUE(cfg);
    std::string file = (std::filesystem::temp_directory_path() /
                        ("parasol_mpi_" + model + "_" + layout + "_" + std::to_string(::getpid()) + ".json"))
                           .string();
    Outcome o = run_command(mpirun(cfg->instance_size(),
                                   "--model " + model_arg + " --layout " + layout + " --comm mpi --prompts " +
                                       std::to_string(kPrompts) + " --decode " + std::to_string(kDecode) +
                                       " --seed " + std::to_string(kSeed) + " --timeout 60 -q --logits-out " + file));
    ASSERT_EQ(o.rc, 0) << o.output;
    std::ifstream in(file);
    nlohmann::json j = nlohmann::json::parse(in);
    std::filesystem::remove(file);
    auto tokens = j["tokens"].get<std::vector<std::vector<int32_t>>>();
    auto last = j["last_logits"].get<std::vector<std::vector<float>>>();
    auto prompt = j["prompt_logits"].get<std::vector<std::vector<float>>>();
    ASSERT_EQ(tokens.size(), ref.tokens.size());
    for (size_t i = 0; i < ref.tokens.size(); ++i) {
      EXPECT_EQ(tokens[i], ref.tokens[i]) << "seq " << i;
      EXPECT_LE(rel_diff(last[i], ref.last_logits[i], m.vocab), 1e-5) << "seq " << i;
      EXPECT_LE(rel_diff(prompt[i], ref.prompt_logits[i], m.vocab), 1e-5) << "seq " << i;
    }
  }
}

const std::vector<std::string> kLayouts{"tp2.pp1.ep1.adp1.dp1", "tp4.pp1.ep1.adp1.dp1", "tp1.pp2.ep1.adp1.dp1",
                                        "tp2.pp2.ep1.adp1.dp1"};
const std::vector<std::string> kMoeLayouts{"tp2.pp1.ep2.adp1.dp1", "tp4.pp1.ep4.adp1.dp1", "tp1.pp1.ep2.adp2.dp1",
                                           "tp2.pp1.ep2.adp2.dp1"};

TEST(MpiExec, LlamaLayoutsUnderMpirunMatchTheUnshardedRun) { check_family("test-llama", kLayouts); }

TEST(MpiExec, MixtralLayoutsUnderMpirunMatchTheUnshardedRun) {
  auto all = kLayouts;
  all.insert(all.end(), kMoeLayouts.begin(), kMoeLayouts.end());
  check_family("test-mixtral", all);
}

TEST(MpiExec, DeepseekLayoutsUnderMpirunMatchTheUnshardedRun) {
  auto all = kLayouts;
  all.insert(all.end(), kMoeLayouts.begin(), kMoeLayouts.end());
  check_family("test-deepseek", all);
}

TEST(MpiExec, TinyModelFilesUnderMpirunMatchTheUnshardedRun) {
  check_family("tiny-llama", {"tp2.pp1.ep1.adp1.dp1"});
  check_family("tiny-mixtral", {"tp2.pp1.ep2.adp1.dp1"});
  check_family("tiny-deepseek", {"tp1.pp1.ep2.adp2.dp1"});
}

// `mpirun -np NP parasol exec --plan scenarios/exec/NAME.plan.yaml --workload scenarios/exec/NAME.yaml --comm mpi`
// into a scratch folder (and its profile with `profile`): the outcome, the folder and the scenario's path.
struct Served {
  Outcome outcome;
  std::string dir, scenario;
};
Served serve_under_mpirun(int np, const std::string& name, bool profile) {
  Served s;
  s.dir = (std::filesystem::temp_directory_path() / ("parasol_mpi_serve_" + name + "_" + std::to_string(::getpid())))
              .string();
  s.scenario = std::string(PARASOL_DATA_DIR) + "/scenarios/exec/" + name + ".yaml";
  s.outcome = run_command(mpirun(np, "--plan " + std::string(PARASOL_DATA_DIR) + "/scenarios/exec/" + name +
                                         ".plan.yaml --workload " + s.scenario +
                                         " --comm mpi --seed 3 --timeout 30 --out " + s.dir +
                                         (profile ? " --profile " + s.dir + "/profile.csv" : std::string())));
  return s;
}

// `mpirun -np 2 parasol exec --plan --comm mpi` serves the workload: every request completes with its tokens, the
// files parse, the profile (gathered from both ranks) loads as a calibration table.
TEST(MpiExec, ServingAPlanUnderMpirunCompletesEveryRequest) {
  const Served s = serve_under_mpirun(2, "tiny-llama-tp2", true);
  ASSERT_EQ(s.outcome.rc, 0) << s.outcome.output;
  testing::check_served(s.dir, s.scenario, 3);
  std::filesystem::remove_all(s.dir);
}

// Two TP-2 instances under `mpirun -np 4`: world rank 0 drives both (the second through its leader), every request
// completes with its tokens, both instances serve.
TEST(MpiExec, ServingADp2PlanUnderMpirunCompletesEveryRequestOnBothInstances) {
  const Served s = serve_under_mpirun(4, "tiny-llama-tp2-dp2", false);
  ASSERT_EQ(s.outcome.rc, 0) << s.outcome.output;
  testing::check_served(s.dir, s.scenario, 3, 2, false);
  std::filesystem::remove_all(s.dir);
}

// Two pipeline stages under `mpirun -np 2`: both micro-batches in flight at once (trace.json draws a second row for
// the iterations that overlap another), every request completes with its tokens, the profile of both ranks loads.
TEST(MpiExec, ServingAPipelinedPlanUnderMpirunOverlapsMicroBatchesAndCompletesEveryRequest) {
  const Served s = serve_under_mpirun(2, "tiny-llama-pp2", true);
  ASSERT_EQ(s.outcome.rc, 0) << s.outcome.output;
  testing::check_served(s.dir, s.scenario, 3);
  std::ifstream tj(s.dir + "/trace.json");
  const nlohmann::json trace = nlohmann::json::parse(tj);
  int second_row = 0;
  for (const auto& e : trace["traceEvents"])
    if (e.value("ph", "") == "X" && e.value("tid", 0) == 1) ++second_row;
  EXPECT_GT(second_row, 0) << "no iteration overlapped another";
  std::filesystem::remove_all(s.dir);
}

// A P/D plan (TP-2 prefill + TP-2 decode) under `mpirun -np 4`: every request completes with its tokens, and every
// request that generates more than its first token had its KV moved to the decode instance.
TEST(MpiExec, ServingAPdPlanUnderMpirunMovesTheKvAndCompletesEveryRequest) {
  const Served s = serve_under_mpirun(4, "tiny-llama-pd", false);
  ASSERT_EQ(s.outcome.rc, 0) << s.outcome.output;
  testing::check_served(s.dir, s.scenario, 3, 0, false);
  const spec::Scenario sc = spec::load_scenario_file(s.scenario);
  auto source = serve::make_source(serve::load_workload(*sc.workload), 3);
  int64_t moved = 0;
  while (auto r = source->next()) moved += r->output_tokens > 1 ? 1 : 0;
  EXPECT_GT(moved, 0);
  EXPECT_NE(s.outcome.output.find(", " + std::to_string(moved) + " KV transfers"), std::string::npos)
      << s.outcome.output;
  std::filesystem::remove_all(s.dir);
}

TEST(MpiExec, AStalledRankFailsTheJobNamingItAndTheOp) {
  Outcome o = run_command(mpirun(4, "--model builtin:test-llama --layout tp4.pp1.ep1.adp1.dp1 --comm mpi -q "
                                    "--timeout 1 --fault-stall-rank 3 --fault-stall-s 120"));
  EXPECT_NE(o.rc, 0);
  EXPECT_NE(o.output.find("rank 3 did not join"), std::string::npos) << o.output;
  EXPECT_NE(o.output.find("embed.allreduce"), std::string::npos) << o.output;
  EXPECT_LT(o.wall_s, 60.0) << "a stalled rank must not hang the job";  // bound on "no hang", not a benchmark
}

TEST(MpiExec, ADeadRankFailsTheJobInsteadOfHanging) {
  Outcome o = run_command(mpirun(4, "--model builtin:test-llama --layout tp2.pp2.ep1.adp1.dp1 --comm mpi -q "
                                    "--timeout 2 --fault-exit-rank 2"));
  EXPECT_NE(o.rc, 0) << o.output;
  EXPECT_LT(o.wall_s, 60.0) << o.output;
}

}  // namespace
}  // namespace parasol::exec

// The cost model checked against real runs without a GPU: `parasol measure-host` writes a device file for this CPU
// (every value with its provenance), `parasol exec --backend cpu --profile` profiles a small model, `parasol
// calibrate --profile --device --write` fits the device's parameters on the training split of that profile, and
// `parasol validate --held-out` finds the fitted model within 15% (median) of the shapes the fit never saw. Plus
// validate's own contract: run mode, tables, JSON, the SVG, determinism, and bad input as file:line errors (exit 2).
// Timings are never asserted on: only errors relative to the same run's measurements, with medians over repeats.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/cost/fit_family.hpp"
#include "core/spec/gpu.hpp"
#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

std::string data(const std::string& rel) { return std::string(PARASOL_DATA_DIR) + "/" + rel; }

// One BLAS thread: GEMM timings on a small shared machine are far steadier, and measure-host then describes exactly
// the configuration exec runs in (it records the setting in the file).
void single_threaded_blas() { ::setenv("OPENBLAS_NUM_THREADS", "1", 1); }

TEST(MeasureHost, WritesALoadableDeviceFileWhoseEveryNumberSaysWhereItCameFrom) {
  single_threaded_blas();
  TempDir dir;
  const auto file = dir / "host.yaml";
  RunResult r = run_parasol({"measure-host", "--name", "cpu-test", "--out", file.string()}, 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const spec::Gpu gpu = spec::load_gpu_file(file.string());
  EXPECT_EQ(gpu.name, "cpu-test");
  EXPECT_EQ(gpu.vendor, "other");
  EXPECT_GT(gpu.peak(DType::kFp32), 1e9);
  EXPECT_EQ(gpu.peak(DType::kBf16), gpu.peak(DType::kFp32));
  EXPECT_GT(gpu.hbm_bw_Bps, 1e8);
  EXPECT_GT(gpu.hbm_bytes, 1e8);
  EXPECT_EQ(gpu.sm_count, 1);  // the GEMMs ran on one BLAS thread
  // Every line that sets a number carries a comment naming the command (or saying it is a placeholder).
  std::istringstream in(read_all(file));
  std::string line;
  int numbers = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || !std::regex_search(line, std::regex(R"(:\s*"?[0-9])"))) continue;
    ++numbers;
    const bool measured = line.find("# measured by parasol measure-host on ") != std::string::npos ||
                          line.find("# read by parasol measure-host on ") != std::string::npos;
    const bool placeholder = line.find("# not measured") != std::string::npos;
    EXPECT_TRUE(measured || placeholder) << line;
    if (measured) {
      EXPECT_NE(line.find(", host "), std::string::npos) << line;
    }
  }
  EXPECT_GE(numbers, 8);  // peaks (2), hbm, hbm_bw, scaleup_bw, tdp, idle_power, sm_count; l2 where sysconf has it
  // --json gives the raw measurements.
  RunResult j = run_parasol({"measure-host", "--json", "--reps", "3"}, 60);
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto m = nlohmann::json::parse(j.out);
  EXPECT_GT(m["fp32_flops"].get<double>(), 0);
  EXPECT_GT(m["triad_Bps"].get<double>(), 0);
}

TEST(MeasureHost, BadOptionsExitTwo) {
  RunResult r = run_parasol({"measure-host", "--reps", "1"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--reps"), std::string::npos) << r.err;
}

// The whole loop on one profile. The held-out shapes (30%, by the calibration split's seeded hash) are never fitted.
TEST(ValidateCpuLoop, ExecCalibrateValidatePredictsTheHeldOutShapesWithin15PercentMedian) {
  for (const char* f : {"gemm", "elementwise", "context_attention", "generation_attention"})
    if (!cost::find_family(f)) GTEST_SKIP() << "the '" << f << "' family is not registered in this build yet";
  single_threaded_blas();
  TempDir dir;
  const std::string host = (dir / "host.yaml").string(), ops = (dir / "ops.csv").string();
  RunResult m = run_parasol({"measure-host", "--name", "cpu-host", "--out", host, "-q"}, 60);
  ASSERT_EQ(m.exit_code, 0) << m.err;
  RunResult e = run_parasol({"exec", "--plan", data("scenarios/exec/small-llama-cpu.plan.yaml"), "--workload",
                             data("scenarios/exec/small-llama-cpu.yaml"), "--backend", "cpu", "--profile", ops,
                             "--profile-gpu", "cpu-host", "--timeout", "60", "-q"},
                            120);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  RunResult c = run_parasol({"calibrate", "--profile", ops, "--device", host, "--write", "-q"}, 120);
  ASSERT_EQ(c.exit_code, 0) << c.out << c.err;
  EXPECT_NE(read_all(host).find("fitted: parasol calibrate --profile"), std::string::npos)
      << "calibrate --write stored nothing in the device file";
  const std::string svg = (dir / "validate.svg").string();
  RunResult v = run_parasol({"validate", "--profile", ops, "--device", host, "--held-out", "--json", "--svg", svg}, 60);
  ASSERT_EQ(v.exit_code, 0) << v.err;
  const auto j = nlohmann::json::parse(v.out);
  std::ostringstream detail;
  for (const auto& f : j["families"])
    detail << f["family"].get<std::string>() << ": n " << f["n"] << " median " << f["median"] << " p90 " << f["p90"]
           << " bias " << f["bias"] << "\n";
  for (const auto& w : j["worst"]) detail << "  " << w["error"] << " " << w["key"].get<std::string>() << "\n";
  const size_t n = j["overall"]["n"].get<size_t>();
  EXPECT_GE(n, 40u) << "too few held-out shapes for a median to mean much\n" << detail.str();
  EXPECT_LE(j["overall"]["median"].get<double>(), 0.15) << detail.str();
  for (const auto& f : j["families"]) EXPECT_GE(f["n"].get<size_t>(), 3u) << detail.str();
  EXPECT_TRUE(j["held_out"].get<bool>());
  EXPECT_NE(read_all(svg).find("<circle"), std::string::npos);
  // The same check as CI scripts write it.
  RunResult gate = run_parasol({"validate", "--profile", ops, "--device", host, "--held-out", "-q", "--max-median",
                                "0.15"});
  EXPECT_EQ(gate.exit_code, 0) << gate.err;
}

// Run mode (validate runs `parasol exec` itself) on a tp2 model: ops, iterations, communication left unpredicted.
TEST(Validate, RunModeComparesEveryComputeOpAndEveryIteration) {
  TempDir dir;
  RunResult v = run_parasol({"validate", "--plan", data("scenarios/exec/tiny-llama-tp2.plan.yaml"), "--workload",
                             data("scenarios/exec/tiny-llama-tp2.yaml"), "--gpu", "h100-sxm", "--json", "--out",
                             (dir / "out").string()},
                            120);
  ASSERT_EQ(v.exit_code, 0) << v.err;
  const auto j = nlohmann::json::parse(v.out);
  EXPECT_EQ(j["device"], "h100-sxm");
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_GT(j["skipped"]["communication"].get<int>(), 0);  // the TP all-reduces
  EXPECT_EQ(j["skipped"]["attention_without_lengths"], 0);
  EXPECT_EQ(j["rows"].get<size_t>(), j["compared"].get<size_t>() + j["skipped"]["communication"].get<size_t>());
  std::set<std::string> kinds;
  size_t counted = 0;
  for (const auto& k : j["kinds"]) {
    kinds.insert(k["kind"].get<std::string>());
    counted += k["count"].get<size_t>();
    EXPECT_GT(k["measured_s"].get<double>(), 0);
    EXPECT_GT(k["predicted_s"].get<double>(), 0);
  }
  EXPECT_EQ(counted, j["compared"].get<size_t>());
  for (const char* k : {"gemm", "attention", "rmsnorm", "rope", "kv_append", "activation", "embedding", "sample"})
    EXPECT_TRUE(kinds.count(k)) << k;
  std::set<std::string> families;
  for (const auto& f : j["families"]) families.insert(f["family"].get<std::string>());
  EXPECT_EQ(families, (std::set<std::string>{"context_attention", "elementwise", "gemm", "generation_attention"}));
  // Every iteration has its wall time (rank 0), its measured ops and a prediction.
  ASSERT_GT(j["iterations"]["n"].get<size_t>(), 0u);
  for (const auto& i : j["iterations"]["rows"]) {
    EXPECT_GT(i["wall_s"].get<double>(), 0);
    EXPECT_GT(i["ops_s"].get<double>(), 0);
    EXPECT_GT(i["predicted_s"].get<double>(), 0);
  }
  EXPECT_FALSE(j["worst"].empty());
  // --out keeps the profile it made, the JSON and the picture: one circle per compared op.
  const std::string svg = read_all(dir / "out/validate.svg");
  size_t circles = 0;
  for (size_t p = svg.find("<circle cx"); p != std::string::npos; p = svg.find("<circle cx", p + 1)) ++circles;
  EXPECT_EQ(circles, j["compared"].get<size_t>() + j["kinds"].size());  // the points, plus one per legend entry
  EXPECT_EQ(nlohmann::json::parse(read_all(dir / "out/validate.json")), j);
  EXPECT_TRUE(std::filesystem::exists(dir / "out/ops.csv"));
}

TEST(Validate, TheSameProfileGivesIdenticalBytesAndHeldOutIsASubset) {
  TempDir dir;
  const std::string ops = (dir / "ops.csv").string();
  RunResult e = run_parasol({"exec", "--plan", data("scenarios/exec/tiny-llama-tp2.plan.yaml"), "--workload",
                             data("scenarios/exec/tiny-llama-tp2.yaml"), "--profile", ops, "-q"},
                            120);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const std::vector<std::string> args = {"validate", "--profile", ops, "--gpu", "h100-sxm", "--json"};
  RunResult a = run_parasol(args), b = run_parasol(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  auto held_args = args;
  held_args.push_back("--held-out");
  RunResult h = run_parasol(held_args);
  ASSERT_EQ(h.exit_code, 0) << h.err;
  const auto all = nlohmann::json::parse(a.out), held = nlohmann::json::parse(h.out);
  EXPECT_LT(held["overall"]["n"].get<size_t>(), all["overall"]["n"].get<size_t>());
  EXPECT_GT(held["overall"]["n"].get<size_t>(), 0u);
  EXPECT_LT(held["compared"].get<size_t>(), all["compared"].get<size_t>());
  // Text mode prints the tables.
  RunResult t = run_parasol({"validate", "--profile", ops, "--gpu", "h100-sxm"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  for (const char* s : {"op kind (rows)", "family (shapes)", "iterations:", "worst shapes"})
    EXPECT_NE(t.out.find(s), std::string::npos) << s << "\n" << t.out;
}

TEST(Validate, BadInputIsFileLineAndExitTwo) {
  TempDir dir;
  const std::string header =
      "gpu,kind,dtype,phase,m,n,k,batch,heads,kv_heads,head_dim,tokens,flops,bytes,time_s,rank,iteration,step_s,"
      "name,layer,v_head_dim,q_lens,ctx_lens,expert_tokens\n";
  const std::string good = "h100-sxm,gemm,bf16,,8,512,512,1,0,0,0,8,4194304,1064960,1e-05,0,0,2e-05,L0.attn.o,0,,,,\n";
  write_text(dir / "bad.csv", header + good + "h100-sxm,gemm,bf16,,8,512,x512,1,0,0,0,8,1,1,1e-05,0,0,,a,0,,,,\n");
  RunResult r = run_parasol({"validate", "--profile", (dir / "bad.csv").string(), "--gpu", "h100-sxm"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("bad.csv:3"), std::string::npos) << r.err;
  EXPECT_EQ(line_count(r.err), 1) << r.err;

  write_text(dir / "cpu.csv", header + "cpu," + good.substr(good.find(',') + 1));
  RunResult g = run_parasol({"validate", "--profile", (dir / "cpu.csv").string()});
  EXPECT_EQ(g.exit_code, 2) << g.err;
  EXPECT_NE(g.err.find("cpu.csv:2"), std::string::npos) << g.err;
  EXPECT_NE(g.err.find("--device"), std::string::npos) << g.err;

  RunResult none = run_parasol({"validate", "--gpu", "h100-sxm"});
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("--profile"), std::string::npos) << none.err;

  RunResult missing = run_parasol({"validate", "--profile", (dir / "nope.csv").string(), "--gpu", "h100-sxm"});
  EXPECT_EQ(missing.exit_code, 2) << missing.err;

  // A good profile passes, and --max-median fails it when the bound is below its error.
  write_text(dir / "good.csv", header + good);
  RunResult ok = run_parasol({"validate", "--profile", (dir / "good.csv").string(), "--gpu", "h100-sxm", "-q"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  RunResult strict = run_parasol(
      {"validate", "--profile", (dir / "good.csv").string(), "--gpu", "h100-sxm", "-q", "--max-median", "1e-9"});
  EXPECT_EQ(strict.exit_code, 1) << strict.err;
  EXPECT_NE(strict.err.find("--max-median"), std::string::npos) << strict.err;
}

}  // namespace
}  // namespace parasol::testing

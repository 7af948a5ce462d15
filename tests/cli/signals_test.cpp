// Stopping and failing cleanly: SIGTERM or SIGINT mid-simulation ends with 143 / 130, the partial summary printed and
// written (marked partial) and no temporary file left; a second signal stops at once, writing nothing; an --out that
// cannot be written, or a disk that fills up, is a clear error naming the path (and the errno) with nothing
// half-written in the folder, while the summary of a finished simulation is still printed.
#include <gtest/gtest.h>

#include <csignal>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

namespace fs = std::filesystem;

// The default deployment with a workload long enough to be interrupted (no duration cap, many requests); at a rate
// far past its capacity the queue grows, and finishing what arrived takes long enough to be interrupted again.
std::string long_scenario(const std::string& rate = "40") {
  const std::string data = PARASOL_DATA_DIR;
  return "schema: parasol.scenario/1\nname: long\nmodel: " + data + "/scenarios/models/llama-3.1-8b.yaml\ncluster: " +
         data + "/topologies/clusters/dgx-h100.yaml\n" +
         "workload: {kind: synthetic, requests: 50000000, arrival: {process: poisson, rate: " + rate + "}, input: 512, "
         "output: 64}\nslo: {ttft_p99: 500 ms, tpot_p99: 50 ms}\nsearch: {tp: [1], pp: [1], top_n: 1}\n";
}

std::vector<fs::path> leftovers(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path());
  return out;
}

// Signals the run `count` times once it is simulating (its staged requests.csv exists), `gap` apart.
RunResult interrupted_run(const fs::path& scenario, const fs::path& out, int sig, int count) {
  int sent = 0;
  auto last = std::chrono::steady_clock::now();
  return run_parasol({"sim", scenario.string(), "--out", out.string()}, 300.0, [&](pid_t pid) {
    if (sent >= count) return;
    bool simulating = false;
    if (fs::exists(out))
      for (const auto& e : fs::directory_iterator(out))
        simulating = simulating || e.path().filename().string().rfind("requests.csv.tmp.", 0) == 0;
    const auto now = std::chrono::steady_clock::now();
    if (!simulating || now - last < std::chrono::milliseconds(sent == 0 ? 300 : 100)) return;
    ::kill(pid, sig);
    ++sent;
    last = now;
  });
}

TEST(Signals, SigtermMidRunWritesThePartialSummaryAndExits143) {
  TempDir dir;
  write_text(dir / "s.yaml", long_scenario());
  const RunResult r = interrupted_run(dir / "s.yaml", dir / "out", SIGTERM, 1);
  ASSERT_EQ(r.exit_code, 143) << r.err;
  EXPECT_NE(r.out.find("note      partial: SIGTERM at simulated"), std::string::npos) << r.out;
  EXPECT_TRUE(leftovers(dir / "out").empty());
  const auto summary = nlohmann::json::parse(read_all(dir / "out" / "summary.json"));
  ASSERT_FALSE(summary["notes"].empty());
  EXPECT_NE(summary["notes"][0].get<std::string>().find("partial: SIGTERM"), std::string::npos);
  // Nothing that arrived is lost: every arrived request is in the counts and in requests.csv.
  const int64_t arrived = summary["requests"]["arrived"].get<int64_t>();
  EXPECT_GT(arrived, 0);
  EXPECT_LT(arrived, 50000000);
  EXPECT_EQ(arrived, summary["requests"]["completed"].get<int64_t>() + summary["requests"]["rejected"].get<int64_t>() +
                         summary["requests"]["failed"].get<int64_t>());
  const std::string csv = read_all(dir / "out" / "requests.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), arrived + 1);
  const auto trace = nlohmann::json::parse(read_all(dir / "out" / "trace.json"));
  EXPECT_FALSE(trace["traceEvents"].empty());
}

TEST(Signals, SecondSigintStopsAtOnceWritingNothing) {
  TempDir dir;
  write_text(dir / "s.yaml", long_scenario("100000"));
  const RunResult r = interrupted_run(dir / "s.yaml", dir / "out", SIGINT, 2);
  ASSERT_EQ(r.exit_code, 130) << r.err;
  EXPECT_TRUE(leftovers(dir / "out").empty());
  EXPECT_FALSE(fs::exists(dir / "out" / "summary.json"));
  EXPECT_FALSE(fs::exists(dir / "out" / "requests.csv"));
}

TEST(OutputErrors, AnOutThatCannotBeCreatedNamesThePath) {
  TempDir dir;
  write_text(dir / "file", "not a directory\n");
  const RunResult r = run_parasol({"sim", "-q", "--out", (dir / "file" / "out").string()}, 120.0);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(line_count(r.err), 1) << r.err;
  EXPECT_NE(r.err.find((dir / "file" / "out").string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Not a directory"), std::string::npos) << r.err;
}

// A full disk, as the kernel reports it to a process over its file-size limit with SIGXFSZ ignored (EFBIG): the
// summary is on stdout, the error names the file and the errno, and the folder holds no output, complete or not.
TEST(OutputErrors, AFullDiskLosesNoSummaryAndLeavesNothingHalfWritten) {
  TempDir dir;
  const std::string cmd = "ulimit -f 64; trap '' XFSZ; exec \"" + std::string(PARASOL_BINARY) + "\" sim --out \"" +
                          (dir / "out").string() + "\"";
  const RunResult r = run_program("/bin/sh", {"-c", cmd}, 120.0);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("requests  "), std::string::npos) << r.out;  // the summary was printed first
  EXPECT_NE(r.err.find((dir / "out").string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
  EXPECT_TRUE(leftovers(dir / "out").empty());
  for (const char* f : {"summary.json", "requests.csv", "trace.json", "links.csv", "link_usage.csv"})
    EXPECT_FALSE(fs::exists(dir / "out" / f)) << f;
}

}  // namespace
}  // namespace parasol::testing

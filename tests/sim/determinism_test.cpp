// Determinism of `parasol sim`: the same scenario and seed, run twice, gives byte-identical output files; a different
// seed gives a different run (so the check can fail).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Determinism, TwoRunsOfTheSameScenarioAndSeedWriteIdenticalBytes) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("parasol_det_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string data = PARASOL_DATA_DIR;
  std::ofstream(dir / "s.yaml") << "schema: parasol.scenario/1\nname: det\nmodel: " << data
                                << "/scenarios/models/llama-3.1-8b.yaml\ncluster: " << data
                                << "/topologies/clusters/dgx-h100.yaml\nsearch: {tp: [2]}\n"
                                   "workload:\n  kind: synthetic\n  requests: 300\n"
                                   "  arrival: {process: poisson, rate: 40}\n"
                                   "  input: {dist: uniform, min: 100, max: 2000}\n"
                                   "  output: {dist: uniform, min: 10, max: 200}\n";
  auto run = [&](const std::string& out, int seed) {
    const std::string cmd = std::string(PARASOL_BINARY) + " sim " + (dir / "s.yaml").string() + " -q --seed " +
                            std::to_string(seed) + " --out " + (dir / out).string();
    return std::system(cmd.c_str());
  };
  ASSERT_EQ(run("a", 5), 0);
  ASSERT_EQ(run("b", 5), 0);
  ASSERT_EQ(run("c", 6), 0);
  for (const char* f : {"summary.json", "requests.csv", "trace.json", "links.csv"}) {
    const std::string a = slurp(dir / "a" / f), b = slurp(dir / "b" / f);
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_EQ(a, b) << f;
  }
  EXPECT_NE(slurp(dir / "a" / "requests.csv"), slurp(dir / "c" / "requests.csv"));
  fs::remove_all(dir);
}

}  // namespace

// CLI conventions shared by every command (README "Commands"): --help with examples and the common options, exit
// code 2 for usage errors, --json / --out / -q / -v behaviour (checked on describe), determinism of outputs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "tests/cli/cli_runner.hpp"

namespace parasol::testing {
namespace {

const std::string kScenario = std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml";

// Subcommand names listed in `parasol --help` (CLI11 prints them under "Subcommands:", indented by two spaces).
std::vector<std::string> listed_commands() {
  RunResult r = run_parasol({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  std::vector<std::string> names;
  std::istringstream in(r.out);
  std::string line;
  bool in_list = false;
  while (std::getline(in, line)) {
    if (line.rfind("Subcommands:", 0) == 0) {
      in_list = true;
      continue;
    }
    if (in_list) {
      std::smatch m;
      if (std::regex_match(line, m, std::regex(R"(  ([a-z][a-z0-9-]*)\s.*)")))
        names.push_back(m[1]);
      else if (line.empty() || line[0] != ' ')
        in_list = false;
    }
  }
  return names;
}


TEST(CliConventions, EveryCommandsHelpHasExamplesAndTheCommonOptions) {
  auto names = listed_commands();
  ASSERT_FALSE(names.empty());
  EXPECT_NE(std::find(names.begin(), names.end(), "describe"), names.end());
  for (const auto& name : names) {
    for (const char* flag : {"--help", "-h"}) {
      RunResult r = run_parasol({name, flag});
      EXPECT_EQ(r.exit_code, 0) << name << " " << flag;
      const bool has_examples =
          r.out.find("Example") != std::string::npos && r.out.find("parasol " + name + " ") != std::string::npos;
      EXPECT_TRUE(has_examples) << name << ": no examples";
      for (const char* opt : {"--json", "--out", "--seed", "-q", "-v"})
        EXPECT_NE(r.out.find(opt), std::string::npos) << name << " lacks " << opt;
    }
  }
}

TEST(CliConventions, NoArgumentsPrintsTopLevelHelpWithExamples) {
  RunResult r = run_parasol({});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("Subcommands:"), std::string::npos);
  EXPECT_NE(r.out.find("Examples:"), std::string::npos);
  // Each command with examples shows its first one.
  for (const auto& name : listed_commands()) {
    EXPECT_NE(r.out.find("  parasol " + name + " "), std::string::npos) << name;
  }
}

TEST(CliConventions, UsageErrorsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> bad = {
      {"no-such-command"},
      {"describe"},  // FILE is required
      {"describe", "--no-such-flag", kScenario},
      {"describe", "--seed", "abc", kScenario},
      {"describe", "--out"},
      {"--no-such-flag"},
  };
  for (const auto& args : bad) {
    RunResult r = run_parasol(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << "\n" << r.err;
    EXPECT_EQ(line_count(r.err), 1) << joined << "\n" << r.err;
    EXPECT_NE(r.err.find("usage error"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST(CliConventions, JsonIsAnArrayWithOneObjectPerFileInArgumentOrder) {
  const std::string cluster = std::string(PARASOL_DATA_DIR) + "/topologies/clusters/dgx-h100.yaml";
  RunResult r = run_parasol({"describe", "--json", kScenario, cluster, kScenario});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["kind"], "scenario");
  EXPECT_EQ(j[1]["kind"], "cluster");
  EXPECT_EQ(j[0], j[2]);
  for (const auto& e : j) {
    EXPECT_EQ(e["ok"], true);
    EXPECT_EQ(e["exit_code"], 0);
  }
}

TEST(CliConventions, OutDirGetsTheSameJsonAsStdout) {
  TempDir tmp;
  const auto out = tmp / "results/deeper";
  RunResult with_out = run_parasol({"describe", "--json", "--out", out.string(), kScenario});
  ASSERT_EQ(with_out.exit_code, 0) << with_out.err;
  EXPECT_EQ(read_all(out / "describe.json"), with_out.out);
  RunResult text = run_parasol({"describe", kScenario});
  EXPECT_EQ(read_all(out / "describe.txt"), text.out);
  // Nothing half-written is left behind.
  for (const auto& e : std::filesystem::directory_iterator(out))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(CliConventions, OutDirThatCannotBeCreatedIsBadInput) {
  TempDir tmp;
  write_text(tmp / "a_file", "x");
  RunResult r = run_parasol({"describe", "--out", (tmp / "a_file/sub").string(), kScenario});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("a_file"), std::string::npos) << r.err;
}

TEST(CliConventions, QuietPrintsNothingAndVerbosePrintsMore) {
  RunResult quiet = run_parasol({"describe", "-q", kScenario});
  RunResult normal = run_parasol({"describe", kScenario});
  RunResult verbose = run_parasol({"describe", "-v", kScenario});
  ASSERT_EQ(quiet.exit_code, 0);
  ASSERT_EQ(normal.exit_code, 0);
  ASSERT_EQ(verbose.exit_code, 0);
  EXPECT_TRUE(quiet.out.empty()) << quiet.out;
  EXPECT_GT(line_count(normal.out), 3);
  EXPECT_GT(line_count(verbose.out), line_count(normal.out));
  // Quiet still reports errors.
  RunResult quiet_bad = run_parasol({"describe", "-q", "/no/such/file.yaml"});
  EXPECT_EQ(quiet_bad.exit_code, 2);
  EXPECT_EQ(line_count(quiet_bad.err), 1);
}

TEST(CliConventions, SameInputsAndSeedGiveIdenticalBytes) {
  RunResult a = run_parasol({"describe", "--json", "--seed", "7", kScenario});
  RunResult b = run_parasol({"describe", "--json", "--seed", "7", kScenario});
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_EQ(a.out, b.out);
}

TEST(CliConventions, WorstFileDecidesTheExitCodeAndGoodFilesStillPrint) {
  RunResult r = run_parasol({"describe", "--json", kScenario, "/no/such/file.yaml"});
  EXPECT_EQ(r.exit_code, 2);
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["exit_code"], 0);
  EXPECT_EQ(j[1]["exit_code"], 2);
  EXPECT_EQ(j[1]["ok"], false);
  EXPECT_NE(j[1]["error"].get<std::string>().find("/no/such/file.yaml"), std::string::npos);
  EXPECT_EQ(line_count(r.err), 1) << r.err;
}

TEST(CliConventions, RelativePathsResolveAgainstTheSourceTreeFromAnyDirectory) {
  // The test runs in the build tree, where scenarios/ does not exist.
  RunResult r = run_parasol({"describe", "scenarios/default.yaml"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// The examples in `parasol exec --help` run as shown (those without placeholders such as PLAN.yaml and without
// mpirun, which tests/mpi covers): exit 0, and the --out directory holds the serving outputs and no temporary files.
TEST(CliConventions, ExecHelpExamplesRunAsShown) {
  RunResult help = run_parasol({"exec", "--help"});
  ASSERT_EQ(help.exit_code, 0);
  std::istringstream in(help.out);
  std::string line;
  int ran = 0;
  while (std::getline(in, line)) {
    if (line.rfind("  parasol exec ", 0) != 0) continue;
    std::string cmd = line.substr(10);
    cmd = cmd.substr(0, cmd.find("  #"));
    if (std::regex_search(cmd, std::regex("[A-Z]+\\.yaml"))) continue;
    TempDir dir;
    std::vector<std::string> args;
    std::istringstream words(cmd);
    std::string w;
    while (words >> w) args.push_back(w.rfind("/tmp/", 0) == 0 ? (dir / w.substr(5)).string() : w);
    RunResult r = run_parasol(args, 120.0);
    EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.err;
    ++ran;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path()))
      EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << cmd << " left " << e.path();
  }
  EXPECT_GE(ran, 3);
}

}  // namespace
}  // namespace parasol::testing

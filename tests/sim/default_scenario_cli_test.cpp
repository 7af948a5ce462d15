// `parasol sim` with no SCENARIO runs the embedded default scenario (README command (a)) from any working directory
// (ctest runs this from the build tree, not the source tree) and prints a summary; every request ends completed.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.hpp"

namespace parasol {
namespace {

TEST(SimDefaultScenario, RunsWithNoArgumentsFromAnyDirectoryAndCompletesEveryRequest) {
  const auto r = testing::run_parasol({"sim", "--json", "-q", "--requests", "200"}, 120.0);
  ASSERT_TRUE(r.exited()) << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.contains("requests")) << r.out.substr(0, 400);
  EXPECT_EQ(j["requests"]["arrived"].get<int64_t>(), 200);
  EXPECT_EQ(j["requests"]["completed"].get<int64_t>(), 200);
}

}  // namespace
}  // namespace parasol

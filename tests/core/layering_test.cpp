// The module layering of DESIGN.md, read from the sources: the folders of core/ include each other without a cycle
// (common <- spec <- plan <- cost <- serve <- search), core includes nothing of sim/, exec/, kernels/ or tools/, and
// sim/ and exec/ include nothing of tools/. A new include that closes a cycle fails here, naming the files.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace parasol {
namespace {

namespace fs = std::filesystem;
const std::string kData = PARASOL_DATA_DIR;

// Every (folder of the including file, folder of the included one, the including file) under `top`, for includes
// of the form "A/B/..." (folder = "A/B" when A is core, else "A").
struct Edge {
  std::string from, to, file;
};

std::string module_of(const std::string& path) {
  const auto a = path.find('/');
  if (a == std::string::npos) return path;
  const std::string top = path.substr(0, a);
  if (top != "core") return top;
  const auto b = path.find('/', a + 1);
  return b == std::string::npos ? top : path.substr(0, b);
}

std::vector<Edge> edges_under(const std::string& top) {
  std::vector<Edge> out;
  const std::regex inc(R"re(^\s*#\s*include\s+"([a-z_]+/[^"]+)")re");
  for (const auto& e : fs::recursive_directory_iterator(kData + "/" + top)) {
    const std::string ext = e.path().extension().string();
    if (!e.is_regular_file() || (ext != ".hpp" && ext != ".cpp" && ext != ".cu" && ext != ".cuh")) continue;
    const std::string rel = fs::relative(e.path(), kData).generic_string();
    std::ifstream in(e.path());
    std::string line;
    std::smatch m;
    while (std::getline(in, line))
      if (std::regex_search(line, m, inc)) {
        const std::string to = module_of(m[1].str());
        if (to != module_of(rel)) out.push_back({module_of(rel), to, rel});
      }
  }
  return out;
}

TEST(Layering, CoreFoldersIncludeEachOtherWithoutACycle) {
  const std::vector<Edge> edges = edges_under("core");
  ASSERT_FALSE(edges.empty());
  std::map<std::string, std::set<std::string>> next;
  std::map<std::pair<std::string, std::string>, std::string> example;
  for (const Edge& e : edges) {
    next[e.from].insert(e.to);
    example.emplace(std::make_pair(e.from, e.to), e.file);
  }
  // Depth-first search for a back edge; the cycle is reported with a file for each of its edges.
  std::map<std::string, int> state;  // 0 unvisited, 1 on the stack, 2 done
  std::vector<std::string> stack;
  std::string cycle;
  std::function<void(const std::string&)> visit = [&](const std::string& u) {
    state[u] = 1;
    stack.push_back(u);
    for (const std::string& v : next[u]) {
      if (!cycle.empty()) break;
      if (state[v] == 1) {
        auto it = std::find(stack.begin(), stack.end(), v);
        for (; it != stack.end(); ++it) {
          const std::string& to = it + 1 != stack.end() ? *(it + 1) : v;
          cycle += *it + " -> " + to + " (" + example[{*it, to}] + ")\n";
        }
      } else if (state[v] == 0) {
        visit(v);
      }
    }
    stack.pop_back();
    state[u] = 2;
  };
  for (const auto& [u, vs] : next)
    if (state[u] == 0 && cycle.empty()) visit(u);
  EXPECT_TRUE(cycle.empty()) << "a cycle between core's folders:\n" << cycle;
}

TEST(Layering, CoreIncludesNothingAboveIt) {
  for (const Edge& e : edges_under("core"))
    EXPECT_EQ(e.to.rfind("core", 0), 0u) << e.file << " includes " << e.to;
}

TEST(Layering, SimAndExecIncludeNothingOfTools) {
  for (const std::string top : {"sim", "exec"})
    for (const Edge& e : edges_under(top)) EXPECT_NE(e.to, "tools") << e.file;
}

TEST(Layering, TheSearchSitsAbovePlanCostAndServe) {
  for (const Edge& e : edges_under("core")) {
    if (e.from == "core/plan" || e.from == "core/cost" || e.from == "core/serve" || e.from == "core/spec") {
      EXPECT_NE(e.to, "core/search") << e.file << " includes the search";
    }
  }
}

}  // namespace
}  // namespace parasol

// Scenario loading: the shipped default, where referenced files are found (next to the scenario, then the data
// directory, $PARASOL_DATA_DIR winning), inline model/cluster equal to the referenced files, the search and sim
// sections' shorthands and defaults, and the location carried by errors.
#include "core/spec/scenario.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/error.hpp"

namespace parasol::spec {
namespace {

namespace fs = std::filesystem;

const fs::path kData = PARASOL_DATA_DIR;
const std::string kModel = (kData / "scenarios/models/llama-3.1-8b.yaml").string();
const std::string kCluster = (kData / "topologies/clusters/dgx-h100.yaml").string();

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

class ScratchDir {
 public:
  ScratchDir() {
    std::string t = (fs::temp_directory_path() / "parasol-scenario-XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& s) const { return path_ / s; }

 private:
  fs::path path_;
};

std::string scenario(const std::string& model, const std::string& cluster, const std::string& extra = "") {
  return "schema: parasol.scenario/1\nname: t\nmodel: " + model + "\ncluster: " + cluster + "\n" + extra;
}

Scenario parse(const std::string& text, const std::string& name = "mem.yaml") {
  return load_scenario(yaml::load_string(text, name));
}

// The ConfigError thrown while loading `text`; fails the test when none is.
ConfigError error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    return e;
  }
  ADD_FAILURE() << "no error for:\n" << text;
  return ConfigError("none");
}

TEST(Scenario, ShippedDefaultLoadsWithItsModelClusterAndTargets) {
  Scenario s = load_scenario_file((kData / "scenarios/default.yaml").string());
  EXPECT_EQ(s.name, "default");
  EXPECT_EQ(s.model.name, load_model_file(kModel).name);
  EXPECT_EQ(fs::canonical(s.model_source), fs::canonical(kModel));
  EXPECT_EQ(fs::canonical(s.cluster_source), fs::canonical(kCluster));
  EXPECT_EQ(s.cluster.gpu_count(), load_cluster_file(kCluster).gpu_count());
  ASSERT_EQ(s.cluster.gpu_types.size(), 1u);
  EXPECT_EQ(s.gpu_type, s.cluster.gpu_types.begin()->first);
  ASSERT_TRUE(s.workload);
  EXPECT_TRUE(s.workload->is_map());
  EXPECT_EQ(s.workload->path(), "workload");
  ASSERT_TRUE(s.slo.ttft_p99_s && s.slo.tpot_p99_s);
  EXPECT_DOUBLE_EQ(*s.slo.ttft_p99_s, 0.5);
  EXPECT_DOUBLE_EQ(*s.slo.tpot_p99_s, 0.05);
  EXPECT_FALSE(s.slo.e2e_p99_s);
  EXPECT_EQ(s.search.tp, (std::vector<int>{1, 2, 4, 8}));
  EXPECT_FALSE(s.plan_path);
}

TEST(Scenario, ReferencesResolveNextToTheScenarioBeforeTheDataDirectory) {
  ScratchDir dir;
  // A model next to the scenario, under the same relative name as a shipped one but with another name inside.
  std::string local = read_text(kModel);
  const std::string shipped_name = load_model_file(kModel).name;
  local.replace(local.find("name: " + shipped_name), 6 + shipped_name.size(), "name: local-copy");
  write_text(dir / "scenarios/models/llama-3.1-8b.yaml", local);
  write_text(dir / "s.yaml", scenario("scenarios/models/llama-3.1-8b.yaml", "topologies/clusters/dgx-h100.yaml"));
  EXPECT_EQ(load_scenario_file((dir / "s.yaml").string()).model.name, "local-copy");
  // Without the local copy the same reference finds the shipped file in the data directory.
  fs::remove(dir / "scenarios/models/llama-3.1-8b.yaml");
  EXPECT_EQ(load_scenario_file((dir / "s.yaml").string()).model.name, shipped_name);
}

TEST(Scenario, DataDirectoryEnvironmentVariableWins) {
  ScratchDir dir;
  std::string local = read_text(kModel);
  const std::string shipped_name = load_model_file(kModel).name;
  local.replace(local.find("name: " + shipped_name), 6 + shipped_name.size(), "name: from-env");
  write_text(dir / "data/m.yaml", local);
  write_text(dir / "s.yaml", scenario("m.yaml", kCluster));
  ::setenv("PARASOL_DATA_DIR", (dir / "data").c_str(), 1);
  EXPECT_EQ(data_dir(), (dir / "data").string());
  Scenario s = load_scenario_file((dir / "s.yaml").string());
  ::unsetenv("PARASOL_DATA_DIR");
  EXPECT_EQ(s.model.name, "from-env");
  EXPECT_EQ(data_dir(), PARASOL_DATA_DIR);
}

TEST(Scenario, MissingReferenceIsAnErrorAtTheKeyListingWhereItLooked) {
  ScratchDir dir;
  const std::string text = scenario("nowhere/m.yaml", kCluster);
  write_text(dir / "s.yaml", text);
  try {
    load_scenario_file((dir / "s.yaml").string());
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "model");
    EXPECT_EQ(e.line(), 3);
    EXPECT_NE(e.expected().find((dir / "nowhere/m.yaml").string()), std::string::npos) << e.what();
    EXPECT_NE(e.expected().find((kData / "nowhere/m.yaml").string()), std::string::npos) << e.what();
  }
}

// Indents every line of `text` by `n` spaces (to inline a file under a key).
std::string indent(const std::string& text, int n) {
  std::string out, pad(n, ' ');
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out += pad + line + "\n";
  return out;
}

TEST(Scenario, InlineModelAndClusterEqualTheReferencedFiles) {
  Scenario by_path = parse(scenario(kModel, kCluster));
  Scenario inlined = parse("schema: parasol.scenario/1\nname: t\nmodel:\n" + indent(read_text(kModel), 2) +
                               "cluster:\n" + indent(read_text(kCluster), 2),
                           (kData / "scenarios/inline.yaml").string());
  EXPECT_EQ(inlined.model_source, "inline");
  EXPECT_EQ(inlined.cluster_source, "inline");
  EXPECT_EQ(to_json(inlined.model), to_json(by_path.model));
  EXPECT_EQ(to_json(inlined.cluster, summarize(inlined.cluster)), to_json(by_path.cluster, summarize(by_path.cluster)));
}

TEST(Scenario, SearchAcceptsScalarsAndListsAndDefaultsDtypesToTheModel) {
  Scenario s = parse(scenario(kModel, kCluster, "search: {tp: 4, pp: [1, 2], kv_dtype: fp8}\n"));
  EXPECT_EQ(s.search.tp, std::vector<int>{4});
  EXPECT_EQ(s.search.pp, (std::vector<int>{1, 2}));
  EXPECT_TRUE(s.search.ep.empty());
  EXPECT_EQ(s.search.kv_dtype, DType::kFp8);
  EXPECT_EQ(s.search.weight_dtype, load_model_file(kModel).weight_dtype);
  Scenario none = parse(scenario(kModel, kCluster));
  EXPECT_EQ(none.search.kv_dtype, load_model_file(kModel).kv_dtype);
  EXPECT_EQ(none.search.top_n, 5);
}

TEST(Scenario, DisaggregationTakesOnOffBothAndYamlBooleans) {
  auto disagg = [](const std::string& v) {
    return parse(scenario(kModel, kCluster, "search: {disaggregation: " + v + "}\n")).search.disaggregation;
  };
  EXPECT_EQ(disagg("on"), Disaggregation::kOn);
  EXPECT_EQ(disagg("true"), Disaggregation::kOn);
  EXPECT_EQ(disagg("off"), Disaggregation::kOff);
  EXPECT_EQ(disagg("false"), Disaggregation::kOff);
  EXPECT_EQ(disagg("both"), Disaggregation::kBoth);
  ConfigError e = error_of(scenario(kModel, kCluster, "search: {disaggregation: bth}\n"));
  EXPECT_EQ(e.key_path(), "search.disaggregation");
  EXPECT_NE(e.expected().find("did you mean 'both'"), std::string::npos) << e.what();
}

TEST(Scenario, SimOptionsParseUnitsAndFidelity) {
  Scenario s = parse(scenario(kModel, kCluster, "sim: {fidelity: network, duration: 2 min, max_requests: 1e4}\n"));
  EXPECT_EQ(s.sim.fidelity, Fidelity::kNetwork);
  EXPECT_DOUBLE_EQ(*s.sim.duration_s, 120.0);
  EXPECT_EQ(*s.sim.max_requests, 10000);
  Scenario d = parse(scenario(kModel, kCluster));
  EXPECT_EQ(d.sim.fidelity, Fidelity::kAnalytic);
  EXPECT_FALSE(d.sim.duration_s);
}

TEST(Scenario, FirstTokenIsDecodeOrPrefillAndNothingElse) {
  EXPECT_EQ(parse(scenario(kModel, kCluster)).sim.first_token, FirstToken::kDecode);
  EXPECT_EQ(parse(scenario(kModel, kCluster, "sim: {first_token: prefill}\n")).sim.first_token, FirstToken::kPrefill);
  EXPECT_EQ(parse(scenario(kModel, kCluster, "sim: {first_token: decode}\n")).sim.first_token, FirstToken::kDecode);
  ConfigError e = error_of(scenario(kModel, kCluster, "sim:\n  first_token: prefil\n"));
  EXPECT_EQ(e.key_path(), "sim.first_token");
  EXPECT_EQ(e.line(), 6);
  EXPECT_NE(e.expected().find("prefill"), std::string::npos) << e.what();
  EXPECT_EQ(e.found(), "'prefil'");
}

TEST(Scenario, ErrorsCarryTheKeyPathAndLine) {
  const std::string base = scenario(kModel, kCluster);  // 4 lines
  ConfigError unit = error_of(base + "slo:\n  ttft_p99: 1 s\n  tpot_p99: 30\n");
  EXPECT_EQ(unit.key_path(), "slo.tpot_p99");
  EXPECT_EQ(unit.line(), 7);
  EXPECT_EQ(unit.found(), "'30'");
  ConfigError range = error_of(base + "search:\n  top_n: 0\n");
  EXPECT_EQ(range.key_path(), "search.top_n");
  EXPECT_EQ(range.line(), 6);
  ConfigError schema = error_of("schema: parasol.scenario/2\nname: t\nmodel: m\ncluster: c\n");
  EXPECT_EQ(schema.key_path(), "schema");
  EXPECT_EQ(schema.line(), 1);
  ConfigError workload = error_of(base + "workload: [1, 2]\n");
  EXPECT_EQ(workload.key_path(), "workload");
  ConfigError gpu = error_of(base + "gpu_type: no-such-gpu\n");
  EXPECT_EQ(gpu.key_path(), "gpu_type");
  EXPECT_EQ(gpu.line(), 5);
}

TEST(Scenario, JsonCarriesTheResolvedValues) {
  Scenario s = parse(scenario(kModel, kCluster, "slo: {e2e_p99: 20 s}\nsearch: {tp: [2, 8], top_n: 3}\n"));
  nlohmann::json j = to_json(s);
  EXPECT_EQ(j["model"]["name"], s.model.name);
  EXPECT_EQ(j["cluster"]["gpus"], s.cluster.gpu_count());
  EXPECT_EQ(j["slo"]["e2e_p99_s"], 20.0);
  EXPECT_TRUE(j["slo"]["ttft_p99_s"].is_null());
  EXPECT_EQ(j["search"]["tp"], (std::vector<int>{2, 8}));
  EXPECT_EQ(j["search"]["top_n"], 3);
  EXPECT_EQ(j["gpu_type"], s.gpu_type);
}

}  // namespace
}  // namespace parasol::spec

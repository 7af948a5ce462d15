// Cluster generators and derived quantities. Expected values are derived here from the YAML parameters (closed forms
// of leaf-spine bisection, hop counts of the generated shapes), never copied from the code's output.
#include "core/spec/cluster.hpp"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "core/common/error.hpp"
#include "core/common/units.hpp"

namespace parasol::spec {
namespace {

std::string shipped(const std::string& name) {
  return std::string(PARASOL_DATA_DIR) + "/topologies/clusters/" + name;
}

// A test-only GPU defined inline, so these tests do not depend on topologies/gpus/.
const char* const kTinyGpu = R"(
gpu_types:
  tiny:
    schema: parasol.gpu/1
    name: tiny
    vendor: other
    peak_flops: {bf16: 100 TFLOP/s, fp32: 10 TFLOP/s}
    hbm: 16 GiB
    hbm_bw: 1 TB/s
    scaleup_bw: 120 GB/s
    tdp: 300 W
    idle_power: 30 W
)";

Cluster from_yaml(const std::string& body) {
  return load_cluster(
      yaml::load_string("schema: parasol.cluster/1\nname: t\n" + std::string(kTinyGpu) + body, "t.yaml"));
}

// A leaf-spine body: `nodes` nodes of `gpus` GPUs with one NIC each (rail), `per_leaf` NICs per leaf.
std::string leaf_spine(int nodes, int gpus, int per_leaf, int spines, double r, const std::string& nic = "400 Gb/s") {
  return "node_types:\n  n:\n    gpu: tiny\n    gpus: " + std::to_string(gpus) +
         "\n    scaleup: {bw: 100 GB/s}\n    nics: {count: " + std::to_string(gpus) + ", bw: " + nic +
         "}\n    pcie: {bw: 64 GB/s}\npools:\n  - {node_type: n, count: " + std::to_string(nodes) +
         "}\nfabric:\n  kind: leaf_spine\n  nics_per_leaf: " + std::to_string(per_leaf) +
         "\n  spines: " + std::to_string(spines) + "\n  oversubscription: " + std::to_string(r) + "\n";
}

double q(const YAML::Node& n, Dimension d) {
  return *parse_quantity(n.as<std::string>(), d);
}

// Parameters of a shipped leaf-spine file, read straight from its YAML, and the closed-form bisection for splitting
// its nodes into halves: each half's NICs (limited by the slower of NIC and PCIe) vs each half's leaf uplinks
// (nics_per_leaf x NIC bw / oversubscription per leaf). A single leaf is non-blocking.
double closed_form_bisection(const std::string& path) {
  YAML::Node y = YAML::LoadFile(path);
  int nics = 0;
  double nic_Bps = 0, pcie_Bps = 0;
  for (const auto& pool : y["pools"]) {
    YAML::Node t = y["node_types"][pool["node_type"].as<std::string>()];
    EXPECT_EQ(t["nics"]["count"].as<int>(), t["gpus"].as<int>()) << "closed form assumes one NIC per GPU";
    const double b = q(t["nics"]["bw"], Dimension::kBandwidth), p = q(t["pcie"]["bw"], Dimension::kBandwidth);
    EXPECT_TRUE(nic_Bps == 0 || (nic_Bps == b && pcie_Bps == p)) << "closed form assumes uniform NICs";
    nic_Bps = b;
    pcie_Bps = p;
    nics += pool["count"].as<int>() * t["nics"]["count"].as<int>();
  }
  const YAML::Node f = y["fabric"];
  EXPECT_EQ(f["kind"].as<std::string>(), "leaf_spine");
  const int per_leaf = f["nics_per_leaf"].as<int>();
  const double r = f["oversubscription"] ? f["oversubscription"].as<double>() : 1.0;
  const int leaves = (nics + per_leaf - 1) / per_leaf;
  const double nic_limit = nics / 2 * std::min(nic_Bps, pcie_Bps);
  if (leaves == 1) return nic_limit;
  EXPECT_EQ((nics / 2) % per_leaf, 0) << "closed form assumes the halves split on a leaf boundary";
  const double uplink_limit = (nics / 2 / per_leaf) * per_leaf * nic_Bps / r;
  return std::min(nic_limit, uplink_limit);
}

int yaml_gpu_count(const std::string& path) {
  YAML::Node y = YAML::LoadFile(path);
  int n = 0;
  for (const auto& pool : y["pools"])
    n += pool["count"].as<int>() * y["node_types"][pool["node_type"].as<std::string>()]["gpus"].as<int>();
  return n;
}

TEST(Cluster, ShippedLeafSpineBisectionMatchesClosedFormFromYaml) {
  for (const char* name :
       {"h100-4node-leafspine.yaml", "h200-128node-leafspine.yaml", "h200-2node.yaml", "h100-h200-hetero.yaml"}) {
    const Cluster c = load_cluster_file(shipped(name));
    const ClusterSummary s = summarize(c);
    const double expected = closed_form_bisection(shipped(name));
    EXPECT_NEAR(s.bisection_bw_Bps, expected, expected * 1e-9) << name;
    EXPECT_TRUE(s.connected) << name;
  }
}

TEST(Cluster, ShippedClustersHaveTheirGpuCountsAndAreConnected) {
  const std::pair<const char*, int> files[] = {
      {"dgx-h100.yaml", 8},         {"h100-4node-leafspine.yaml", 32},     {"h100-32node-rail.yaml", 256},
      {"gb200-nvl72.yaml", 72},     {"h200-128node-leafspine.yaml", 1024}, {"h200-2node.yaml", 16},
      {"h100-h200-hetero.yaml", 32}};
  for (const auto& [name, gpus] : files) {
    const Cluster c = load_cluster_file(shipped(name));
    EXPECT_EQ(c.gpu_count(), gpus) << name;
    EXPECT_EQ(c.gpu_count(), yaml_gpu_count(shipped(name))) << name;
    const ClusterSummary s = summarize(c);
    EXPECT_TRUE(s.connected) << name;
    EXPECT_GT(s.bisection_bw_Bps, 0) << name;
    EXPECT_TRUE(nlohmann::json(to_json(c, s)).contains("bisection_bw_Bps"));
    for (int g = 0; g < c.gpu_count(); ++g) EXPECT_NO_THROW(c.gpu_spec(g)) << name;
  }
}

TEST(Cluster, ShippedScaleUpLinksMatchTheirGpuFiles) {
  for (const char* name :
       {"dgx-h100.yaml", "h100-32node-rail.yaml", "gb200-nvl72.yaml", "h200-2node.yaml", "h100-h200-hetero.yaml"}) {
    const Cluster c = load_cluster_file(shipped(name));
    for (int g = 0; g < c.gpu_count(); ++g) {
      double up = 0;
      for (auto [e, end] = boost::out_edges(c.gpus[g], c.graph); e != end; ++e)
        if (c.graph[*e].kind == LinkKind::kScaleUp) up += c.graph[*e].bw_Bps;
      EXPECT_DOUBLE_EQ(up, c.gpu_spec(g).scaleup_bw_Bps) << name << " GPU " << g;
    }
  }
}

TEST(Cluster, ScaleUpBandwidthDefaultsToTheGpuFile) {
  std::string body = leaf_spine(2, 2, 4, 1, 1.0);
  body.replace(body.find("{bw: 100 GB/s}"), 14, "{latency: 1 us}");
  const Cluster c = from_yaml(body);
  EXPECT_DOUBLE_EQ(summarize(c).scaleup_bw_per_gpu_Bps, c.gpu_spec(0).scaleup_bw_Bps);
}

TEST(Cluster, DgxNodeIsOneNvlsDomainAndGpuPairFlowIsNvlinkPlusNicPath) {
  const Cluster c = load_cluster_file(shipped("dgx-h100.yaml"));
  ASSERT_EQ(c.nodes.size(), 1u);
  ASSERT_EQ(c.scaleup_domains.size(), 1u);
  EXPECT_EQ(c.scaleup_domains[0].size(), 8u);
  EXPECT_TRUE(c.scaleup_reduces);
  const ClusterSummary s = summarize(c);
  // Each GPU reaches another over its NVLink (450 GB/s) and over PCIe -> NIC -> leaf -> NIC -> PCIe (min(64, 50)).
  const double nvlink = 450e9, nic = 400e9 / 8, pcie = 64e9;
  EXPECT_DOUBLE_EQ(s.scaleup_bw_per_gpu_Bps, nvlink);
  EXPECT_DOUBLE_EQ(s.scaleout_bw_per_gpu_Bps, nic);
  EXPECT_NEAR(max_flow_Bps(c, {0}, {1}), nvlink + std::min(nic, pcie), 1.0);
  EXPECT_NEAR(max_flow_Bps(c, {1}, {0}), max_flow_Bps(c, {0}, {1}), 1.0);
  EXPECT_NEAR(s.bisection_bw_Bps, 4 * (nvlink + std::min(nic, pcie)), 4.0);
  EXPECT_EQ(s.max_hops_gpu_to_gpu, 2);
}

TEST(Cluster, Nvl72DomainSpansEighteenTraysOfFourGpus) {
  const Cluster c = load_cluster_file(shipped("gb200-nvl72.yaml"));
  ASSERT_EQ(c.nodes.size(), 18u);
  ASSERT_EQ(c.scaleup_domains.size(), 1u);
  EXPECT_EQ(c.scaleup_domains[0].size(), 72u);
  for (int g = 0; g < c.gpu_count(); ++g) {
    EXPECT_EQ(c.domain_of(g), 0);
    EXPECT_EQ(c.node_of(g), g / 4);
  }
  EXPECT_EQ(hops(c, 0, 71), 2);  // GPU -> NVLink switch -> GPU, across trays
  const ClusterSummary s = summarize(c);
  EXPECT_EQ(s.max_domain_size, 72);
  EXPECT_EQ(s.max_hops_gpu_to_gpu, 2);
  EXPECT_DOUBLE_EQ(s.scaleup_bw_per_gpu_Bps, 900e9);
}

TEST(Cluster, HopsGrowFromNodeToLeafToSpine) {
  const Cluster c = load_cluster_file(shipped("h100-4node-leafspine.yaml"));
  // 16 NICs per leaf: nodes 0-1 on leaf 0, nodes 2-3 on leaf 1.
  EXPECT_EQ(hops(c, 0, 7), 2);   // GPU, NVSwitch, GPU
  EXPECT_EQ(hops(c, 0, 8), 4);   // GPU, NIC, leaf, NIC, GPU
  EXPECT_EQ(hops(c, 0, 16), 6);  // ... leaf, spine, leaf ...
  EXPECT_EQ(hops(c, 5, 5), 0);
  EXPECT_EQ(summarize(c).max_hops_gpu_to_gpu, 6);

  const Cluster rail = load_cluster_file(shipped("h100-32node-rail.yaml"));
  EXPECT_EQ(hops(rail, 0, 8), 4);  // same rail, different node: one rail leaf
  EXPECT_EQ(hops(rail, 0, 9), 6);  // other rail: via a spine or via NVLink then the other rail
  EXPECT_EQ(hops(rail, 3, 255), 6);
}

TEST(Cluster, RailOptimizedBisectionIsAllNicsOfHalfTheNodes) {
  const Cluster c = load_cluster_file(shipped("h100-32node-rail.yaml"));
  // One group of 32 nodes: every rail leaf holds both halves, so the cut is the NICs of 16 nodes (min(NIC, PCIe)).
  EXPECT_NEAR(summarize(c).bisection_bw_Bps, 16 * 8 * std::min(400e9 / 8, 64e9), 1e3);
}

TEST(Cluster, OversubscriptionDividesLeafUplinksAndBisection) {
  // 8 nodes x 2 GPUs, 4 NICs per leaf -> 4 leaves; halves = 2 leaves each.
  const double nic = 400e9 / 8, pcie = 64e9;
  for (double r : {0.5, 1.0, 2.0, 4.0}) {
    const Cluster c = from_yaml(leaf_spine(8, 2, 4, 2, r));
    const double expected = std::min(8 * std::min(nic, pcie), 2 * 4 * nic / r);
    EXPECT_NEAR(summarize(c).bisection_bw_Bps, expected, 10.0) << "oversubscription " << r;
  }
}

TEST(Cluster, FatTreeBisectionIsLimitedByTheTightestTier) {
  // 16 nodes x 2 GPUs -> 32 NICs, 8 leaves of 4, 4 pods of 2 leaves; node halves = pods 0-1 vs 2-3.
  const double nic = 400e9 / 8, pcie = 64e9;
  for (auto [r, core_r] : {std::pair{1.0, 1.0}, {1.0, 2.0}, {2.0, 2.0}, {0.5, 4.0}, {0.25, 0.5}}) {
    const Cluster c = from_yaml(
        "node_types:\n  n:\n    gpu: tiny\n    gpus: 2\n    scaleup: {bw: 100 GB/s}\n"
        "    nics: {count: 2, bw: 400 Gb/s}\n    pcie: {bw: 64 GB/s}\npools:\n  - {node_type: n, count: 16}\n"
        "fabric: {kind: fat_tree, nics_per_leaf: 4, leaves_per_pod: 2, spines: 2, cores: 2, oversubscription: " +
        std::to_string(r) + ", core_oversubscription: " + std::to_string(core_r) + "}\n");
    const double half_nics = 16;
    const double expected =
        std::min({half_nics * std::min(nic, pcie), half_nics * nic / r, half_nics * nic / (r * core_r)});
    EXPECT_NEAR(summarize(c).bisection_bw_Bps, expected, 10.0) << r << " " << core_r;
    EXPECT_EQ(hops(c, 0, 4), 6);  // node 2 is on leaf 1, same pod: leaf, spine, leaf
    EXPECT_EQ(hops(c, 0, 8), 8);  // node 4 is in pod 1: leaf, spine, core, spine, leaf
  }
}

TEST(Cluster, SharedNicsSplitTheirBandwidthAmongGpus) {
  const Cluster c = from_yaml(
      "node_types:\n  n:\n    gpu: tiny\n    gpus: 8\n    scaleup: {bw: 100 GB/s}\n"
      "    nics: {count: 2, attach: shared, bw: 400 Gb/s}\n    pcie: {bw: 32 GB/s}\n"
      "pools:\n  - {node_type: n, count: 2}\nfabric: {kind: leaf_spine, nics_per_leaf: 4}\n");
  const ClusterSummary s = summarize(c);
  EXPECT_DOUBLE_EQ(s.scaleout_bw_per_gpu_Bps, std::min(32e9, 50e9 / 4));
  // Node halves: each node's 2 NICs carry the cut.
  EXPECT_NEAR(s.bisection_bw_Bps, 2 * 50e9, 1.0);
  EXPECT_EQ(hops(c, 0, 8), 4);
}

TEST(Cluster, HeterogeneousPoolsKeepTheirGpuTypesInOrder) {
  const Cluster c = load_cluster_file(shipped("h100-h200-hetero.yaml"));
  ASSERT_EQ(c.gpu_count(), 32);
  for (int g = 0; g < 32; ++g) EXPECT_EQ(c.graph[c.gpus[g]].gpu_type, g < 16 ? "h100-sxm" : "h200-sxm");
  EXPECT_EQ(c.gpu_types.size(), 2u);
  EXPECT_EQ(c.nodes.size(), 4u);
}

TEST(Cluster, SummaryIsDeterministicAndSamplesHopsOnLargeClusters) {
  const Cluster c = load_cluster_file(shipped("h200-128node-leafspine.yaml"));
  const ClusterSummary a = summarize(c), b = summarize(c);
  EXPECT_EQ(to_json(c, a).dump(), to_json(c, b).dump());
  EXPECT_TRUE(a.hops_sampled);
  EXPECT_EQ(a.max_hops_gpu_to_gpu, 6);
  EXPECT_EQ(a.domains, 128);
  EXPECT_FALSE(to_string(c, a).empty());
}

// --- bad input -------------------------------------------------------------------------------------------------------

// Loads `text`, expects a ConfigError at `line` mentioning `needle`.
void expect_error(const std::string& text, int line, const std::string& needle) {
  try {
    load_cluster(yaml::load_string(text, "bad.yaml"));
    ADD_FAILURE() << "no error for:\n" << text;
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), line) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.yaml"), std::string::npos) << e.what();
  }
}

std::string head() {
  return "schema: parasol.cluster/1\nname: t\n" + std::string(kTinyGpu);
}

int line_of(const std::string& text, const std::string& needle) {
  const size_t pos = text.find(needle);
  EXPECT_NE(pos, std::string::npos) << needle;
  return static_cast<int>(std::count(text.begin(), text.begin() + static_cast<long>(pos), '\n')) + 1;
}

TEST(ClusterBadInput, DisconnectedClusterIsRejectedAtTheFabric) {
  // Two nodes and no fabric.
  std::string t = head() + leaf_spine(2, 2, 4, 0, 1.0);
  t.replace(t.find("  kind: leaf_spine"), std::string::npos, "  kind: none\n");
  expect_error(t, line_of(t, "fabric:") + 1, "cannot reach");  // the fabric map starts on the next line
  // Two leaves and no spine.
  std::string u = head() + leaf_spine(4, 2, 4, 0, 1.0);
  expect_error(u, line_of(u, "fabric:") + 1, "connected");
}

TEST(ClusterBadInput, UnknownKeyBadUnitAndWrongTypeNameTheLine) {
  const std::string good = head() + leaf_spine(2, 2, 4, 1, 1.0);
  auto mutate = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  std::string t = mutate("nics_per_leaf", "nic_per_leaf");
  expect_error(t, line_of(t, "nic_per_leaf"), "did you mean 'nics_per_leaf'");
  t = mutate("bw: 400 Gb/s", "bw: 400 Gb");
  expect_error(t, line_of(t, "400 Gb}"), "bandwidth");
  t = mutate("gpus: 2", "gpus: 2.5");
  expect_error(t, line_of(t, "gpus: 2.5"), "integer");
  t = mutate("kind: leaf_spine", "kind: leaf_spin");
  expect_error(t, line_of(t, "leaf_spin\n"), "did you mean 'leaf_spine'");
  t = mutate("node_type: n", "node_type: m");
  expect_error(t, line_of(t, "node_type: m"), "node type");
  t = mutate("schema: parasol.cluster/1", "schema: parasol.cluster/2");
  expect_error(t, 1, "parasol.cluster/1");
  t = mutate("gpu: tiny", "gpu: no-such-gpu");
  expect_error(t, line_of(t, "no-such-gpu"), "not found");
}

TEST(ClusterBadInput, StructuralMistakesAreReportedAtTheirKey) {
  const std::string good = head() + leaf_spine(2, 2, 4, 1, 1.0);
  auto mutate = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  // Rail NICs must match the GPUs.
  std::string t = mutate("nics: {count: 2", "nics: {count: 3");
  expect_error(t, line_of(t, "count: 3"), "one NIC per GPU");
  // A pool must fill whole scale-up domains.
  t = mutate("scaleup: {bw: 100 GB/s}", "scaleup: {bw: 100 GB/s, nodes_per_domain: 4}");
  expect_error(t, line_of(t, "count: 2}\nfabric"), "nodes_per_domain");
  // Rail-optimized needs rail NICs.
  t = mutate("nics: {count: 2", "nics: {attach: shared, count: 1");
  t.replace(t.find("kind: leaf_spine"), 16, "kind: rail_optimized");
  expect_error(t, line_of(t, "rail_optimized"), "rail_optimized");
  // A fabric too large to build is refused at its key, not built (512 leaves x 4096 spines).
  std::string big = head() + leaf_spine(64, 8, 1, 4096, 1.0);
  expect_error(big, line_of(big, "spines: 4096"), "leaf-spine links");
  // A missing required key.
  t = mutate("    pcie: {bw: 64 GB/s}\n", "");
  expect_error(t, line_of(t, "gpu: tiny"), "pcie");
}

}  // namespace
}  // namespace parasol::spec

// `schema: parasol.cluster/1` -> ClusterSpec -> Cluster. Every value is read through yaml::Node, so each mistake is a
// ConfigError with file:line:column and key path; structural mistakes (a pool that does not fill whole scale-up
// domains, rail NICs that do not match the GPUs, a disconnected result) are reported at the key that causes them.
// The schema is documented in docs/schema-cluster.md.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>

#include "core/common/error.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/cluster_generators.hpp"

namespace parasol::spec {
namespace {

namespace fs = std::filesystem;

// Guards against inputs that would exhaust memory or time (a fuzzed count); not hardware numbers.
constexpr int64_t kMaxGpus = 65536;
constexpr int64_t kMaxUplinks = 1 << 20;  // leaf-spine links
constexpr double kMaxBw_Bps = 1e15;       // per link; keeps max-flow capacities well inside int64

// `default_bw_Bps` > 0 makes `bw` optional.
LinkSpec read_link(const yaml::Node& n, std::initializer_list<std::string_view> extra_keys = {},
                   double default_bw_Bps = 0) {
  std::vector<std::string> keys{"bw", "latency", "duplex"};
  keys.insert(keys.end(), extra_keys.begin(), extra_keys.end());
  n.allow_keys(keys);
  LinkSpec s;
  s.bw_Bps =
      default_bw_Bps > 0 && !n.has("bw") ? default_bw_Bps : n.quantity("bw", Dimension::kBandwidth, 1.0, kMaxBw_Bps);
  s.latency_s = n.quantity_or("latency", Dimension::kTime, 0.0, 0.0, 1.0);
  if (auto d = n.get("duplex")) s.full_duplex = d->as_enum({"full", "half"}) == "full";
  return s;
}

// Where a GPU named in a cluster file is looked for, in order.
std::vector<fs::path> gpu_file_candidates(const fs::path& base_dir, const std::string& name) {
  std::vector<fs::path> dirs{base_dir / ".." / "gpus", base_dir / "gpus"};
  if (const char* env = std::getenv("PARASOL_DATA_DIR")) dirs.push_back(fs::path(env) / "topologies" / "gpus");
#ifdef PARASOL_DATA_DIR
  dirs.push_back(fs::path(PARASOL_DATA_DIR) / "topologies" / "gpus");
#endif
  // Shipped GPU files are lower-case ("h100-sxm.yaml"); "H100-SXM" finds them too.
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  std::vector<fs::path> out;
  for (const auto& d : dirs) {
    out.push_back(d / (name + ".yaml"));
    if (lower != name) out.push_back(d / (lower + ".yaml"));
  }
  return out;
}

Gpu load_gpu_by_name(const yaml::Node& at, const fs::path& base_dir, const std::string& name) {
  std::string tried;
  for (const fs::path& p : gpu_file_candidates(base_dir, name)) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return load_gpu_file(p.lexically_normal().string());
    tried += (tried.empty() ? "" : ", ") + p.lexically_normal().string();
  }
  at.fail("a GPU defined under gpu_types or a file topologies/gpus/<name>.yaml",
          "'" + name + "' (not found; looked in " + tried + ")");
}

void read_gpu_types(const yaml::Node& root, const fs::path& base_dir, ClusterSpec& spec) {
  auto types = root.get("gpu_types");
  if (!types) return;
  for (const auto& [name, def] : types->entries()) {
    if (def.is_map()) {
      spec.gpu_types[name] = load_gpu(def);
    } else {
      // A path relative to this file, or the name of a shipped GPU.
      const std::string ref = def.as_string();
      std::error_code ec;
      const fs::path p = base_dir / ref;
      spec.gpu_types[name] = fs::is_regular_file(p, ec) ? load_gpu_file(p.lexically_normal().string())
                                                        : load_gpu_by_name(def, base_dir, ref);
    }
  }
}

NodeType read_node_type(const std::string& name, const yaml::Node& n, const fs::path& base_dir, ClusterSpec& spec) {
  n.allow_keys({"gpu", "gpus", "scaleup", "nics", "pcie"});
  NodeType t;
  t.name = name;
  const yaml::Node gpu = n.at("gpu");
  t.gpu_type = gpu.as_string();
  if (!spec.gpu_types.count(t.gpu_type)) spec.gpu_types[t.gpu_type] = load_gpu_by_name(gpu, base_dir, t.gpu_type);
  t.gpus = static_cast<int>(n.integer("gpus", 1, 1024));

  const yaml::Node up = n.at("scaleup");
  // The per-GPU scale-up bandwidth defaults to the GPU's own scaleup_bw.
  t.scaleup = read_link(up, {"in_network_reduce", "nodes_per_domain"}, spec.gpu_types.at(t.gpu_type).scaleup_bw_Bps);
  t.in_network_reduce = up.bool_or("in_network_reduce", false);
  t.nodes_per_domain = static_cast<int>(up.integer_or("nodes_per_domain", 1, 1, 1024));

  if (auto nics = n.get("nics")) {
    nics->allow_keys({"count", "attach", "bw"});
    const yaml::Node count = nics->at("count");
    t.nics = static_cast<int>(count.as_int(0, 1024));
    t.attach = nics->str_or("attach", "rail") == "rail" ? NicAttach::kRail : NicAttach::kShared;
    if (auto a = nics->get("attach")) a->as_enum({"rail", "shared"});
    t.nic_bw_Bps = nics->quantity("bw", Dimension::kBandwidth, 1.0, kMaxBw_Bps);
    if (t.attach == NicAttach::kRail && t.nics != t.gpus && t.nics != 0)
      count.fail("one NIC per GPU (" + std::to_string(t.gpus) + ") with attach: rail", std::to_string(t.nics));
    if (t.nics > 0 && t.gpus % t.nics != 0)
      count.fail("a NIC count dividing the GPU count (" + std::to_string(t.gpus) + ")", std::to_string(t.nics));
    if (t.nics > 0) t.pcie = read_link(n.at("pcie"));
  } else if (auto pcie = n.get("pcie")) {
    t.pcie = read_link(*pcie);
  }
  return t;
}

Fabric read_fabric(const yaml::Node& f) {
  Fabric out;
  const std::string kind = f.at("kind").as_enum({"none", "leaf_spine", "rail_optimized", "fat_tree"});
  out.kind = kind == "none"             ? FabricKind::kNone
             : kind == "leaf_spine"     ? FabricKind::kLeafSpine
             : kind == "rail_optimized" ? FabricKind::kRailOptimized
                                        : FabricKind::kFatTree;
  if (out.kind == FabricKind::kNone) {
    f.allow_keys({"kind"});
    return out;
  }
  if (out.kind == FabricKind::kFatTree) {
    f.allow_keys({"kind", "nics_per_leaf", "leaves_per_pod", "spines", "cores", "oversubscription",
                  "core_oversubscription", "latency", "duplex"});
    out.leaves_per_pod = static_cast<int>(f.integer("leaves_per_pod", 1, 4096));
    out.cores = static_cast<int>(f.integer("cores", 1, 4096));
    out.core_oversubscription = f.number_or("core_oversubscription", 1.0, 0.01, 1000.0);
    f.at("spines");
  } else {
    f.allow_keys({"kind", "nics_per_leaf", "spines", "oversubscription", "latency", "duplex"});
  }
  out.nics_per_leaf = static_cast<int>(f.integer("nics_per_leaf", 1, 4096));
  out.spines = static_cast<int>(f.integer_or("spines", 0, out.kind == FabricKind::kFatTree ? 1 : 0, 4096));
  out.oversubscription = f.number_or("oversubscription", 1.0, 0.01, 1000.0);
  out.latency_s = f.quantity_or("latency", Dimension::kTime, 0.0, 0.0, 1.0);
  if (auto d = f.get("duplex")) out.full_duplex = d->as_enum({"full", "half"}) == "full";
  return out;
}

}  // namespace

Cluster load_cluster(const yaml::Node& root) {
  root.allow_keys({"schema", "name", "description", "gpu_types", "node_types", "pools", "fabric"});
  const yaml::Node schema = root.at("schema");
  if (schema.as_string() != "parasol.cluster/1") schema.fail("'parasol.cluster/1'");
  const fs::path base_dir = fs::path(root.file()).parent_path();

  ClusterSpec spec;
  spec.name = root.str("name");
  if (auto d = root.get("description")) d->as_string();
  read_gpu_types(root, base_dir, spec);

  std::map<std::string, int> type_index;
  for (const auto& [name, def] : root.at("node_types").entries()) {
    type_index[name] = static_cast<int>(spec.node_types.size());
    spec.node_types.push_back(read_node_type(name, def, base_dir, spec));
  }

  std::vector<std::string> type_names;
  for (const auto& [name, i] : type_index) type_names.push_back(name);
  int64_t total_gpus = 0;
  std::set<int> used_types;
  const yaml::Node pools = root.at("pools");
  for (const yaml::Node& p : pools.items()) {
    p.allow_keys({"name", "node_type", "count"});
    Pool pool;
    const yaml::Node type = p.at("node_type");
    auto it = type_index.find(type.as_string());
    if (it == type_index.end()) {
      std::string expected = "a node type defined under node_types";
      std::string s = yaml::closest(type.as_string(), type_names);
      if (!s.empty()) expected += " (did you mean '" + s + "'?)";
      type.fail(expected);
    }
    pool.node_type = it->second;
    pool.name = p.str_or("name", it->first);
    const yaml::Node count = p.at("count");
    pool.count = static_cast<int>(count.as_int(1, kMaxGpus));
    const NodeType& nt = spec.node_types[pool.node_type];
    if (pool.count % nt.nodes_per_domain != 0)
      count.fail("a multiple of nodes_per_domain (" + std::to_string(nt.nodes_per_domain) + ") of node type '" +
                 nt.name + "'");
    total_gpus += int64_t(pool.count) * nt.gpus;
    if (total_gpus > kMaxGpus) count.fail("at most " + std::to_string(kMaxGpus) + " GPUs in the cluster");
    used_types.insert(pool.node_type);
    spec.pools.push_back(pool);
  }
  if (spec.pools.empty()) pools.fail("at least one pool");

  std::optional<yaml::Node> fabric = root.get("fabric");
  if (fabric) spec.fabric = read_fabric(*fabric);
  if (spec.fabric.kind == FabricKind::kRailOptimized) {
    std::set<int> nic_counts;
    bool all_rail = true;
    for (int t : used_types) {
      nic_counts.insert(spec.node_types[t].nics);
      all_rail = all_rail && spec.node_types[t].attach == NicAttach::kRail;
    }
    if (nic_counts.size() != 1 || *nic_counts.begin() == 0 || !all_rail)
      fabric->at("kind").fail(
          "leaf_spine or none: rail_optimized needs every node type to have one NIC per GPU and "
          "the same NIC count");
  }

  if (spec.fabric.kind != FabricKind::kNone && spec.fabric.spines > 0) {
    int64_t nics = 0, nodes = 0;
    for (const Pool& p : spec.pools) {
      nics += int64_t(p.count) * spec.node_types[p.node_type].nics;
      nodes += p.count;
    }
    const int64_t per_leaf = spec.fabric.nics_per_leaf;
    const int64_t leaves = spec.fabric.kind != FabricKind::kRailOptimized
                               ? (nics + per_leaf - 1) / per_leaf
                               : (nodes + per_leaf - 1) / per_leaf * (nodes ? nics / nodes : 0);
    int64_t uplinks = leaves * spec.fabric.spines;
    if (spec.fabric.kind == FabricKind::kFatTree) {
      const int64_t pods = (leaves + spec.fabric.leaves_per_pod - 1) / spec.fabric.leaves_per_pod;
      uplinks = leaves * spec.fabric.spines + pods * spec.fabric.spines * spec.fabric.cores;
    }
    if (uplinks > kMaxUplinks)
      fabric->at("spines").fail("at most " + std::to_string(kMaxUplinks) + " leaf-spine links (" +
                                std::to_string(leaves) + " leaves x spines)");
  }

  Cluster c = generate_cluster(spec);
  const Connectivity conn = connectivity(c);
  if (conn.components > 1) {
    const yaml::Node& where = fabric ? *fabric : root;
    const std::string from = c.gpus.empty() ? c.graph[0].name : c.graph[c.gpus.front()].name;
    where.fail("a connected cluster (every GPU reachable from every other)",
               std::to_string(conn.components) + " separate parts: '" + c.graph[conn.unreachable].name +
                   "' cannot reach '" + from + "'");
  }
  return c;
}

Cluster load_cluster_file(const std::string& path) {
  return load_cluster(yaml::load_file(path));
}

}  // namespace parasol::spec

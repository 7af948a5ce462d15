// `parasol netbench CLUSTER`: nccl-tests on the simulated cluster (sim/netbench.hpp). Prints the automatic choice's
// curve, and with --out writes netbench.csv (every algorithm) and netbench.svg (busbw against size).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/spec/cluster.hpp"
#include "sim/netbench.hpp"
#include "tools/calibration_option.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {
namespace {

struct NetbenchArgs {
  std::string cluster;
  std::string gpus;
  int node = 0;
  std::string min_size = "1 KiB";
  std::string max_size = "8 GiB";
  std::string colls = "all_reduce,all_gather,reduce_scatter,all_to_all";
  double efficiency = -1;
  bool auto_only = false;
  std::vector<std::string> refs;  // "LABEL=GBPS"
  std::string calibration;        // measured tables: their time next to the simulated one where they cover a row
};

std::vector<int> parse_gpu_list(const std::string& text, int gpu_count) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  auto bad = [&] {
    return ConfigError("", 0, 0, "--gpus", "a list like '0-7' or '0,2,4,6' of GPUs < " + std::to_string(gpu_count),
                       text);
  };
  while (std::getline(ss, item, ',')) {
    const auto dash = item.find('-');
    try {
      const int a = std::stoi(item.substr(0, dash));
      const int b = dash == std::string::npos ? a : std::stoi(item.substr(dash + 1));
      if (a < 0 || b < a || b >= gpu_count) throw bad();
      for (int g = a; g <= b; ++g) out.push_back(g);
    } catch (const std::logic_error&) {
      throw bad();
    }
  }
  if (out.size() < 2) throw bad();
  return out;
}

double parse_size(const std::string& text, const char* key) {
  auto v = parse_quantity(text, Dimension::kBytes);
  if (!v || *v <= 0) throw ConfigError("", 0, 0, key, "a size like '1 KiB' or '8 GiB'", text);
  return *v;
}

int run(const NetbenchArgs& a, const CommonOptions& common) {
  const spec::Cluster cluster = spec::load_cluster_file(resolve_data_path(a.cluster));
  sim::NetbenchOptions o;
  if (!a.gpus.empty()) {
    o.gpus = parse_gpu_list(a.gpus, cluster.gpu_count());
  } else {
    if (a.node < 0 || a.node >= static_cast<int>(cluster.nodes.size()))
      throw ConfigError("", 0, 0, "--node", "a node index below " + std::to_string(cluster.nodes.size()),
                        std::to_string(a.node));
    o.gpus = cluster.nodes[a.node];
  }
  o.min_bytes = parse_size(a.min_size, "--min");
  o.max_bytes = parse_size(a.max_size, "--max");
  o.every_algorithm = !a.auto_only;
  if (a.efficiency > 0) {
    o.efficiency = a.efficiency;
  } else {
    const auto& v = cluster.graph[cluster.gpus[o.gpus[0]]];
    auto it = cluster.gpu_types.find(v.gpu_type);
    o.efficiency = it != cluster.gpu_types.end() ? it->second.eff.comm_efficiency : 1.0;
  }
  o.kinds.clear();
  std::stringstream ss(a.colls);
  std::string item;
  while (std::getline(ss, item, ',')) {
    bool found = false;
    for (auto k : {sim::CollKind::kAllReduce, sim::CollKind::kAllGather, sim::CollKind::kReduceScatter,
                   sim::CollKind::kAllToAll})
      if (sim::to_string(k) == item) {
        o.kinds.push_back(k);
        found = true;
      }
    if (!found)
      throw ConfigError("", 0, 0, "--colls", "a list of all_reduce, all_gather, reduce_scatter, all_to_all", item);
  }
  const auto rows = sim::run_netbench(cluster, o);
  // Measured times (--calibration) where the tables cover a row: same collective, GPU type and group size, the group
  // inside one node, the size within the measured range.
  std::vector<double> measured(rows.size(), 0.0);
  bool any_measured = false;
  if (const auto table = activate_calibration(a.calibration, common.verbosity)) {
    bool one_node = false;
    for (const auto& node : cluster.nodes) {
      bool all = true;
      for (int g : o.gpus) all = all && std::find(node.begin(), node.end(), g) != node.end();
      one_node = one_node || all;
    }
    const auto& v = cluster.graph[cluster.gpus[o.gpus[0]]];
    auto it = cluster.gpu_types.find(v.gpu_type);
    const std::string gpu_name = it != cluster.gpu_types.end() ? it->second.name : v.gpu_type;
    for (size_t i = 0; i < rows.size() && one_node; ++i) {
      plan::OpKind kind = plan::OpKind::kAllReduce;
      switch (rows[i].kind) {
        case sim::CollKind::kAllReduce: kind = plan::OpKind::kAllReduce; break;
        case sim::CollKind::kAllGather: kind = plan::OpKind::kAllGather; break;
        case sim::CollKind::kReduceScatter: kind = plan::OpKind::kReduceScatter; break;
        case sim::CollKind::kAllToAll: kind = plan::OpKind::kAllToAll; break;
        default: continue;
      }
      if (auto t = table->lookup_collective(kind, gpu_name, static_cast<int>(o.gpus.size()), rows[i].bytes)) {
        measured[i] = *t;
        any_measured = true;
      }
    }
  }
  const std::string title = "parasol netbench: " + cluster.name + ", " + std::to_string(o.gpus.size()) +
                            " GPUs, efficiency " + std::to_string(o.efficiency).substr(0, 4);
  if (!common.out_dir.empty()) {
    write_file_atomic(common.out_dir, "netbench.csv", sim::netbench_csv(rows));
    std::vector<sim::NetbenchReference> refs;
    for (const auto& r : a.refs) {
      const auto eq = r.rfind('=');
      char* end = nullptr;
      const double gbps = eq == std::string::npos ? 0 : std::strtod(r.c_str() + eq + 1, &end);
      if (eq == std::string::npos || eq == 0 || !(gbps > 0) || (end && *end))
        throw ConfigError("", 0, 0, "--ref", "LABEL=GBPS, e.g. 'nccl-tests ring=370'", r);
      refs.push_back({r.substr(0, eq), gbps * 1e9});
    }
    write_file_atomic(common.out_dir, "netbench.svg", sim::netbench_svg(rows, title, refs));
    write_run_json(common.out_dir, "netbench", {resolve_data_path(a.cluster)}, common.seed);
  }
  if (common.json) {
    nlohmann::json j = nlohmann::json::array();
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      j.push_back({{"collective", sim::to_string(r.kind)},
                   {"algorithm", r.algo},
                   {"bytes", r.bytes},
                   {"time_s", r.time_s},
                   {"algbw_Bps", r.algbw_Bps},
                   {"busbw_Bps", r.busbw_Bps},
                   {"flows", r.flows}});
      if (measured[i] > 0) j.back()["measured_time_s"] = measured[i];
    }
    std::cout << j.dump(1) << "\n";
    return 0;
  }
  if (common.verbosity == 0) return 0;
  std::cout << title << "\n";
  // nccl-tests' table (its -d float default: 4-byte elements), one unit per column, one section per collective; the
  // algorithm the automatic choice made (NCCL's by size) last, and the measured time when a table was given.
  std::string section;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r.algo.rfind("auto:", 0) != 0) continue;
    const std::string coll = sim::to_string(r.kind);
    if (coll != section) {
      section = coll;
      std::printf("#\n# %s\n#%12s %14s %9s %7s %7s %10s %8s %8s  %s\n#%12s %14s %9s %7s %7s %10s %8s %8s\n",
                  coll.c_str(), "size", "count", "type", "redop", "root", "time", "algbw", "busbw",
                  any_measured ? "algorithm    measured" : "algorithm", "(B)", "(elements)", "", "", "", "(us)",
                  "(GB/s)", "(GB/s)");
    }
    const bool reduces = r.kind == sim::CollKind::kAllReduce || r.kind == sim::CollKind::kReduceScatter;
    std::printf(any_measured ? " %12.0f %14.0f %9s %7s %7d %10.2f %8.2f %8.2f  %-10s"
                             : " %12.0f %14.0f %9s %7s %7d %10.2f %8.2f %8.2f  %s",
                r.bytes, std::floor(r.bytes / 4), "float", reduces ? "sum" : "none", -1, r.time_s * 1e6,
                r.algbw_Bps / 1e9, r.busbw_Bps / 1e9, r.algo.substr(5).c_str());
    if (any_measured) {
      if (measured[i] > 0)
        std::printf(" %10.2f", measured[i] * 1e6);
      else
        std::printf(" %10s", "-");
    }
    std::printf("\n");
  }
  if (!common.out_dir.empty()) std::cout << "wrote " << common.out_dir << "/netbench.csv and netbench.svg\n";
  return 0;
}

}  // namespace

PARASOL_COMMAND("netbench", 25, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<NetbenchArgs>();
  auto* sub = app.add_subcommand("netbench", "Simulated nccl-tests: collective time, algbw and busbw over a GPU group");
  sub->add_option("CLUSTER", args->cluster, "Cluster file (parasol.cluster/1)")->required();
  sub->add_option("--gpus", args->gpus, "GPU group, e.g. '0-7' or '0,8,16,24' (default: the GPUs of --node)");
  sub->add_option("--node", args->node, "Node whose GPUs form the group (default 0)")->check(non_negative_count());
  sub->add_option("--min", args->min_size, "Smallest message (default 1 KiB)");
  sub->add_option("--max", args->max_size, "Largest message (default 8 GiB)");
  sub->add_option("--colls", args->colls, "Collectives: all_reduce,all_gather,reduce_scatter,all_to_all");
  sub->add_option("--efficiency", args->efficiency,
                  "Achieved / nominal link bandwidth (default: the GPU's comm_efficiency)")
      ->check(in_range(1e-6, 1.0, "a fraction in (0, 1]"));
  sub->add_option("--ref", args->refs, "Reference busbw line on the plot, LABEL=GBPS (repeatable)");
  sub->add_flag("--auto-only", args->auto_only, "Only the automatically chosen algorithm (no per-algorithm rows)");
  sub->add_option("--calibration", args->calibration,
                  "Measured tables (e.g. an AIConfigurator GPU folder): print the measured time next to the simulated");
  add_common_options(sub, common);
  sub->footer("Example: parasol netbench topologies/clusters/dgx-h100.yaml --out /tmp/nb");
  return [args, &common] { return run(*args, common); };
});

}  // namespace parasol::tools

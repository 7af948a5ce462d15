// Cluster summaries for people (to_string) and programs (to_json). Numbers are SI (bytes/s, links); keys are stable.
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/units.hpp"
#include "core/spec/cluster.hpp"

namespace parasol::spec {
namespace {

// GPU count per type, in type-name order (deterministic output).
std::map<std::string, int> gpus_per_type(const Cluster& c) {
  std::map<std::string, int> out;
  for (VertexId v : c.gpus) ++out[c.graph[v].gpu_type];
  return out;
}

std::map<std::string, int> vertices_per_kind(const Cluster& c) {
  std::map<std::string, int> out;
  for (auto [v, end] = boost::vertices(c.graph); v != end; ++v) ++out[to_string(c.graph[*v].kind)];
  return out;
}

}  // namespace

nlohmann::json to_json(const Cluster& c, const ClusterSummary& s) {
  nlohmann::json j;
  j["kind"] = "cluster";
  j["name"] = c.name;
  j["gpus"] = s.gpus;
  j["gpu_types"] = gpus_per_type(c);
  j["nodes"] = s.nodes;
  j["scaleup_domains"] = s.domains;
  j["max_domain_size"] = s.max_domain_size;
  j["scaleup_reduces"] = c.scaleup_reduces;
  j["switches"] = s.switches;
  j["links"] = s.links;
  j["vertices"] = vertices_per_kind(c);
  j["scaleup_bw_per_gpu_Bps"] = s.scaleup_bw_per_gpu_Bps;
  j["scaleout_bw_per_gpu_Bps"] = s.scaleout_bw_per_gpu_Bps;
  j["max_hops_gpu_to_gpu"] = s.max_hops_gpu_to_gpu;
  j["mean_hops_gpu_to_gpu"] = s.mean_hops_gpu_to_gpu;
  j["hops_sampled"] = s.hops_sampled;
  j["bisection_bw_Bps"] = s.bisection_bw_Bps;
  j["bisection_split"] = s.bisection_split;
  j["connected"] = s.connected;
  return j;
}

std::string to_string(const Cluster& c, const ClusterSummary& s) {
  std::ostringstream os;
  os << "cluster " << c.name << ": " << s.gpus << " GPUs (";
  bool first = true;
  for (const auto& [type, n] : gpus_per_type(c)) {
    os << (first ? "" : ", ") << n << "x " << type;
    first = false;
  }
  os << ") in " << s.nodes << (s.nodes == 1 ? " node\n" : " nodes\n");
  os << "  scale-up: " << s.domains << " domain(s) of up to " << s.max_domain_size << " GPUs, "
     << format_bandwidth(s.scaleup_bw_per_gpu_Bps) << " per GPU per direction"
     << (c.scaleup_reduces ? ", in-network reduction (NVLS)" : "") << "\n";
  os << "  scale-out: " << format_bandwidth(s.scaleout_bw_per_gpu_Bps) << " per GPU per direction\n";
  os << "  fabric: " << s.switches << " switches, " << s.links << " links; GPU-to-GPU hops: max "
     << s.max_hops_gpu_to_gpu << ", mean ";
  os.precision(3);
  os << s.mean_hops_gpu_to_gpu << (s.hops_sampled ? " (sampled)" : "") << "\n";
  os << "  bisection: " << format_bandwidth(s.bisection_bw_Bps) << " per direction";
  if (!s.bisection_split.empty()) os << " (" << s.bisection_split << ")";
  os << "\n  connected: " << (s.connected ? "yes" : "no") << "\n";
  return os.str();
}

}  // namespace parasol::spec

// Cluster: the machines and the interconnect as a Boost.Graph — GPUs, scale-up switches (NVSwitch / NVL72 domains),
// NICs, leaf and spine switches, and the links between them with bandwidth, latency and duplex. Built from
// topologies/clusters/*.yaml (`schema: parasol.cluster/1`) by generators (HGX node, leaf-spine/fat-tree with
// oversubscription, rail-optimized, NVL72 domain, heterogeneous pools), so a 1,024-GPU cluster is a few lines.
// Derived (Boost.Graph): GPU count, per-GPU scale-up and scale-out bandwidth, hop counts, bisection bandwidth, connectivity.
// Thread behaviour: immutable after construction; const methods are safe from many threads.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "core/common/yaml_node.hpp"

#include <boost/graph/adjacency_list.hpp>
#include <map>
#include <string>
#include <vector>

#include "core/spec/gpu.hpp"

namespace parasol::spec {

enum class VertexKind { kGpu, kScaleUpSwitch, kNic, kLeaf, kSpine, kCore, kHost };
enum class LinkKind { kScaleUp, kPcie, kScaleOut };

struct Vertex {
  VertexKind kind = VertexKind::kGpu;
  std::string name;        // unique, e.g. "node3/gpu5", "leaf2", "spine0"
  int gpu = -1;            // dense GPU index for kGpu, else -1
  int node = -1;           // node (server / tray) index, -1 for fabric switches
  int domain = -1;         // scale-up domain index, -1 for fabric switches
  std::string gpu_type;    // key into Cluster::gpu_types for kGpu
  int local = -1;          // GPU / NIC: index within its node (NIC i serves rail i); switches: index within their tier
};

struct Link {
  LinkKind kind = LinkKind::kScaleOut;
  double bw_Bps = 0;       // per direction when full_duplex, else shared by both directions
  double latency_s = 0;
  bool full_duplex = true;
};

using Graph = boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, Vertex, Link>;
using VertexId = Graph::vertex_descriptor;

struct Cluster {
  std::string name;
  Graph graph;
  std::map<std::string, Gpu> gpu_types;
  std::vector<VertexId> gpus;                     // gpus[i] = vertex of GPU i
  std::vector<std::vector<int>> nodes;            // GPU indices per node
  std::vector<std::vector<int>> scaleup_domains;  // GPU indices per scale-up domain (NVLink reach)
  bool scaleup_reduces = false;                   // the scale-up switch reduces in-network (NVLS / SHARP)

  int gpu_count() const { return static_cast<int>(gpus.size()); }
  const Gpu& gpu_spec(int gpu) const;
  int node_of(int gpu) const { return graph[gpus[gpu]].node; }
  int domain_of(int gpu) const { return graph[gpus[gpu]].domain; }
};

// Derived quantities.
struct ClusterSummary {
  int gpus = 0;
  int nodes = 0;
  int domains = 0;
  int max_domain_size = 0;
  int switches = 0;
  int links = 0;
  double scaleup_bw_per_gpu_Bps = 0;   // min over GPUs of the sum of its scale-up link bandwidths
  double scaleout_bw_per_gpu_Bps = 0;  // min over GPUs of its NIC bandwidth
  int max_hops_gpu_to_gpu = 0;         // diameter over GPU pairs (in links)
  double bisection_bw_Bps = 0;         // min cut between two halves of the GPUs (per direction)
  bool connected = false;
  // Added by the cluster generators: hop statistics are over all GPU pairs up to 512 GPUs, above that over the pairs
  // from 256 evenly spaced source GPUs (deterministic); the bisection is the minimum max-flow over the documented
  // splits (docs/schema-cluster.md), and `bisection_split` names the one that attained it.
  double mean_hops_gpu_to_gpu = 0;
  bool hops_sampled = false;
  std::string bisection_split;
};

ClusterSummary summarize(const Cluster& c);
// Hop count between two GPUs (BFS in the graph); -1 when they are not connected.
int hops(const Cluster& c, int gpu_a, int gpu_b);
// Max-flow (per direction) between two disjoint GPU sets, as a super-source/super-sink problem.
double max_flow_Bps(const Cluster& c, const std::vector<int>& from, const std::vector<int>& to);

// `schema: parasol.cluster/1`. GPU types referenced by name are loaded from topologies/gpus/<name>.yaml (relative to
// the cluster file's directory, then to PARASOL_DATA_DIR), or defined inline. A disconnected cluster is a ConfigError.
Cluster load_cluster(const yaml::Node& node);
Cluster load_cluster_file(const std::string& path);
nlohmann::json to_json(const Cluster& c, const ClusterSummary& s);
// A readable multi-line summary (for `parasol describe`).
std::string to_string(const Cluster& c, const ClusterSummary& s);

std::string to_string(VertexKind k);
std::string to_string(LinkKind k);

}  // namespace parasol::spec

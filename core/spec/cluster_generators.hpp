// Cluster generators (internal to core/spec): the resolved description of a `parasol.cluster/1` file — node types,
// pools of nodes, one scale-out fabric — and the function that expands it into the Boost.Graph of Cluster. The loader
// (cluster_loader.cpp) reads and checks YAML into these structs; generate_cluster (cluster_generators.cpp) only builds,
// so tests and other code may also build clusters programmatically. Every number here comes from the YAML; the
// generators add none of their own.
// Thread behaviour: plain values and a pure function.
#pragma once

#include <string>
#include <vector>

#include "core/spec/cluster.hpp"

namespace parasol::spec {

struct LinkSpec {
  double bw_Bps = 0;  // per direction when full_duplex
  double latency_s = 0;
  bool full_duplex = true;
};

enum class NicAttach {
  kRail,    // one NIC per GPU (GPU i -> NIC i over PCIe)
  kShared,  // `count` NICs shared by the node's GPUs: GPU g -> NIC g / (gpus / count)
};

// One kind of server (or tray): its GPUs, their scale-up switch, its NICs.
struct NodeType {
  std::string name;
  std::string gpu_type;  // key into Cluster::gpu_types
  int gpus = 8;
  LinkSpec scaleup;                // per-GPU link to the scale-up switch (NVLink / NVSwitch)
  bool in_network_reduce = false;  // the scale-up switch reduces in-network (NVLS)
  int nodes_per_domain = 1;        // >1: one scale-up switch spans that many nodes (NVL72: 18 trays of 4 GPUs)
  int nics = 0;
  NicAttach attach = NicAttach::kRail;
  double nic_bw_Bps = 0;  // NIC port to the fabric, per direction (latency and duplex are the fabric's)
  LinkSpec pcie;          // GPU to NIC
};

struct Pool {
  std::string name;
  int node_type = 0;  // index into ClusterSpec::node_types
  int count = 0;      // nodes
};

enum class FabricKind {
  kNone,           // no scale-out fabric (one scale-up domain, e.g. a single DGX)
  kLeafSpine,      // NICs fill leaves in node order; every leaf links to every spine
  kRailOptimized,  // NIC i of each node goes to rail-leaf i of its group of nics_per_leaf nodes; leaves to every spine
  kFatTree,        // three tiers: leaves as kLeafSpine, in pods with their own spines; every spine to every core
};

struct Fabric {
  FabricKind kind = FabricKind::kNone;
  int nics_per_leaf = 0;             // leaf downlink ports
  int spines = 0;                    // kFatTree: per pod
  int leaves_per_pod = 0;            // kFatTree
  int cores = 0;                     // kFatTree
  double core_oversubscription = 1;  // kFatTree, per spine: downlink bw / uplink bw
  double oversubscription = 1;       // per leaf: sum of downlink bw / sum of uplink bw
  double latency_s = 0;              // of every fabric link (NIC-leaf, leaf-spine)
  bool full_duplex = true;
};

struct ClusterSpec {
  std::string name;
  std::map<std::string, Gpu> gpu_types;
  std::vector<NodeType> node_types;
  std::vector<Pool> pools;
  Fabric fabric;
};

// Expands the spec into vertices and links. Node, domain and GPU indices are dense and in pool order. Does not check
// connectivity (the loader does, to report it at a file location).
Cluster generate_cluster(const ClusterSpec& spec);

// Leaf index of each leaf vertex and the leaf a GPU's first NIC is attached to (-1 when none). Used by summarize()
// to split GPUs by leaf halves.
std::vector<int> leaf_of_gpus(const Cluster& c);

// Number of connected components and, when >1, one vertex that the first GPU (or vertex 0) cannot reach.
struct Connectivity {
  int components = 0;
  VertexId unreachable = 0;
};
Connectivity connectivity(const Cluster& c);

}  // namespace parasol::spec

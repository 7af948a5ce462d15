// Collective and point-to-point cost in alpha-beta form, on the links of the cluster between the group's GPUs.
//
// A group is characterized once (GroupLinks): the bottleneck bandwidth and the latency of the paths between ring
// neighbours (widest shortest path in the cluster graph), the same inside scale-up domains and across them, and
// whether the whole group sits in one domain whose switch reduces (NVLS). For n ranks, buffer S (nccl-tests
// convention, Op::comm_bytes), bandwidth B (x efficiency), latency a, and L0 = CollectiveParams::base_latency_s (the
// fixed launch + protocol cost NCCL calls base latency), the time of each algorithm is the uncontended time of the
// flows sim/collectives.hpp decomposes it into, so analytic and network modes agree when links are not shared:
//   ring     one domain: all-reduce 2(n-1)/n S/B + 2(n-1) a;  all-gather / reduce-scatter (n-1)/n S/B + (n-1) a.
//            g GPUs per domain in N > 1 domains: g rail-aligned channels, each GPU's NVLink carries (g-1)/g of the
//            per-edge bytes and its NIC 1/g: per-edge x max((g-1)/g / B_intra, 1/g / B_inter), a = the slowest edge
//   nvls     all-reduce in one domain whose switch reduces: (n+1)/n S / (B x nvls_efficiency) + 2 a + nvls_latency
//            (multimem reduce-scatter pulls S up and S/n down, multicast all-gather pushes S/n up and S down)
//   hier.    all-reduce over N domains of g: intra ring reduce-scatter/all-gather and per-rail inter ring all-reduce of
//            S/g, pipelined: max(2(g-1)/g S/B_intra, 2(N-1)/N S/g / B_inter) + 2(g-1) a_intra + 2(N-1) a_inter
//   tree     as hier. with two binary trees per rail across domains (NCCL's double binary tree): the busiest NIC
//            carries c x S/(2g), c its tree edges over both trees; latency 2(g-1) a_intra + 2 floor(log2 N) a_inter
//   all-to-all: rank j needs max(sent, received) / B_j (intra- and inter-domain parts in parallel, each on its own
//            links) + a; the collective ends when the slowest rank ends (skew)
//   send/recv: S / B_path + a_path (no base latency: the send is part of the pipeline stage's kernel stream)
// Every collective adds L0; kAuto picks the fastest applicable one (ties: ring, nvls, hierarchical, tree), as NCCL's
// tuner does with its own model.
// Owner: network mode (issue 5). Thread behaviour: pure functions; LinkCache is not thread-safe.
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "core/plan/step.hpp"
#include "core/spec/cluster.hpp"

namespace parasol::cost {

// One path between two GPUs.
struct PathLinks {
  double bw_Bps = 0;     // bottleneck (per direction)
  double latency_s = 0;  // sum over links
  int hops = 0;
  bool same_domain = false;
};

// Memoized widest-shortest paths between GPUs of one cluster.
class LinkCache {
 public:
  explicit LinkCache(const spec::Cluster& cluster) : cluster_(&cluster) {}
  const PathLinks& path(int gpu_a, int gpu_b);
  const spec::Cluster& cluster() const { return *cluster_; }

 private:
  const spec::Cluster* cluster_;
  std::map<int, std::vector<PathLinks>> from_;  // source GPU -> paths to every GPU (one BFS per source)
};

struct GroupLinks {
  int n = 0;
  std::vector<int> gpus;    // in group order
  std::vector<int> domain;  // per member: its scale-up domain (a unique negative key when it has none)
  bool same_domain(int i, int j) const { return domain[static_cast<size_t>(i)] == domain[static_cast<size_t>(j)]; }
  double ring_bw_Bps = 0;     // min over ring neighbours (group order)
  double ring_latency_s = 0;  // max over ring neighbours
  bool one_domain = false;
  bool nvls = false;        // one domain and its switch reduces
  int domains = 0;          // distinct scale-up domains
  int local_n = 0;          // GPUs per domain (the largest share)
  double intra_bw_Bps = 0;  // min over intra-domain pairs of neighbours
  double intra_latency_s = 0;
  double inter_bw_Bps = 0;  // min over inter-domain paths between matching local ranks
  double inter_latency_s = 0;
  std::vector<double> a2a_intra_bw_Bps;  // per member: bandwidth to its own domain peers
  std::vector<double> a2a_inter_bw_Bps;  // per member: bandwidth to other domains
  std::vector<double> a2a_latency_s;     // per member: the largest latency to a peer
  bool uniform = false;                  // every domain holds the same number of members (local_n)
};

GroupLinks group_links(LinkCache& links, const std::vector<int>& gpus);

struct CollectiveTime {
  double time_s = 0;
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kRing;
};

// The NCCL-like parameters of the collective model (spec::Efficiency from the GPU YAML).
struct CollectiveParams {
  double efficiency = 1.0;       // achieved / nominal bandwidth: ring, tree, hierarchical, all-to-all
  double nvls_efficiency = 0.0;  // NVLS; 0: efficiency
  double base_latency_s = 0.0;   // every collective
  double nvls_latency_s = 0.0;   // NVLS, on top of base_latency_s
  // The serving engine's own all-reduce (spec::CustomAllReduce, set by the step cost from CostOptions::engine): an
  // all-reduce of less than custom_allreduce_max_bytes over at most custom_allreduce_max_gpus GPUs of one NVLink
  // domain may run on it; 0: NCCL only.
  double custom_allreduce_max_bytes = 0.0;
  int custom_allreduce_max_gpus = 0;
  static CollectiveParams from(const spec::Efficiency& e) {
    return {e.comm_efficiency, e.nvls_efficiency, e.collective_latency_s, e.nvls_latency_s};
  }
  double nvls_eff() const { return nvls_efficiency > 0 ? nvls_efficiency : efficiency; }
};

// Bytes each rank sends for a collective of buffer S over n ranks (ring all-reduce: 2(n-1)/n S).
double bytes_sent_per_rank(plan::OpKind kind, plan::CollectiveAlgo algo, int n, double S);

// Time of a collective op (kAllReduce, kAllGather, kReduceScatter, kAllToAll) over `group`; `algo` kAuto = fastest.
// `comm_efficiency` scales bandwidths (Gpu::eff.comm_efficiency).
// The double forms use CollectiveParams{comm_efficiency} (no fixed latencies).
CollectiveTime collective_time(const plan::Op& op, const GroupLinks& group, const CollectiveParams& params,
                               plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto);
CollectiveTime collective_time(const plan::Op& op, const GroupLinks& group, double comm_efficiency,
                               plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto);
// All-to-all over `group` where member i sends members[i]->a2a_send_bytes (group order); the slowest member's time.
double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& group,
                       const CollectiveParams& params);
double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& group, double comm_efficiency);
// Links a NIC of the double binary tree over `domains` domains carries at most (both trees, one direction), in
// units of S/(2g): the most loaded node's parent + children edges. Shared with sim/collectives.
int tree_max_edges(int domains);
// Point-to-point transfer of `bytes` over a path.
double p2p_time(double bytes, const PathLinks& path, double comm_efficiency);

}  // namespace parasol::cost

// Collective and point-to-point cost in alpha-beta form, on the links of the cluster between the group's GPUs.
//
// A group is characterized once (GroupLinks): the bottleneck bandwidth and the latency of the paths between ring
// neighbours (widest shortest path in the cluster graph), the same inside scale-up domains and across them, and
// whether the whole group sits in one domain whose switch reduces (NVLS). Algorithms, for n ranks, buffer S (nccl-tests
// convention, Op::comm_bytes), bandwidth B (x Gpu::eff.comm_efficiency), latency a:
//   ring     all-reduce 2(n-1)/n S/B + 2(n-1) a;  all-gather / reduce-scatter (n-1)/n S/B + (n-1) a
//   tree     all-reduce 2 S/B + 2 ceil(log2 n) a (double binary tree, pipelined)
//   nvls     all-reduce S/B + 2 a (the switch reduces; one domain, Cluster::scaleup_reduces)
//   hier.    intra-domain reduce-scatter, inter-domain ring all-reduce of S/n_local per GPU (one NIC per GPU in
//            parallel), intra-domain all-gather
//   all-to-all: rank j needs max(sent, received) / B_j (intra- and inter-domain parts in parallel, each on its own
//            links) + a; the collective ends when the slowest rank ends (skew)
//   send/recv: S / B_path + a_path
// kAuto picks the fastest applicable algorithm, as NCCL's tuner does.
// Owner: planner. Thread behaviour: pure functions; LinkCache is not thread-safe.
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
  std::vector<int> gpus;          // in group order
  std::vector<int> domain;        // per member: its scale-up domain (a unique negative key when it has none)
  bool same_domain(int i, int j) const { return domain[static_cast<size_t>(i)] == domain[static_cast<size_t>(j)]; }
  double ring_bw_Bps = 0;         // min over ring neighbours (group order)
  double ring_latency_s = 0;      // max over ring neighbours
  bool one_domain = false;
  bool nvls = false;              // one domain and its switch reduces
  int domains = 0;                // distinct scale-up domains
  int local_n = 0;                // GPUs per domain (the largest share)
  double intra_bw_Bps = 0;        // min over intra-domain pairs of neighbours
  double intra_latency_s = 0;
  double inter_bw_Bps = 0;        // min over inter-domain paths between matching local ranks
  double inter_latency_s = 0;
  std::vector<double> a2a_intra_bw_Bps;  // per member: bandwidth to its own domain peers
  std::vector<double> a2a_inter_bw_Bps;  // per member: bandwidth to other domains
  std::vector<double> a2a_latency_s;     // per member: the largest latency to a peer
};

GroupLinks group_links(LinkCache& links, const std::vector<int>& gpus);

struct CollectiveTime {
  double time_s = 0;
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kRing;
};

// Bytes each rank sends for a collective of buffer S over n ranks (ring all-reduce: 2(n-1)/n S).
double bytes_sent_per_rank(plan::OpKind kind, plan::CollectiveAlgo algo, int n, double S);

// Time of a collective op (kAllReduce, kAllGather, kReduceScatter, kAllToAll) over `group`; `algo` kAuto = fastest.
// `comm_efficiency` scales bandwidths (Gpu::eff.comm_efficiency).
CollectiveTime collective_time(const plan::Op& op, const GroupLinks& group, double comm_efficiency,
                               plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto);
// All-to-all over `group` where member i sends members[i]->a2a_send_bytes (group order); the slowest member's time.
double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& group, double comm_efficiency);
// Point-to-point transfer of `bytes` over a path.
double p2p_time(double bytes, const PathLinks& path, double comm_efficiency);

}  // namespace parasol::cost

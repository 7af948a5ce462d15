// Collective and point-to-point cost on the links of the cluster between the group's GPUs: NCCL's algorithms (ring,
// tree, NVLS, hierarchical) times its protocols (LL, LL128, Simple), the NIC, and the serving engines' own one-shot /
// two-shot all-reduce. docs/network.md derives every formula; the GPU YAML's `collective:` section holds the
// parameters (spec::CollectiveModelParams, fitted by `parasol calibrate` to nccl-tests / AIConfigurator tables).
//
// A group is characterized once (GroupLinks): the bottleneck bandwidth and latency of the paths between ring
// neighbours (widest shortest path in the cluster graph), inside scale-up domains and across them, and whether the
// whole group sits in one domain whose switch reduces (NVLS). For n ranks, buffer S (nccl-tests convention,
// Op::comm_bytes), nominal bandwidth B and protocol p (fixed cost base_p, per-step latency hop_p, bandwidth fraction
// f_p of Simple), a collective of kind k costs
//   L0 + base_p + steps x step_p + bytes_on_the_busiest_link / (B x eff_k(n) x f_p)
// where L0 = Efficiency::collective_latency_s, eff_k(n) = efficiency_k x (1 - ring_penalty_k / n^2) on NVLink and
// nic_efficiency across NICs, and a step's latency is hop_p inside a domain (the links' own latency when hop_p is 0)
// and the path's latency + nic_message_s across NICs. Algorithms (steps, bytes):
//   ring     all-reduce 2(n-1) steps, 2(n-1)/n S per edge; all-gather / reduce-scatter n-1 steps, (n-1)/n S. Across
//            N > 1 domains of g GPUs: g rail-aligned channels, each GPU's NVLink carries (g-1)/g of the per-edge bytes
//            and its NIC 1/g.
//   nvls     all-reduce in one domain whose switch reduces, 16/32-bit floats only, Simple: (n+1)/n S per direction at
//            nvls_efficiency, 2 steps, + nvls_latency.
//   hier.    all-reduce over N domains of g: intra ring reduce-scatter/all-gather (2(g-1) steps) and a per-rail inter
//            ring all-reduce of S/g (2(N-1) NIC steps), pipelined (max of the two bandwidth terms).
//   tree     as hier. with NCCL's double binary tree per rail across domains: the busiest NIC carries c x S/(2g), c its
//            tree edges; 2 floor(log2 N) NIC steps.
//   all-to-all (kDirect): per rank max(sent, received) / B per part (intra- and inter-domain in parallel), (n-1)
//            peer latencies inside, one NIC message per remote peer; LL / narrow / Simple of the all_to_all params.
//            LL only while no message to one peer exceeds ll_max_peer_bytes (NCCL's P2P LL threshold), each peer's
//            bytes on their own channel: inside a domain at min(efficiency, ll_bandwidth x peers) of B.
//   one-shot / two-shot: the engine's all-reduce (CollectiveParams::custom_allreduce_max_bytes > 0) inside one NVLink
//            domain: one-shot reads (n-1) S, two-shot moves 2(n-1)/n S per direction; then, up to the engine's
//            symmetric-memory limit, multimem (NVLS bytes) or two-shot plus a copy in and out of HBM (4 S); NCCL above.
//            The engine picks by size (its limits per world size: CustomAllReduceParams), not by speed.
//   send/recv: S / (B x eff) + path latency (+ nic_message_s across NICs; no fixed cost: it rides a stage's stream).
// kAuto: the minimum over applicable (algorithm, protocol), as NCCL's tuner does with its own model (ties: ring,
// nvls, hierarchical, tree; LL, LL128, narrow, Simple). sim/collectives.hpp decomposes each choice into flows whose
// uncontended time is the same number, so analytic and network modes agree when links are not shared.
// Thread behaviour: pure functions; LinkCache is not thread-safe.
#pragma once

#include <map>
#include <string>
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
  // The ring's edges split by kind: inside a domain (NVLink) and across domains (NIC); infinite bw / 0 when none.
  double ring_intra_bw_Bps = 0, ring_intra_latency_s = 0;
  double ring_inter_bw_Bps = 0, ring_inter_latency_s = 0;
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
  std::vector<double> a2a_intra_latency_s, a2a_inter_latency_s;  // per member: largest latency inside / across
  std::vector<int> a2a_intra_peers, a2a_inter_peers;             // per member: peers inside / across domains
  bool uniform = false;                  // every domain holds the same number of members (local_n)
};

GroupLinks group_links(LinkCache& links, const std::vector<int>& gpus);

// NCCL's protocols (kAuto: the fastest), in order of bandwidth: kNarrow is Simple on a reduced channel count
// (spec::ProtocolParams). For all-to-all: LL, Simple on its default channels per peer (kNarrow), Simple (kSimple).
enum class Protocol { kAuto, kLL, kLL128, kNarrow, kSimple };
std::string to_string(Protocol p);

struct CollectiveTime {
  double time_s = 0;
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kRing;
  Protocol proto = Protocol::kSimple;  // kAuto for the engine's own all-reduce (no NCCL protocol)
};

// The parameters of the collective model for one GPU type (spec::Efficiency + spec::CollectiveModelParams), and the
// serving engine's custom all-reduce switch.
struct CollectiveParams {
  double efficiency = 1.0;       // achieved / nominal NVLink bandwidth, Simple, long rings (Efficiency::comm_efficiency)
  double nvls_efficiency = 0.0;  // NVLS; 0: efficiency
  double base_latency_s = 0.0;   // every collective, on top of the protocol's base (Efficiency::collective_latency_s)
  double nvls_latency_s = 0.0;   // NVLS, on top of Simple's base
  // The serving engine's own all-reduce (spec::CustomAllReduce, set by the step cost from CostOptions::engine): an
  // all-reduce of less than custom_allreduce_max_bytes over at most custom_allreduce_max_gpus GPUs of one NVLink
  // domain may run on it, within the GPU's CustomAllReduceParams limits; 0: NCCL only.
  double custom_allreduce_max_bytes = 0.0;
  int custom_allreduce_max_gpus = 0;
  double copy_Bps = 0;               // HBM copy bandwidth (symmetric-memory staging): hbm_bw x GemmParams::memory
  spec::CollectiveModelParams model;  // protocols, per-kind bandwidths, NIC, custom all-reduce

  // Efficiency fields only (the plain alpha-beta model: one protocol, no custom all-reduce).
  static CollectiveParams from(const spec::Efficiency& e);
  // The GPU's whole collective model.
  static CollectiveParams from(const spec::Gpu& g);
  double nvls_eff() const { return nvls_efficiency > 0 ? nvls_efficiency : efficiency; }
  double nic_eff() const { return model.nic_efficiency > 0 ? model.nic_efficiency : efficiency; }
  // Simple's achieved / nominal scale-up bandwidth for `kind` over a ring (or exchange) of n ranks.
  double link_eff(plan::OpKind kind, int n) const;
  // Protocol p's bandwidth as a fraction of Simple's for `kind` (0: p is not used).
  double proto_bw(plan::OpKind kind, Protocol p) const;
  const spec::ProtocolParams& proto(Protocol p) const;
  // Latency of one algorithm step with protocol p: inside a domain over a path of latency `link_s`, or across NICs.
  double step_s(Protocol p, double link_s, bool nic) const;
};

// Bytes each rank sends for a collective of buffer S over n ranks (ring all-reduce: 2(n-1)/n S).
double bytes_sent_per_rank(plan::OpKind kind, plan::CollectiveAlgo algo, int n, double S);

// Whether NVLS (the switch's reduction) handles `dt` (fp16, bf16, fp32; not 8-bit types).
bool nvls_reduces(DType dt);

// Time of a collective op (kAllReduce, kAllGather, kReduceScatter, kAllToAll) over `group`; `algo` kAuto = fastest
// (all-reduce with the engine's custom all-reduce on: the engine's choice by size).
// The double forms use CollectiveParams{comm_efficiency} (no fixed latencies).
CollectiveTime collective_time(const plan::Op& op, const GroupLinks& group, const CollectiveParams& params,
                               plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto);
CollectiveTime collective_time(const plan::Op& op, const GroupLinks& group, double comm_efficiency,
                               plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto);
// One (algorithm, protocol) pair explicitly (kAuto protocol: the fastest for that algorithm); a negative time when the
// pair cannot run this op over this group.
double collective_time_of(const plan::Op& op, const GroupLinks& group, const CollectiveParams& params,
                          plan::CollectiveAlgo algo, Protocol proto);
// The algorithm the engine's own all-reduce runs for buffer S over `group` (kOneShot, kTwoShot, kNvls for its
// multimem path), or kAuto when it hands the op to NCCL; `symm` says whether it is the symmetric-memory path.
plan::CollectiveAlgo custom_allreduce_choice(const GroupLinks& group, const CollectiveParams& params, double S,
                                             bool* symm = nullptr);
// All-to-all over `group` where member i sends members[i]->a2a_send_bytes (group order); the slowest member's time.
double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& group,
                       const CollectiveParams& params);
double all_to_all_time(const std::vector<const plan::Op*>& members, const GroupLinks& group, double comm_efficiency);
// Whether all-to-all protocol p runs when the largest message to one peer is max_peer_bytes: NCCL sends a peer's
// data with LL only up to AllToAllParams::ll_max_peer_bytes (its P2P_LL_THRESHOLD), Simple above.
bool a2a_protocol_applies(const CollectiveParams& params, Protocol p, double max_peer_bytes);
// Achieved / nominal scale-up bandwidth of a member's all-to-all bytes with protocol p over n ranks, `peers` of them
// in its domain: Simple (narrow or not) at its efficiency; LL at its per-peer fraction times the peers, at most
// Simple's efficiency (a channel per peer).
double a2a_fraction(const CollectiveParams& params, Protocol p, int n, int peers);
// Member i's latency in an all-to-all with protocol p (kLL, kNarrow or kSimple): its domain peers' messages (or the links'
// latency when unfitted) and, across NICs, the path latency plus one NIC message per remote peer.
double a2a_member_latency_s(const GroupLinks& group, const CollectiveParams& params, Protocol p, int i);
// Links a NIC of the double binary tree over `domains` domains carries at most (both trees, one direction), in
// units of S/(2g): the most loaded node's parent + children edges. Shared with sim/collectives.
int tree_max_edges(int domains);
// Point-to-point transfer of `bytes` over a path (across NICs: nic_efficiency and nic_message_s).
double p2p_time(double bytes, const PathLinks& path, double comm_efficiency);
double p2p_time(double bytes, const PathLinks& path, const CollectiveParams& params);

}  // namespace parasol::cost

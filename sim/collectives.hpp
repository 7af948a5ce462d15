// Collectives as flows: how a collective over a group of GPUs decomposes into concurrent point-to-point flows on the
// cluster graph, as NCCL (or the serving engine's own all-reduce) runs it, and which (algorithm, protocol) the
// NCCL-style tuning picks.
//
// A collective becomes one FlowSet: flows that all start together (NCCL pipelines its chunks, so in steady state every
// edge of a ring or tree carries traffic at once), plus the latency terms of the steps that pipelining cannot hide. A
// FlowSet's uncontended duration is  max over flows (route latency) + extra_latency_s + transfer time under max-min
// sharing, and for every (algorithm, protocol) here that equals core/cost/collective_cost.hpp's closed form, so
// analytic and network modes agree when links are not shared; under contention the flows share links with everything
// else in the simulation. Activity counts stay low: one flow per ring edge and channel, not one per ring step (a
// single-node ring of 8 is 8 flows; 2(n-1) steps appear only in the latency term).
//
// Algorithms (plan::CollectiveAlgo), each with NCCL's protocols (cost::Protocol: LL, LL128, narrow Simple, Simple):
//   kRing          ring over the group; one channel inside a scale-up domain, g rail-aligned channels across nodes
//                  (g = group GPUs per node), as NCCL builds one ring per NIC. All-reduce moves 2(n-1)/n x S per edge,
//                  all-gather and reduce-scatter (n-1)/n x S, with 2(n-1) resp. n-1 step latencies.
//   kNvls          all-reduce inside one scale-up domain whose switch reduces (Cluster::scaleup_reduces), 16/32-bit
//                  floats, Simple: reduce-scatter by multimem loads then all-gather by multicast stores,
//                  (n+1)/n x S per direction per GPU at nvls_efficiency, 2 steps + nvls_latency.
//   kHierarchical  all-reduce across nodes: intra-node ring reduce-scatter + all-gather (2(g-1)/g x S per NVLink edge),
//                  inter-node ring all-reduce per rail over S/g, all pipelined.
//   kTree          as hierarchical, with NCCL's double binary tree across nodes per rail instead of the inter-node
//                  ring: 2 log2(N) step latencies instead of 2(N-1), for small and mid sizes at scale.
//   kDirect        all-to-all(v): one flow per ordered pair; send/recv: one flow.
//   kOneShot       the engine's all-reduce: every GPU reads S from each peer (one flow per ordered pair).
//   kTwoShot       the engine's reduce-scatter + all-gather through peer memory: 2S/n per ordered pair.
// Flows inside a scale-up domain carry bytes / (efficiency x protocol fraction), across NICs bytes / (nic_efficiency
// x protocol fraction); the parameters are the GPU type's (spec::CollectiveModelParams) unless the Collective
// overrides them. kAuto picks the applicable pair with the smallest uncontended estimate (NCCL's tuner does the same
// with its own model); ties go to the earlier one in the order ring, nvls, hierarchical, tree, direct and LL, LL128,
// narrow, Simple. An all-reduce with the engine's custom all-reduce on takes the engine's choice by size (collective_cost.hpp).
//
// Sizes follow nccl-tests: `bytes` is S, the all-reduce buffer, the all-gather output, the reduce-scatter input and the
// all-to-all per-rank send buffer; bus_factor() gives busbw = algbw x factor.
// Thread behaviour: pure functions over a RouteTable (which caches; one per simulation).
#pragma once

#include <string>
#include <vector>

#include "core/cost/collective_cost.hpp"
#include "core/plan/step.hpp"
#include "sim/routing.hpp"

namespace parasol::sim {

enum class CollKind { kAllReduce, kAllGather, kReduceScatter, kAllToAll, kSendRecv };

std::string to_string(CollKind k);
std::string algo_name(plan::CollectiveAlgo a);          // "ring", "nvls", ...
plan::CollectiveAlgo parse_algo(const std::string& s);  // inverse of algo_name; throws ConfigError
CollKind coll_kind_of(plan::OpKind k);                  // kAllReduce.. kAllToAll, kSend -> kSendRecv; throws otherwise

struct Collective {
  CollKind kind = CollKind::kAllReduce;
  std::vector<int> gpus;          // cluster GPU indices, in group order (send/recv: {src, dst})
  double bytes = 0;               // S, nccl-tests convention
  std::vector<double> a2a_bytes;  // all-to-all(v): n x n bytes, row = sender; empty = S/n to every peer
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto;
  double efficiency = 1.0;  // achieved / nominal link bandwidth: flows carry bytes / efficiency
  // NCCL-like parameters; negative = from the GPU type of the group's first GPU (spec::Efficiency).
  double nvls_efficiency = -1;  // NVLS flows carry bytes / nvls_efficiency (0: efficiency)
  double base_latency_s = -1;   // fixed cost of every collective
  double nvls_latency_s = -1;   // extra fixed cost of NVLS
  DType dtype = DType::kBf16;   // all-reduce: NVLS reduces 16/32-bit floats only
  // The serving engine's own all-reduce (cost::CollectiveParams): on when max_bytes > 0.
  double custom_allreduce_max_bytes = 0;
  int custom_allreduce_max_gpus = 0;
};

struct Flow {
  int src = 0;  // vertices of the cluster graph
  int dst = 0;
  double bytes = 0;
};

struct FlowSet {
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kDirect;
  cost::Protocol proto = cost::Protocol::kSimple;  // kAuto: the engine's own kernels
  std::vector<Flow> flows;     // concurrent, sorted by (src, dst), no duplicates
  double extra_latency_s = 0;  // step latencies beyond the one each flow pays on its route
};

double bus_factor(CollKind k, int n);

// Whether `algo` can run `c` on this cluster (kAuto: always).
bool applicable(const Collective& c, plan::CollectiveAlgo algo, RouteTable& routes);
// Decomposition with an explicit algorithm (kAuto resolves first) and its fastest protocol. Throws ConfigError when
// not applicable.
FlowSet decompose(const Collective& c, plan::CollectiveAlgo algo, RouteTable& routes);
// ... with one protocol (kAuto: the fastest); an empty FlowSet with algo kAuto when the protocol does not apply.
FlowSet decompose(const Collective& c, plan::CollectiveAlgo algo, cost::Protocol proto, RouteTable& routes);
// A point-to-point transfer of `bytes` from GPU `src` to GPU `dst` (pipeline send/recv), with the GPU type's
// efficiency (across NICs: nic_efficiency and nic_message_s), as cost::p2p_time.
FlowSet p2p_flows(int src, int dst, double bytes, RouteTable& routes);
// The model parameters a Collective runs with: its GPU type's, with the Collective's overrides.
cost::CollectiveParams collective_params(const Collective& c, const spec::Cluster& cluster);
// Decomposition with c.algo (kAuto: the fastest applicable by estimate_s).
FlowSet plan_collective(const Collective& c, RouteTable& routes);
// Uncontended duration: the most loaded link direction's bytes / bandwidth + the longest flow latency + extra latency.
double estimate_s(const FlowSet& fs, RouteTable& routes);

}  // namespace parasol::sim

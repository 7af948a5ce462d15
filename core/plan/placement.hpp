// Placement: where every rank of every instance runs on the cluster graph, and make_plan, which resolves a full Plan
// (config + placement + stage layers + memory budget) from a model, a cluster and a layout.
//
// Rules (deterministic, first fit over scale-up domains in index order, GPUs in index order inside a domain):
//   - a TP group (the tp ranks of one stage and attn-DP group) lies inside one scale-up domain; a TP group larger than
//     every domain is infeasible unless PlanOptions::allow_cross_domain_tp, and then spans consecutive domains;
//   - the tp x attn_dp ranks of a stage (its EP group, whose all-to-all wants the fastest links) go into one domain
//     when they fit in one, else into as few consecutive domains as first fit gives;
//   - stages follow each other in domain order, so stage s+1 lands on the next node(s): neighbouring nodes share a leaf;
//   - instances are packed one after the other; a disaggregated plan places the prefill pool first, then the decode
//     pool on the GPUs left.
// Thread behaviour: pure functions.
#pragma once

#include <string>
#include <vector>

#include "core/plan/feasibility.hpp"
#include "core/plan/plan.hpp"
#include "core/spec/cluster.hpp"

namespace parasol::plan {

struct PlacementResult {
  Feasibility feasibility;
  std::vector<std::vector<int>> placement;  // [instance][rank] -> cluster GPU index
};

// Places `config.dp` instances on GPUs of `gpu_type` not in `used` (a flag per cluster GPU, may be empty).
PlacementResult place(const spec::Cluster& cluster, const std::string& gpu_type, const ParallelConfig& config,
                      const PlanOptions& options, const std::vector<bool>& used = {});

struct MadePlan {
  Plan plan;
  Feasibility feasibility;  // ok == false: the plan is as complete as the checks got, not runnable
};

// The GPU type to use when a cluster has one (or the caller gave one): `gpu_type` if non-empty, else the only type;
// a ConfigError when empty and the cluster has several, or when the named type is not in the cluster.
std::string resolve_gpu_type(const spec::Cluster& cluster, const std::string& gpu_type);

MadePlan make_plan(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                   const ParallelConfig& config, const PlanOptions& options = {});
MadePlan make_plan(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                   const DisaggConfig& config, const PlanOptions& options = {});

// A cluster of `nodes` x `gpus_per_node` GPUs of one type: one NVSwitch per node (scale-up domain = node) and one NIC
// per GPU into a single leaf switch. For tests and ad-hoc `parasol step` runs; bandwidths come from the Gpu (scale-up)
// and the arguments (scale-out), never from constants here.
spec::Cluster single_type_cluster(const spec::Gpu& gpu, int nodes, int gpus_per_node, double nic_bw_Bps,
                                  double scaleup_latency_s, double scaleout_latency_s, bool scaleup_reduces);

}  // namespace parasol::plan

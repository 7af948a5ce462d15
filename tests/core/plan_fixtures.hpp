// Shared helpers of the planner and cost-model tests: shipped models and GPUs, and small clusters built from them.
#pragma once

#include <string>

#include "core/plan/placement.hpp"
#include "core/search/search.hpp"
#include "core/spec/gpu.hpp"
#include "core/spec/model.hpp"

namespace parasol::testing {

inline spec::Model shipped_model(const std::string& name) {
  return spec::load_model_file(std::string(PARASOL_DATA_DIR) + "/scenarios/models/" + name + ".yaml");
}
inline spec::Gpu shipped_gpu(const std::string& name) {
  return spec::load_gpu_file(std::string(PARASOL_DATA_DIR) + "/topologies/gpus/" + name + ".yaml");
}
// nodes x gpus_per_node of `gpu`: one NVSwitch domain per node, a NIC of 50 GB/s per GPU into one leaf. The network
// numbers are arbitrary test values, not a claim about hardware.
inline spec::Cluster test_cluster(const spec::Gpu& gpu, int nodes, int gpus_per_node, bool nvls = false) {
  return plan::single_type_cluster(gpu, nodes, gpus_per_node, 50e9, 2e-6, 6e-6, nvls);
}

// A layout of one instance: tp x pp ranks, ep expert shards, adp attention-DP groups (dp 1).
inline plan::ParallelConfig layout(int tp, int pp, int ep = 1, int adp = 1) {
  plan::ParallelConfig c;
  c.tp = tp, c.pp = pp, c.ep = ep, c.attn_dp = adp;
  return c;
}

// A search of shipped model `model` on `cluster` (its only GPU type), in the model's own dtypes, with prefill/decode
// disaggregation `d`; the caller sets the SLOs and the load.
inline search::SearchInput search_input(const std::string& model, const spec::Cluster& cluster,
                                        spec::Disaggregation d) {
  search::SearchInput in;
  in.model = shipped_model(model);
  in.cluster = &cluster;
  in.gpu_type = plan::resolve_gpu_type(cluster, "");
  in.space.weight_dtype = in.model.weight_dtype;
  in.space.kv_dtype = in.model.kv_dtype;
  in.space.disaggregation = d;
  return in;
}

}  // namespace parasol::testing

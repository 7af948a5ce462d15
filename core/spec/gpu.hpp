// Gpu: the datasheet of one accelerator and the efficiency parameters of the cost model. Loaded from
// topologies/gpus/*.yaml (`schema: parasol.gpu/1`); every number there carries its public source in a comment.
// Thread behaviour: plain value.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include "core/common/yaml_node.hpp"

#include <map>
#include <string>

#include "core/common/dtype.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

// Collectives' achieved fraction of the links (kernels have their own sections: GemmParams, AttentionParams,
// ElementwiseParams).
struct Efficiency {
  double comm_efficiency = 0.8;  // achieved / nominal scale-up bandwidth for collectives (bus bandwidth)
  // NCCL-like collective model (core/cost/collective_cost.hpp, sim/collectives.hpp): NVLS (NVLink SHARP) achieved /
  // nominal bandwidth (0: comm_efficiency), the fixed cost of every collective (kernel launch + protocol), and the
  // extra fixed cost of an NVLS collective (multicast object / switch round trips).
  double nvls_efficiency = 0.0;
  double collective_latency_s = 0.0;
  double nvls_latency_s = 0.0;
};

struct Gpu {
  std::string name;
  std::string vendor;
  std::map<DType, double> peak_flops;  // dense FLOP/s per dtype (no sparsity); fp32 = non-tensor-core FP32
  double tf32_flops = 0;               // dense TF32 tensor-core FLOP/s (0: none), for fp32 GEMMs that allow TF32
  double hbm_bytes = 0;
  double hbm_bw_Bps = 0;
  double scaleup_bw_Bps = 0;  // per direction, per GPU (NVLink / Infinity Fabric)
  double l2_bytes = 0;
  double tdp_W = 0;
  double idle_W = 0;
  int sm_count = 0;           // streaming multiprocessors (AMD: compute units); 0: unknown
  Efficiency eff;
  GemmParams gemm;
  ElementwiseParams elementwise;
  AttentionParams attention;
  CollectiveModelParams collective;

  // Peak for a dtype; falls back to the nearest wider dtype the GPU supports (fp8 on A100 runs as bf16).
  double peak(DType t) const;
};

Gpu load_gpu(const yaml::Node& node);  // `schema: parasol.gpu/1`
Gpu load_gpu_file(const std::string& path);
nlohmann::json to_json(const Gpu& g);

}  // namespace parasol::spec

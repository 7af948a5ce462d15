// Gpu: peak lookup with dtype fallback, and the JSON description for `describe --json`. The numbers themselves live in
// topologies/gpus/*.yaml (never here).
#include "core/spec/gpu.hpp"

#include <nlohmann/json.hpp>
#include <vector>

#include "core/common/error.hpp"

namespace parasol::spec {
namespace {

// Where a dtype runs when the GPU has no native rate for it: the next wider type, ending at fp32. int4/int8 weights
// without integer tensor cores are dequantized and multiplied in 16-bit; fp8 without fp8 tensor cores runs as bf16.
std::vector<DType> fallback_chain(DType t) {
  switch (t) {
    case DType::kInt4:
      return {DType::kInt4, DType::kInt8, DType::kBf16, DType::kFp16, DType::kFp32};
    case DType::kInt8:
      return {DType::kInt8, DType::kBf16, DType::kFp16, DType::kFp32};
    case DType::kFp8:
      return {DType::kFp8, DType::kBf16, DType::kFp16, DType::kFp32};
    case DType::kBf16:
      return {DType::kBf16, DType::kFp16, DType::kFp32};
    case DType::kFp16:
      return {DType::kFp16, DType::kBf16, DType::kFp32};
    case DType::kFp32:
      return {DType::kFp32};
  }
  return {DType::kFp32};
}

}  // namespace

double Gpu::peak(DType t) const {
  for (DType d : fallback_chain(t)) {
    auto it = peak_flops.find(d);
    if (it != peak_flops.end() && it->second > 0) return it->second;
  }
  throw Error("GPU '" + name + "' has no peak FLOP/s for " + std::string(to_string(t)) + " or any wider dtype");
}

nlohmann::json to_json(const Gpu& g) {
  nlohmann::json j;
  j["kind"] = "gpu";
  j["name"] = g.name;
  j["vendor"] = g.vendor;
  nlohmann::json peaks = nlohmann::json::object();
  for (const auto& [d, v] : g.peak_flops) peaks[std::string(to_string(d))] = v;  // std::map: ordered by dtype
  if (g.tf32_flops > 0) peaks["tf32"] = g.tf32_flops;
  j["peak_flops"] = peaks;
  j["hbm_bytes"] = g.hbm_bytes;
  j["hbm_bw_Bps"] = g.hbm_bw_Bps;
  j["scaleup_bw_Bps"] = g.scaleup_bw_Bps;
  j["l2_bytes"] = g.l2_bytes;
  j["tdp_W"] = g.tdp_W;
  j["idle_W"] = g.idle_W;
  j["efficiency"] = {{"comm_efficiency", g.eff.comm_efficiency},
                     {"nvls_efficiency", g.eff.nvls_efficiency},
                     {"collective_latency_s", g.eff.collective_latency_s},
                     {"nvls_latency_s", g.eff.nvls_latency_s}};
  j["sm_count"] = g.sm_count;
  j["gemm"] = to_json(g.gemm);
  j["elementwise"] = to_json(g.elementwise);
  j["attention"] = to_json(g.attention);
  j["collective"] = to_json(g.collective);
  // Ridge point of the roofline at bf16: FLOPs per byte above which a kernel is compute-bound.
  if (g.hbm_bw_Bps > 0) j["ridge_flops_per_byte_bf16"] = g.peak(DType::kBf16) / g.hbm_bw_Bps;
  return j;
}

}  // namespace parasol::spec

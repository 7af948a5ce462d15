// Roofline cost of one compute op (op_cost.hpp).
#include "core/cost/op_cost.hpp"

#include <algorithm>

#include "core/common/error.hpp"
#include "core/cost/attention_cost.hpp"
#include "core/cost/calibration.hpp"
#include "core/cost/gemm_cost.hpp"

namespace parasol::cost {
namespace {

// Peak FLOP/s for `t`, falling back to a dtype the GPU lists (fp8 on a GPU without fp8 runs as bf16).
double peak_for(const spec::Gpu& gpu, DType t) {
  static const DType order_fp8[] = {DType::kFp8, DType::kBf16, DType::kFp16, DType::kFp32};
  static const DType order_int[] = {DType::kInt8, DType::kFp8, DType::kBf16, DType::kFp16, DType::kFp32};
  static const DType order_16[] = {DType::kBf16, DType::kFp16, DType::kFp32};
  static const DType order_32[] = {DType::kFp32, DType::kBf16};
  auto try_list = [&gpu](auto& list, DType first) -> double {
    if (auto it = gpu.peak_flops.find(first); it != gpu.peak_flops.end() && it->second > 0) return it->second;
    for (DType d : list)
      if (auto it = gpu.peak_flops.find(d); it != gpu.peak_flops.end() && it->second > 0) return it->second;
    return 0.0;
  };
  double p = 0;
  switch (t) {
    case DType::kFp8: p = try_list(order_fp8, t); break;
    case DType::kInt8:
    case DType::kInt4: p = try_list(order_int, t); break;
    case DType::kBf16:
    case DType::kFp16: p = try_list(order_16, t); break;
    case DType::kFp32: p = try_list(order_32, t); break;
  }
  if (p <= 0) throw Error("GPU '" + gpu.name + "' lists no peak FLOP/s usable for " + std::string(to_string(t)));
  return p;
}

}  // namespace

std::string to_string(Bound b) {
  switch (b) {
    case Bound::kCompute: return "compute";
    case Bound::kMemory: return "memory";
    case Bound::kCommunication: return "communication";
    case Bound::kLaunch: return "launch";
    case Bound::kCalibrated: return "calibrated";
  }
  return "unknown";
}

double op_peak_flops(const plan::Op& op, const spec::Gpu& gpu) {
  using plan::OpKind;
  if (op.kind == OpKind::kGemm || op.kind == OpKind::kMoeGate) return peak_for(gpu, op.dtype);
  if (op.kind == OpKind::kAttention || op.kind == OpKind::kMlaAttention)
    return peak_for(gpu, op.dtype == DType::kFp32 ? DType::kFp32 : DType::kBf16);
  // Element-wise work runs on the vector units: the fp32 (non-tensor-core) rate when listed.
  if (auto it = gpu.peak_flops.find(DType::kFp32); it != gpu.peak_flops.end() && it->second > 0) return it->second;
  return peak_for(gpu, DType::kBf16);
}

OpTime op_time(const plan::Op& op, const spec::Gpu& gpu, const CalibrationTable* calibration) {
  OpTime t;
  if (plan::is_communication(op.kind)) {
    t.bound = Bound::kCommunication;
    return t;
  }
  using plan::OpKind;
  if (op.kind == OpKind::kGemm || op.kind == OpKind::kMoeGate)
    t = gemm_op_time(op, gpu);
  else if (op.kind == OpKind::kAttention || op.kind == OpKind::kMlaAttention)
    t = attention_op_time(op, gpu);
  else
    t = elementwise_op_time(op, gpu);
  if (!calibration) calibration = active_calibration();  // `--calibration` / a scenario's `calibration:`
  if (calibration) {
    if (auto measured = calibration->lookup(op, gpu.name)) {
      t.time_s = *measured;
      t.bound = Bound::kCalibrated;
    }
  }
  return t;
}

void finish_time(OpTime& t) {
  const double body = std::max(t.compute_s, t.memory_s);
  t.time_s = body + t.launch_s;
  if (t.launch_s > body)
    t.bound = Bound::kLaunch;
  else
    t.bound = t.compute_s >= t.memory_s ? Bound::kCompute : Bound::kMemory;
}

}  // namespace parasol::cost

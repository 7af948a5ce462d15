// Op cost: the time of one compute op of a Step on one GPU, by roofline x efficiency, or from a calibration table
// (core/cost/calibration.hpp) when it covers the op's kind and shape.
//   time = max(FLOPs / (peak(dtype) x compute efficiency(shape)), bytes / (HBM bandwidth x memory efficiency))
//          + launch overhead
// with compute efficiency = max_compute x m / (m + m_half) for GEMMs (m per expert for grouped GEMMs), the attention
// efficiency for attention, and max_compute for the rest; all parameters from spec::Gpu::eff (topologies/gpus/*.yaml).
// Communication ops (collectives, send/recv) are costed by core/cost/collective_cost.hpp.
// Thread behaviour: pure functions.
#pragma once

#include <string>

#include "core/plan/step.hpp"
#include "core/spec/gpu.hpp"

namespace parasol::cost {

class CalibrationTable;

// What bounds an op's time.
enum class Bound { kCompute, kMemory, kCommunication, kLaunch, kCalibrated };
std::string to_string(Bound b);

struct OpTime {
  double time_s = 0;     // total, launch included
  double compute_s = 0;  // FLOPs / (peak x efficiency)
  double memory_s = 0;   // bytes / (bandwidth x efficiency)
  double comm_s = 0;     // communication ops: transfer + latency
  double launch_s = 0;
  Bound bound = Bound::kLaunch;
};

// Peak FLOP/s the op runs at (GEMMs in their dtype, attention in bf16 or the op's dtype if wider).
double op_peak_flops(const plan::Op& op, const spec::Gpu& gpu);
// Sets time_s = max(compute_s, memory_s) + launch_s and the bound from the components.
void finish_time(OpTime& t);

// Time of a non-communication op: the family models (gemm_cost.hpp, attention_cost.hpp). `calibration` (may be null) overrides it when it covers the op.
OpTime op_time(const plan::Op& op, const spec::Gpu& gpu, const CalibrationTable* calibration = nullptr);

}  // namespace parasol::cost

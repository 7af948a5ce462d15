// GEMM and element-wise op time (spec::GemmParams, spec::ElementwiseParams).
// Owner: cost model. Thread behaviour: pure functions.
#pragma once

#include "core/cost/op_cost.hpp"

namespace parasol::cost {

// kGemm and kMoeGate (dense, batched and grouped expert GEMMs).
OpTime gemm_op_time(const plan::Op& op, const spec::Gpu& gpu);
// Every other compute op that is neither a GEMM nor attention.
OpTime elementwise_op_time(const plan::Op& op, const spec::Gpu& gpu);

}  // namespace parasol::cost

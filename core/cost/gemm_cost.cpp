// GEMM and element-wise op time (gemm_cost.hpp).
#include "core/cost/gemm_cost.hpp"

namespace parasol::cost {

OpTime gemm_op_time(const plan::Op& op, const spec::Gpu& gpu) { return roofline_time(op, gpu); }

OpTime elementwise_op_time(const plan::Op& op, const spec::Gpu& gpu) { return roofline_time(op, gpu); }

}  // namespace parasol::cost

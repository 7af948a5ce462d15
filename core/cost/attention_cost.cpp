// Attention op time (attention_cost.hpp).
#include "core/cost/attention_cost.hpp"

namespace parasol::cost {

OpTime attention_op_time(const plan::Op& op, const spec::Gpu& gpu) { return roofline_time(op, gpu); }

}  // namespace parasol::cost

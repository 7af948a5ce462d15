// Attention op time: prefill (context) and decode (generation), MHA/GQA and MLA (spec::AttentionParams).
// Owner: cost model. Thread behaviour: pure functions.
#pragma once

#include "core/cost/op_cost.hpp"

namespace parasol::cost {

// kAttention and kMlaAttention.
OpTime attention_op_time(const plan::Op& op, const spec::Gpu& gpu);

}  // namespace parasol::cost

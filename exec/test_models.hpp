// Built-in tiny models of each family the executor supports, sized so that every layout of up to 4 ranks divides them
// (TP 2/4, EP 2/4, attention-DP 2, PP 2): the fixtures of the layout tests, the op benchmarks and
// `parasol exec --model builtin:NAME`. Real model files live in scenarios/models/.
//   test-llama:    Llama-like, GQA (8 q heads, 2 KV heads: KV heads are replicated at TP 4), llama3 RoPE scaling;
//   test-mixtral:  Mixtral-like, 8 experts top-2, softmax routing;
//   test-deepseek: DeepSeek-V3-like, MLA (q_lora, kv_lora, rope split), 16 experts top-4 in 4 groups (top 2 groups),
//                  sigmoid scores + correction bias, routed scaling 2.5, 1 shared expert, first layer dense;
//   test-llama-100m: a ~100M-parameter Llama-like model for the CPU decode benchmark.
// Thread behaviour: pure functions.
#pragma once

#include <string>
#include <vector>

#include "core/spec/model.hpp"

namespace parasol::exec {

std::vector<std::string> test_model_names();
// ConfigError for an unknown name (listing the known ones).
spec::Model test_model(const std::string& name);

}  // namespace parasol::exec

// Internal to core/spec/model_*.cpp: what the YAML loader and the HF config.json importer share — the list of
// supported architectures, dtype parsing with a located error, and the cross-field checks every Model passes before
// it leaves a loader. Not part of the public contract; include core/spec/model.hpp instead.
// Thread behaviour: pure functions.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/spec/model.hpp"

namespace parasol::spec::detail {

// HF architecture names we load, in the order error messages list them.
const std::vector<std::string>& supported_architectures();
std::string supported_architectures_text();

// The node's string as a DType ("bf16", "bfloat16", ...); ConfigError listing the choices otherwise.
DType dtype_of(const yaml::Node& n);

// Cross-field checks (kv_heads divides heads, top_k <= experts, groups divide experts, ...). `where(field)` returns
// the node to blame for a canonical field name ("kv_heads", "moe.top_k", "mla.kv_lora_rank", ...).
void validate_model(const Model& m, const std::function<yaml::Node(std::string_view field)>& where);

// Hugging Face config.json import (model_hf.cpp).
Model load_hf_config(const yaml::Node& root);

}  // namespace parasol::spec::detail

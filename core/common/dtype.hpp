// Numeric storage types of weights, KV cache and activations, and their sizes in bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace parasol {

enum class DType { kFp32, kBf16, kFp16, kFp8, kInt8, kInt4 };

constexpr double dtype_bytes(DType t) {
  switch (t) {
    case DType::kFp32:
      return 4.0;
    case DType::kBf16:
    case DType::kFp16:
      return 2.0;
    case DType::kFp8:
    case DType::kInt8:
      return 1.0;
    case DType::kInt4:
      return 0.5;
  }
  return 0.0;
}

std::string_view to_string(DType t);
std::optional<DType> parse_dtype(std::string_view s);  // "fp32" "bf16" "fp16" "fp8" "int8" "int4" (also "float32"...)

}  // namespace parasol

#include "core/common/dtype.hpp"

namespace parasol {

std::string_view to_string(DType t) {
  switch (t) {
    case DType::kFp32:
      return "fp32";
    case DType::kBf16:
      return "bf16";
    case DType::kFp16:
      return "fp16";
    case DType::kFp8:
      return "fp8";
    case DType::kInt8:
      return "int8";
    case DType::kInt4:
      return "int4";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view s) {
  if (s == "fp32" || s == "float32" || s == "float") return DType::kFp32;
  if (s == "bf16" || s == "bfloat16") return DType::kBf16;
  if (s == "fp16" || s == "float16" || s == "half") return DType::kFp16;
  if (s == "fp8" || s == "float8" || s == "fp8_e4m3" || s == "e4m3") return DType::kFp8;
  if (s == "int8") return DType::kInt8;
  if (s == "int4") return DType::kInt4;
  return std::nullopt;
}

}  // namespace parasol

#include "exec/backend.hpp"

#include <algorithm>

#include "core/common/error.hpp"
#include "exec/half.hpp"
#ifndef PARASOL_CUDA_BACKEND_LINKED
#include "exec/plugin.hpp"
#endif

namespace parasol::exec {

// "cuda" comes from the cuda plugin (exec/plugin.hpp), loaded on first use, unless the program was built with the cuda
// backend inside (PARASOL_CUDA_BACKEND_LINKED: the standalone GPU check program, tools/device/CMakeLists.txt).
std::vector<std::string> available_backends() {
  std::vector<std::string> names{"cpu"};
#ifdef PARASOL_CUDA_BACKEND_LINKED
  names.push_back("cuda");
#else
  if (cuda_plugin_built()) names.push_back("cuda");
#endif
  return names;
}

std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& options) {
  if (name == "cpu") return make_cpu_backend(options);
#ifdef PARASOL_CUDA_BACKEND_LINKED
  if (name == "cuda") return make_cuda_backend(options);
#else
  if (name == "cuda") return cuda_plugin().make_backend(options);
#endif
  throw ConfigError("", 0, 0, "--backend", "cpu or cuda", "'" + name + "'");
}

void upload_f32(Backend& b, const std::vector<float>& host, const Tensor& dst) {
  if (static_cast<int64_t>(host.size()) != dst.numel() || !dst.contiguous())
    throw Error("upload_f32: " + std::to_string(host.size()) + " values into " + dst.describe());
  switch (dst.dtype) {
    case ElemType::kF32:
      b.upload(dst.data, host.data(), host.size() * 4);
      return;
    case ElemType::kBf16:
    case ElemType::kF16: {
      std::vector<uint16_t> h(host.size());
      for (size_t i = 0; i < h.size(); ++i)
        h[i] = dst.dtype == ElemType::kBf16 ? f32_to_bf16(host[i]) : f32_to_f16(host[i]);
      b.upload(dst.data, h.data(), h.size() * 2);
      return;
    }
    case ElemType::kI32:
      break;
  }
  throw Error("upload_f32 into " + dst.describe());
}

std::vector<float> download_f32(Backend& b, const Tensor& src) {
  if (!src.contiguous()) throw Error("download_f32 of a strided " + src.describe());
  std::vector<float> out(static_cast<size_t>(src.numel()));
  switch (src.dtype) {
    case ElemType::kF32:
      b.download(out.data(), src.data, out.size() * 4);
      return out;
    case ElemType::kBf16:
    case ElemType::kF16: {
      std::vector<uint16_t> h(out.size());
      b.download(h.data(), src.data, h.size() * 2);
      for (size_t i = 0; i < h.size(); ++i)
        out[i] = src.dtype == ElemType::kBf16 ? bf16_to_f32(h[i]) : f16_to_f32(h[i]);
      return out;
    }
    case ElemType::kI32:
      break;
  }
  throw Error("download_f32 of " + src.describe());
}

void upload_i32(Backend& b, const std::vector<int32_t>& host, const Tensor& dst) {
  if (dst.dtype != ElemType::kI32 || static_cast<int64_t>(host.size()) != dst.numel() || !dst.contiguous())
    throw Error("upload_i32: " + std::to_string(host.size()) + " values into " + dst.describe());
  b.upload(dst.data, host.data(), host.size() * 4);
}

std::vector<int32_t> download_i32(Backend& b, const Tensor& src) {
  if (src.dtype != ElemType::kI32 || !src.contiguous()) throw Error("download_i32 of " + src.describe());
  std::vector<int32_t> out(static_cast<size_t>(src.numel()));
  b.download(out.data(), src.data, out.size() * 4);
  return out;
}

}  // namespace parasol::exec

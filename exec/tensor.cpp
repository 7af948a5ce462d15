#include "exec/tensor.hpp"

#include <sstream>

#include "core/common/error.hpp"
#include "exec/backend.hpp"

namespace parasol::exec {

size_t element_bytes(ElemType t) {
  switch (t) {
    case ElemType::kF32:
    case ElemType::kI32:
      return 4;
    case ElemType::kBf16:
    case ElemType::kF16:
      return 2;
  }
  return 0;
}

std::string to_string(ElemType t) {
  switch (t) {
    case ElemType::kF32:
      return "fp32";
    case ElemType::kBf16:
      return "bf16";
    case ElemType::kF16:
      return "fp16";
    case ElemType::kI32:
      return "int32";
  }
  return "?";
}

ElemType elem_type(DType t) {
  switch (t) {
    case DType::kFp32:
      return ElemType::kF32;
    case DType::kBf16:
      return ElemType::kBf16;
    case DType::kFp16:
      return ElemType::kF16;
    default:
      throw ConfigError("the executor stores weights and KV in fp32, bf16 or fp16, not " + std::string(to_string(t)));
  }
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::stride(int i) const {
  if (i < 0) i += rank();
  if (!strides.empty()) return strides.at(static_cast<size_t>(i));
  int64_t s = 1;
  for (int j = rank() - 1; j > i; --j) s *= shape[static_cast<size_t>(j)];
  return s;
}

bool Tensor::contiguous() const {
  if (strides.empty()) return true;
  int64_t s = 1;
  for (int j = rank() - 1; j >= 0; --j) {
    if (shape[static_cast<size_t>(j)] != 1 && strides[static_cast<size_t>(j)] != s) return false;
    s *= shape[static_cast<size_t>(j)];
  }
  return true;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > dim(0)) throw Error("Tensor::rows out of range on " + describe());
  Tensor t = *this;
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin * stride(0)) * element_bytes(dtype);
  t.shape[0] = end - begin;
  return t;
}

Tensor Tensor::cols(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || end > dim(-1)) throw Error("Tensor::cols out of range on " + describe());
  Tensor t = *this;
  if (t.strides.empty()) {
    t.strides.resize(shape.size());
    for (int i = 0; i < rank(); ++i) t.strides[static_cast<size_t>(i)] = stride(i);
  }
  t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * element_bytes(dtype);
  t.shape.back() = end - begin;
  return t;
}

Tensor Tensor::reshaped(std::vector<int64_t> new_shape) const {
  Tensor t(data, dtype, std::move(new_shape));
  if (!contiguous() || t.numel() != numel()) throw Error("cannot reshape " + describe());
  return t;
}

std::string Tensor::describe() const {
  std::ostringstream os;
  os << to_string(dtype) << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  os << "]";
  if (!contiguous()) os << " (strided)";
  return os.str();
}

Buffer::Buffer(Backend& backend, size_t bytes) : backend_(&backend), bytes_(bytes) {
  data_ = bytes ? backend.allocate(bytes) : nullptr;
}

Buffer::~Buffer() { release(); }

void Buffer::release() {
  if (data_ && backend_) backend_->deallocate(data_);
  data_ = nullptr;
  bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    backend_ = o.backend_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Tensor Buffer::tensor(ElemType t, std::vector<int64_t> shape) const {
  Tensor v(data_, t, std::move(shape));
  if (v.bytes() > bytes_) throw Error("Buffer of " + std::to_string(bytes_) + " bytes cannot hold " + v.describe());
  return v;
}

OwnedTensor::OwnedTensor(Backend& backend, ElemType t, std::vector<int64_t> shape) {
  Tensor probe(nullptr, t, shape);
  buffer = Buffer(backend, probe.bytes());
  view = buffer.tensor(t, std::move(shape));
}

}  // namespace parasol::exec

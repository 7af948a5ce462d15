// Tensor views and owned buffers of a Backend's memory. A Tensor is a non-owning, typed, strided view: `data` lives in
// the memory of the Backend that allocated it (host memory for cpu, device memory for cuda). Strides are in elements;
// the last dimension is always contiguous (stride 1), so a 2-D view with a row stride larger than its width is a set
// of columns cut from a wider matrix (how MLA's latent [c_kv | k_rope] is split without copies). A Buffer owns
// allocations and frees them through its Backend.
// Thread behaviour: plain values; a Buffer must be destroyed before its Backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "core/common/dtype.hpp"

namespace parasol::exec {

class Backend;

// Element types a Tensor can hold: the float storage types the executor computes with, and int32 for token ids,
// KV slots and expert indices. (DType describes model storage for the planner; ElemType is what backends touch.)
enum class ElemType { kF32, kBf16, kF16, kI32 };

size_t element_bytes(ElemType t);
std::string to_string(ElemType t);
// fp32/bf16/fp16 map across; anything else is a ConfigError ("the executor stores weights in fp32, bf16 or fp16").
ElemType elem_type(DType t);

struct Tensor {
  void* data = nullptr;
  ElemType dtype = ElemType::kF32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // elements; empty = contiguous

  Tensor() = default;
  Tensor(void* p, ElemType t, std::vector<int64_t> s) : data(p), dtype(t), shape(std::move(s)) {}
  Tensor(void* p, ElemType t, std::vector<int64_t> s, std::vector<int64_t> st)
      : data(p), dtype(t), shape(std::move(s)), strides(std::move(st)) {}

  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i < 0 ? i + rank() : i)); }
  int rank() const { return static_cast<int>(shape.size()); }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * element_bytes(dtype); }  // of a contiguous tensor
  // Stride of dimension i in elements (contiguous when `strides` is empty).
  int64_t stride(int i) const;
  bool contiguous() const;
  bool empty() const { return data == nullptr || numel() == 0; }

  // A view of rows [begin, end) of dimension 0.
  Tensor rows(int64_t begin, int64_t end) const;
  // A view of columns [begin, end) of the last dimension (keeps the row strides).
  Tensor cols(int64_t begin, int64_t end) const;
  // Same data, new contiguous shape (requires a contiguous tensor with the same element count).
  Tensor reshaped(std::vector<int64_t> new_shape) const;

  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
  std::string describe() const;  // "fp32[4,8]" for error messages
};

// Owned memory of one Backend. Move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Tensor tensor(ElemType t, std::vector<int64_t> shape) const;  // contiguous view (must fit)

 private:
  void release();
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A Buffer with its own typed, contiguous shape: what weights, KV caches and activations are held in.
struct OwnedTensor {
  Buffer buffer;
  Tensor view;
  OwnedTensor() = default;
  OwnedTensor(Backend& backend, ElemType t, std::vector<int64_t> shape);
  const Tensor& operator*() const { return view; }
  const Tensor* operator->() const { return &view; }
};

}  // namespace parasol::exec

// Op conformance of the `cuda` backend against the `cpu` backend (the reference): every Backend op on fresh random
// inputs, in bf16 (tolerance 1e-2) and fp32 (1e-4) relative error ||gpu - cpu|| / ||cpu||, with every output poisoned
// (NaN) first so an unwritten element fails. Shapes cover both the fast bf16 kernels (real head dims, split-K decode,
// chunked prefill, MLA at DeepSeek-V3 dims) and the generic kernels (fp32, odd sizes). Header-only so that the GPU
// check program (tools/device/gpu_check.cpp) and the gtests of tests/gpu share it.
// Thread behaviour: one OpChecker per thread.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "exec/backend.hpp"

namespace parasol::device_check {

using exec::Backend;
using exec::ElemType;
using exec::OwnedTensor;
using exec::Tensor;

struct OpCheck {
  std::string op, shape, dtype;
  double rel_err = 0, tol = 0;
  bool written = true;
  bool ok = false;
};

inline double tol_for(ElemType t) {
  return t == ElemType::kF32 ? 1e-4 : 1e-2;
}

// Relative L2 error; NaN anywhere in `got` makes it infinite (an unwritten, poisoned element).
inline double rel_err(const std::vector<float>& got, const std::vector<float>& ref, bool* written = nullptr) {
  double num = 0, den = 0;
  bool all = got.size() == ref.size();
  for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
    if (std::isnan(got[i])) all = false;
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  if (written) *written = all;
  if (!all) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// A tensor mirrored on both backends.
struct Twin {
  OwnedTensor c, g;
};

class OpChecker {
 public:
  OpChecker(Backend& cpu, Backend& gpu, uint64_t seed) : cpu_(cpu), gpu_(gpu), rng_(seed) {}

  float uniform() { return static_cast<float>(static_cast<double>(rng_() >> 11) * 0x1.0p-53 * 2.0 - 1.0); }
  int64_t below(int64_t n) { return static_cast<int64_t>(rng_() % static_cast<uint64_t>(n)); }

  Twin make(ElemType t, std::vector<int64_t> shape, const std::vector<float>& host) {
    Twin w{OwnedTensor(cpu_, t, shape), OwnedTensor(gpu_, t, shape)};
    exec::upload_f32(cpu_, host, *w.c);
    exec::upload_f32(gpu_, host, *w.g);
    return w;
  }
  Twin random(ElemType t, std::vector<int64_t> shape, float scale = 1.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> h(static_cast<size_t>(n));
    for (auto& v : h) v = scale * uniform();
    return make(t, shape, h);
  }
  Twin poisoned(ElemType t, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return make(t, shape, std::vector<float>(static_cast<size_t>(n), NAN));
  }
  Twin ints(const std::vector<int32_t>& v) {
    const std::vector<int64_t> shape{static_cast<int64_t>(v.size())};
    Twin w{OwnedTensor(cpu_, ElemType::kI32, shape), OwnedTensor(gpu_, ElemType::kI32, shape)};
    exec::upload_i32(cpu_, v, *w.c);
    exec::upload_i32(gpu_, v, *w.g);
    return w;
  }

  // Runs `op` on both backends (first argument: the backend; second: true for the gpu side) and compares `out`.
  void run(const std::string& name, const std::string& shape, ElemType t, const std::function<void(Backend&, bool)>& op,
           Twin& out) {
    op(cpu_, false);
    op(gpu_, true);
    gpu_.synchronize();
    compare(name, shape, t, out);
  }

  void compare(const std::string& name, const std::string& shape, ElemType t, Twin& out) {
    OpCheck r;
    r.op = name;
    r.shape = shape;
    r.dtype = exec::to_string(t);
    r.tol = tol_for(t);
    if (out.c->dtype == ElemType::kI32) {
      const auto a = exec::download_i32(gpu_, *out.g), b = exec::download_i32(cpu_, *out.c);
      int64_t bad = 0;
      for (size_t i = 0; i < a.size(); ++i) bad += a[i] != b[i];
      r.rel_err = a.empty() ? 0.0 : static_cast<double>(bad) / static_cast<double>(a.size());
      r.tol = 0;
      r.ok = bad == 0;
    } else {
      r.rel_err = rel_err(exec::download_f32(gpu_, *out.g), exec::download_f32(cpu_, *out.c), &r.written);
      r.ok = r.written && r.rel_err <= r.tol;
    }
    results_.push_back(r);
  }

  const std::vector<OpCheck>& results() const { return results_; }
  Backend& cpu() { return cpu_; }
  Backend& gpu() { return gpu_; }

  // Paged layout: `pages` pages of `bt` slots, handed to the sequences in a shuffled order.
  exec::SeqBatch seq_batch(const std::vector<int64_t>& q_lens, const std::vector<int64_t>& ctx_lens, int64_t bt,
                           int64_t* slots_out) {
    exec::SeqBatch s;
    s.q_lens = q_lens;
    s.ctx_lens = ctx_lens;
    s.block_tokens = bt;
    int64_t pages = 0;
    for (int64_t c : ctx_lens) pages += (c + bt - 1) / bt;
    pages += 3;  // unused pages too, so a wrong index reads garbage rather than a neighbour
    std::vector<int32_t> order(static_cast<size_t>(pages));
    for (int64_t i = 0; i < pages; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    for (int64_t i = pages - 1; i > 0; --i)
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(below(i + 1))]);
    size_t next = 0;
    for (int64_t c : ctx_lens) {
      std::vector<int32_t> t;
      for (int64_t p = 0; p < (c + bt - 1) / bt; ++p) t.push_back(order[next++]);
      s.block_tables.push_back(t);
    }
    *slots_out = pages * bt;
    return s;
  }

 private:
  Backend& cpu_;
  Backend& gpu_;
  std::mt19937_64 rng_;
  std::vector<OpCheck> results_;
};

inline std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
  return s;
}

// Every op, bf16 and fp32. `big` adds the shapes of real models (seconds on the cpu reference).
void run_all_op_checks(OpChecker& k, bool big);

}  // namespace parasol::device_check

#include "tools/device/op_checks_impl.hpp"

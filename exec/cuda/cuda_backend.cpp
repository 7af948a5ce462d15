// The `cuda` Backend: see cuda_backend.hpp. Each op checks its operands like the cpu backend does, then picks the
// fast bf16 kernel when it applies, else the generic kernel. Errors are RuntimeFailure (device) or Error (bad
// operands), never silent.
#include "exec/cuda/cuda_backend.hpp"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "core/common/error.hpp"
#include "exec/cuda/cuda_check.hpp"
#include "kernels/kernels.cuh"

namespace parasol::exec {
namespace cuda {
namespace {

namespace k = parasol::kernels;

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string("cuda backend: ") + op + ": " + what);
}

void check(cudaError_t e, const char* op) {
  if (e != cudaSuccess) throw RuntimeFailure(std::string("cuda backend: ") + op + ": " + cudaGetErrorString(e));
}

k::Elem elem(ElemType t) {
  switch (t) {
    case ElemType::kBf16:
      return k::Elem::kBf16;
    case ElemType::kF16:
      return k::Elem::kF16;
    case ElemType::kF32:
      return k::Elem::kF32;
    case ElemType::kI32:
      break;
  }
  throw Error("cuda backend: int32 tensor where a float one is expected");
}

cudaDataType_t cuda_type(ElemType t) {
  switch (t) {
    case ElemType::kBf16:
      return CUDA_R_16BF;
    case ElemType::kF16:
      return CUDA_R_16F;
    case ElemType::kF32:
      return CUDA_R_32F;
    case ElemType::kI32:
      break;
  }
  throw Error("cuda backend: no GEMM on int32");
}

int64_t row_stride(const Tensor& t) {
  return t.rank() >= 2 ? t.stride(t.rank() - 2) : t.dim(-1);
}
int64_t rows_of(const Tensor& t) {
  return t.numel() / std::max<int64_t>(1, t.dim(-1));
}

k::Mat mat(const Tensor& t) {
  k::Mat m;
  m.data = t.data;
  m.type = elem(t.dtype);
  m.rows = rows_of(t);
  m.cols = t.dim(-1);
  m.stride = row_stride(t);
  return m;
}

bool all_bf16(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->dtype != ElemType::kBf16) return false;
  return true;
}

bool dense_rows(const Tensor& t) {
  return row_stride(t) == t.dim(-1);
}
bool aligned16(const Tensor& t) {
  return (reinterpret_cast<uintptr_t>(t.data) & 15u) == 0;
}

class CudaEvent : public Event {
 public:
  explicit CudaEvent(int device) : device_(device) {
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaEventCreate(&event_));
  }
  ~CudaEvent() override {
    cudaSetDevice(device_);
    cudaEventDestroy(event_);
  }
  cudaEvent_t get() const { return event_; }

 private:
  int device_;
  cudaEvent_t event_ = nullptr;
};

// A device buffer that grows (never shrinks). Growing frees the old one, which synchronizes the device first.
class Scratch {
 public:
  ~Scratch() {
    if (p_) cudaFree(p_);
  }
  void* get(size_t bytes) {
    if (bytes > bytes_) {
      if (p_) PARASOL_CUDA_CHECK(cudaFree(p_));
      p_ = nullptr;
      bytes_ = std::max(bytes, bytes_ * 2);
      PARASOL_CUDA_CHECK(cudaMalloc(&p_, bytes_));
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& o) : device_(o.device) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
      throw RuntimeFailure("cuda backend: no CUDA device is usable here (driver missing or no GPU)");
    if (device_ < 0 || device_ >= n)
      throw ConfigError("", 0, 0, "device", "a CUDA device ordinal below " + std::to_string(n),
                        std::to_string(device_));
    PARASOL_CUDA_CHECK(cudaSetDevice(device_));
    PARASOL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    PARASOL_CUBLAS_CHECK(cublasCreate(&cublas_));
    PARASOL_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // Pure fp32 for fp32 GEMMs (the conformance bound is 1e-4; TF32 would miss it).
    PARASOL_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  bool host_memory() const override { return false; }
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

  void* allocate(size_t bytes) override {
    use();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 16));
    if (e != cudaSuccess)
      throw RuntimeFailure("cuda backend: cudaMalloc of " + std::to_string(bytes) + " bytes on device " +
                           std::to_string(device_) + ": " + cudaGetErrorString(e));
    return p;
  }
  void deallocate(void* p) override {
    use();
    cudaStreamSynchronize(stream_);
    cudaFree(p);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    use();
    PARASOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    PARASOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    use();
    PARASOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    PARASOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    use();
    if (dst != src && bytes) PARASOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void fill_zero(const Tensor& t) override {
    use();
    if (t.empty()) return;
    const size_t eb = element_bytes(t.dtype);
    PARASOL_CUDA_CHECK(cudaMemset2DAsync(t.data, static_cast<size_t>(row_stride(t)) * eb, 0,
                                         static_cast<size_t>(t.dim(-1)) * eb, static_cast<size_t>(rows_of(t)),
                                         stream_));
  }
  void convert(const Tensor& src, const Tensor& dst) override {
    use();
    require(src.numel() == dst.numel() && src.dim(-1) == dst.dim(-1), "convert",
            src.describe() + " -> " + dst.describe());
    if (src.empty()) return;
    if (src.dtype == dst.dtype) {
      const size_t eb = element_bytes(src.dtype);
      PARASOL_CUDA_CHECK(cudaMemcpy2DAsync(dst.data, row_stride(dst) * eb, src.data, row_stride(src) * eb,
                                           src.dim(-1) * eb, rows_of(src), cudaMemcpyDeviceToDevice, stream_));
      return;
    }
    check(k::g_convert(mat(src), mat(dst), stream_), "convert");
  }

  void embedding(const Tensor& ids, const Tensor& table, int64_t row_begin, const Tensor& out) override {
    use();
    require(ids.dtype == ElemType::kI32 && ids.numel() == rows_of(out) && table.dim(-1) == out.dim(-1), "embedding",
            ids.describe() + " " + table.describe() + " -> " + out.describe());
    if (all_bf16({&table, &out}) && dense_rows(table) && dense_rows(out))
      check(k::embedding(ids.as<int32_t>(), table.as<k::bf16>(), out.as<k::bf16>(), rows_of(out), out.dim(-1),
                         row_begin, rows_of(table), stream_),
            "embedding");
    else
      check(k::g_embedding(ids.as<int32_t>(), mat(table), row_begin, mat(out), stream_), "embedding");
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, const Tensor& out) override {
    use();
    require(x.dim(-1) == w.numel() && rows_of(x) == rows_of(out) && out.dim(-1) == x.dim(-1), "rms_norm",
            x.describe() + " w " + w.describe() + " -> " + out.describe());
    if (all_bf16({&x, &w, &out}) && dense_rows(x) && dense_rows(out))
      check(k::rms_norm(x.as<k::bf16>(), nullptr, w.as<k::bf16>(), out.as<k::bf16>(), rows_of(x), x.dim(-1), eps,
                        stream_),
            "rms_norm");
    else
      check(k::g_rms_norm(mat(x), mat(w), eps, mat(out), stream_), "rms_norm");
  }

  void add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    use();
    require(a.numel() == b.numel() && a.numel() == out.numel(), "add", a.describe() + " + " + b.describe());
    check(k::g_add(mat(a), mat(b), mat(out), stream_), "add");
  }

  void gemm(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) override;

  void add_bias(const Tensor& y, const Tensor& bias) override {
    use();
    require(bias.numel() == y.dim(-1), "add_bias", y.describe() + " + " + bias.describe());
    k::Mat b = mat(bias);
    b.rows = 1;
    b.cols = bias.numel();
    check(k::g_add_bias(mat(y), b, stream_), "add_bias");
  }

  void rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, const RopeParams& p) override {
    use();
    require(x.rank() == 3 && positions.dtype == ElemType::kI32 && positions.numel() == x.dim(0) &&
                inv_freq.dtype == ElemType::kF32 && inv_freq.numel() * 2 == p.rot_dim &&
                p.rot_offset + p.rot_dim <= x.dim(2),
            "rope", x.describe() + " pos " + positions.describe() + " inv_freq " + inv_freq.describe());
    check(k::g_rope(x.data, elem(x.dtype), x.dim(0), x.dim(1), x.stride(0), x.stride(1), p.rot_offset, p.rot_dim,
                    positions.as<int32_t>(), inv_freq.as<float>(), p.interleaved, p.attention_scaling, stream_),
          "rope");
  }

  void silu_and_mul(const Tensor& gu, const Tensor& out) override {
    use();
    const int64_t f = out.dim(-1);
    require(gu.dim(-1) == 2 * f && rows_of(gu) == rows_of(out), "silu_and_mul",
            gu.describe() + " -> " + out.describe());
    if (all_bf16({&gu, &out}) && dense_rows(gu) && dense_rows(out))
      check(k::silu_and_mul(gu.as<k::bf16>(), out.as<k::bf16>(), rows_of(out), f, stream_), "silu_and_mul");
    else
      check(k::g_silu_and_mul(mat(gu), mat(out), stream_), "silu_and_mul");
  }

  void kv_append(const Tensor& src, const Tensor& slots, const Tensor& cache) override {
    use();
    const int64_t w = src.dim(-1);
    require(slots.dtype == ElemType::kI32 && slots.numel() == rows_of(src) &&
                cache.numel() / std::max<int64_t>(1, cache.dim(0)) == w,
            "kv_append", src.describe() + " slots " + slots.describe() + " -> " + cache.describe());
    k::Mat c;
    c.data = cache.data;
    c.type = elem(cache.dtype);
    c.rows = cache.dim(0);
    c.cols = w;
    c.stride = w;
    if (all_bf16({&src, &cache}) && w % 8 == 0 && row_stride(src) % 8 == 0 && aligned16(src) && aligned16(cache))
      check(k::scatter_rows(src.as<k::bf16>(), row_stride(src), slots.as<int32_t>(), cache.as<k::bf16>(), rows_of(src),
                            w, stream_),
            "kv_append");
    else
      check(k::g_scatter_rows(mat(src), slots.as<int32_t>(), c, stream_), "kv_append");
  }

  void attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const SeqBatch& seqs, const HeadMap& hm,
                 float scale, const Tensor& out) override;
  void mla_attention(const Tensor& q, const Tensor& lat, const Tensor& wkvb, const SeqBatch& seqs, int64_t nope,
                     int64_t vd, float scale, const Tensor& out) override;
  void moe_gate(const Tensor& logits, const Tensor& bias, const MoeRouting& r, const Tensor& ids,
                const Tensor& weights) override;

  void gather_rows(const Tensor& src, const Tensor& idx, const Tensor& dst) override {
    use();
    require(idx.dtype == ElemType::kI32 && idx.numel() == rows_of(dst) && src.dim(-1) == dst.dim(-1), "gather_rows",
            src.describe() + " idx " + idx.describe() + " -> " + dst.describe());
    check(k::g_gather_rows(mat(src), idx.as<int32_t>(), mat(dst), stream_), "gather_rows");
  }

  void scatter_add_rows(const Tensor& src, const Tensor& idx, const Tensor& wts, const Tensor& dst) override;

  void argmax(const Tensor& logits, const Tensor& out) override {
    use();
    require(out.dtype == ElemType::kI32 && out.numel() == rows_of(logits), "argmax", logits.describe());
    if (logits.dtype == ElemType::kF32)
      check(k::argmax_f32(logits.as<float>(), row_stride(logits), rows_of(logits), logits.dim(-1), out.as<int32_t>(),
                          nullptr, stream_),
            "argmax");
    else if (logits.dtype == ElemType::kBf16)
      check(k::argmax_bf16(logits.as<k::bf16>(), row_stride(logits), rows_of(logits), logits.dim(-1), out.as<int32_t>(),
                           nullptr, stream_),
            "argmax");
    else
      check(k::g_argmax(mat(logits), out.as<int32_t>(), stream_), "argmax");
  }

  std::unique_ptr<Event> create_event() override { return std::make_unique<CudaEvent>(device_); }
  void record(Event& e) override {
    use();
    PARASOL_CUDA_CHECK(cudaEventRecord(static_cast<CudaEvent&>(e).get(), stream_));
  }
  double elapsed_s(Event& a, Event& b) override {
    use();
    PARASOL_CUDA_CHECK(cudaEventSynchronize(static_cast<CudaEvent&>(b).get()));
    float ms = 0.f;
    PARASOL_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<CudaEvent&>(a).get(), static_cast<CudaEvent&>(b).get()));
    return ms * 1e-3;
  }
  void synchronize() override {
    use();
    PARASOL_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  void use() const { PARASOL_CUDA_CHECK(cudaSetDevice(device_)); }

  // Uploads host int32 arrays into the metadata scratch (stream-ordered, so earlier kernels reading the scratch
  // finish before it is overwritten); returns device pointers in the same order.
  std::vector<int32_t*> upload_meta(const std::vector<const std::vector<int32_t>*>& arrays) {
    size_t total = 0;
    for (const auto* a : arrays) total += (a->size() + 3) / 4 * 4;  // 16-byte aligned pieces
    host_meta_.resize(std::max<size_t>(total, 4));
    std::vector<int32_t*> out;
    auto* base = static_cast<int32_t*>(meta_.get(std::max<size_t>(total, 4) * sizeof(int32_t)));
    size_t off = 0;
    for (const auto* a : arrays) {
      std::copy(a->begin(), a->end(), host_meta_.begin() + static_cast<std::ptrdiff_t>(off));
      out.push_back(base + off);
      off += (a->size() + 3) / 4 * 4;
    }
    // From pageable memory, cudaMemcpyAsync stages the host bytes before returning (CUDA "API synchronization
    // behavior"), so host_meta_ may be reused at once; the device copy itself stays in stream order.
    PARASOL_CUDA_CHECK(
        cudaMemcpyAsync(base, host_meta_.data(), total * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    return out;
  }

  // Flattened SeqBatch metadata for the attention kernels.
  struct SeqMeta {
    std::vector<int32_t> tables, ctx, cu_q, seq_of, pos_of;
    int64_t max_pages = 1, max_q = 0;
    bool all_decode = true;
  };
  static SeqMeta seq_meta(const SeqBatch& s) {
    SeqMeta m;
    const size_t b = s.q_lens.size();
    for (const auto& t : s.block_tables) m.max_pages = std::max<int64_t>(m.max_pages, static_cast<int64_t>(t.size()));
    m.tables.assign(b * static_cast<size_t>(m.max_pages), 0);
    m.cu_q.push_back(0);
    for (size_t i = 0; i < b; ++i) {
      std::copy(s.block_tables[i].begin(), s.block_tables[i].end(),
                m.tables.begin() + static_cast<std::ptrdiff_t>(i * static_cast<size_t>(m.max_pages)));
      m.ctx.push_back(static_cast<int32_t>(s.ctx_lens[i]));
      m.cu_q.push_back(m.cu_q.back() + static_cast<int32_t>(s.q_lens[i]));
      m.max_q = std::max(m.max_q, s.q_lens[i]);
      if (s.q_lens[i] != 1) m.all_decode = false;
      for (int64_t j = 0; j < s.q_lens[i]; ++j) {
        m.seq_of.push_back(static_cast<int32_t>(i));
        m.pos_of.push_back(static_cast<int32_t>(s.ctx_lens[i] - s.q_lens[i] + j));
      }
    }
    return m;
  }

  void gemm_into(const Tensor& x, const Tensor& w, void* y, cudaDataType_t yt, int64_t ldy, bool accumulate);

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  Scratch meta_, work_, tmp_a_, tmp_b_, tmp_c_;
  std::vector<int32_t> host_meta_;
};

// ---- GEMM: y[M, N] = x[M, K] w[N, K]^T (+ y). Column-major view: y^T = w x^T with op(w) = T.
void CudaBackend::gemm_into(const Tensor& x, const Tensor& w, void* y, cudaDataType_t yt, int64_t ldy,
                            bool accumulate) {
  const int64_t m = rows_of(x), kk = x.dim(-1), n = rows_of(w);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  PARASOL_CUBLAS_CHECK(cublasGemmEx(
      cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(kk), &alpha, w.data,
      cuda_type(w.dtype), static_cast<int>(row_stride(w)), x.data, cuda_type(x.dtype), static_cast<int>(row_stride(x)),
      &beta, y, yt, static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate) {
  use();
  const int64_t m = rows_of(x), kk = x.dim(-1), n = rows_of(w);
  require(w.dim(-1) == kk && rows_of(y) == m && y.dim(-1) == n && x.dtype != ElemType::kI32 &&
              w.dtype != ElemType::kI32 && y.dtype != ElemType::kI32,
          "gemm", x.describe() + " x " + w.describe() + "^T -> " + y.describe());
  if (m == 0 || n == 0) return;
  // Same input types: cuBLAS takes (bf16|fp16, bf16|fp16 -> same or fp32) and (fp32 -> fp32) directly.
  auto f32_view = [&](const Tensor& t, Scratch& s) {
    Tensor v(s.get(static_cast<size_t>(rows_of(t) * t.dim(-1)) * 4), ElemType::kF32, {rows_of(t), t.dim(-1)});
    check(k::g_convert(mat(t), mat(v), stream_), "gemm (convert)");
    return v;
  };
  Tensor xa = x, wa = w;
  if (x.dtype != w.dtype) {  // mixed inputs: compute in fp32
    if (x.dtype != ElemType::kF32) xa = f32_view(x, tmp_a_);
    if (w.dtype != ElemType::kF32) wa = f32_view(w, tmp_b_);
  }
  const bool direct = y.dtype == xa.dtype || y.dtype == ElemType::kF32;
  if (direct) {
    gemm_into(xa, wa, y.data, cuda_type(y.dtype), row_stride(y), accumulate);
    return;
  }
  // fp32 inputs into a 16-bit y: fp32 result, then one rounding.
  Tensor tmp(tmp_c_.get(static_cast<size_t>(m * n) * 4), ElemType::kF32, {m, n});
  if (accumulate) check(k::g_convert(mat(y), mat(tmp), stream_), "gemm (convert)");
  gemm_into(xa, wa, tmp.data, CUDA_R_32F, n, accumulate);
  check(k::g_convert(mat(tmp), mat(y), stream_), "gemm (convert)");
}

// ---- attention
void CudaBackend::attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const SeqBatch& seqs,
                            const HeadMap& hm, float scale, const Tensor& out) {
  use();
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), Hkv = kc.dim(1), Dv = vc.dim(2);
  require(q.rank() == 3 && kc.rank() == 3 && vc.rank() == 3 && kc.dim(2) == D && out.dim(0) == T &&
              out.numel() == T * H * Dv && seqs.tokens() == T && kc.contiguous() && vc.contiguous() &&
              out.contiguous() && q.stride(2) == 1,
          "attention", "q " + q.describe() + " k " + kc.describe() + " v " + vc.describe() + " out " + out.describe());
  if (T == 0) return;
  const SeqMeta m = seq_meta(seqs);
  const k::HeadMapping map{hm.group, hm.q_head_offset, hm.kv_head_offset};
  const int64_t B = static_cast<int64_t>(seqs.q_lens.size());
  const bool fast = all_bf16({&q, &kc, &vc, &out}) && D == Dv && q.stride(1) == D && q.stride(0) % 8 == 0 &&
                    aligned16(q) && aligned16(kc) && aligned16(vc) && aligned16(out);
  if (fast && m.all_decode && (D == 64 || D == 128 || D == 256)) {
    auto p = upload_meta({&m.tables, &m.ctx});
    const int64_t max_ctx = seqs.max_ctx();
    const size_t ws = k::decode_attention_workspace_bytes(B, H, D, max_ctx);
    void* w = ws ? work_.get(ws) : nullptr;
    check(k::decode_attention(q.as<k::bf16>(), q.stride(0), kc.as<k::bf16>(), vc.as<k::bf16>(), Hkv * D, p[0],
                              m.max_pages, p[1], max_ctx, out.as<k::bf16>(), B, H, Hkv, map, D, seqs.block_tokens,
                              scale, w, ws, stream_),
          "attention (decode)");
    return;
  }
  if (fast && (D == 64 || D == 128)) {
    auto p = upload_meta({&m.tables, &m.ctx, &m.cu_q});
    check(k::prefill_attention(q.as<k::bf16>(), q.stride(0), kc.as<k::bf16>(), vc.as<k::bf16>(), Hkv * D, p[0],
                               m.max_pages, p[2], p[1], m.max_q, out.as<k::bf16>(), B, H, Hkv, map, D,
                               seqs.block_tokens, scale, stream_),
          "attention (prefill)");
    return;
  }
  auto p = upload_meta({&m.tables, &m.seq_of, &m.pos_of});
  const k::AttnOperand qo{q.data, elem(q.dtype), q.stride(0), q.stride(1)};
  const k::AttnOperand ko{kc.data, elem(kc.dtype), Hkv * D, D};
  const k::AttnOperand vo{vc.data, elem(vc.dtype), Hkv * Dv, Dv};
  check(k::g_attention(qo, ko, vo, out.data, elem(out.dtype), T, H, D, Dv, map, p[1], p[2], p[0], m.max_pages,
                       seqs.block_tokens, scale, stream_),
        "attention (generic)");
}

void CudaBackend::mla_attention(const Tensor& q, const Tensor& lat, const Tensor& wkvb, const SeqBatch& seqs,
                                int64_t nope, int64_t vd, float scale, const Tensor& out) {
  use();
  const int64_t T = q.dim(0), H = q.dim(1), R = q.dim(2) - nope, L = lat.dim(1) - R;
  require(q.rank() == 3 && lat.rank() == 2 && wkvb.dim(0) == H * (nope + vd) && wkvb.dim(1) == L &&
              out.numel() == T * H * vd && seqs.tokens() == T && lat.contiguous() && wkvb.contiguous() &&
              out.contiguous() && q.stride(2) == 1,
          "mla_attention", "q " + q.describe() + " latent " + lat.describe() + " kv_b " + wkvb.describe());
  if (T == 0) return;
  const SeqMeta m = seq_meta(seqs);
  const bool fast = all_bf16({&q, &lat, &wkvb, &out}) && L == 512 && R == 64 && T <= 65535 && aligned16(lat);
  if (!fast) {
    auto p = upload_meta({&m.tables, &m.seq_of, &m.pos_of});
    const k::AttnOperand qo{q.data, elem(q.dtype), q.stride(0), q.stride(1)};
    check(k::g_mla_attention(qo, lat.data, elem(lat.dtype), wkvb.data, elem(wkvb.dtype), out.data, elem(out.dtype), T,
                             H, nope, R, L, vd, p[1], p[2], p[0], m.max_pages, seqs.block_tokens, scale, stream_),
          "mla_attention (generic)");
    return;
  }
  // Absorbed form: q_abs[t, h] = [q_nope W_uk_h | q_rope] (576 wide), attention over the latent, then W_uv_h.
  const int64_t W = L + R;
  const size_t qa_bytes = static_cast<size_t>(T * H * W) * 2, ol_bytes = static_cast<size_t>(T * H * L) * 2;
  auto* qa = static_cast<k::bf16*>(tmp_a_.get(qa_bytes));
  auto* ol = static_cast<k::bf16*>(tmp_b_.get(ol_bytes));
  const float one = 1.0f, zero = 0.0f;
  const auto* wb = wkvb.as<k::bf16>();
  // [T, nope] x W_uk_h [nope, L] per head (column-major: q_abs^T = W_uk_h^T-as-stored x q_nope^T).
  PARASOL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(L), static_cast<int>(T), static_cast<int>(nope), &one, wb,
      CUDA_R_16BF, static_cast<int>(L), (nope + vd) * L, q.data, CUDA_R_16BF, static_cast<int>(q.stride(0)),
      q.stride(1), &zero, qa, CUDA_R_16BF, static_cast<int>(H * W), W, static_cast<int>(H), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
  // The rope part: rows of R elements, one per (t, h) — one 2-D copy when the tokens are evenly spaced.
  if (q.stride(0) == H * q.stride(1)) {
    PARASOL_CUDA_CHECK(cudaMemcpy2DAsync(qa + L, W * 2, q.as<k::bf16>() + nope, q.stride(1) * 2, R * 2, T * H,
                                         cudaMemcpyDeviceToDevice, stream_));
  } else {
    for (int64_t t = 0; t < T; ++t)
      PARASOL_CUDA_CHECK(cudaMemcpy2DAsync(qa + t * H * W + L, W * 2, q.as<k::bf16>() + t * q.stride(0) + nope,
                                           q.stride(1) * 2, R * 2, H, cudaMemcpyDeviceToDevice, stream_));
  }
  auto p = upload_meta({&m.tables, &m.ctx, &m.cu_q});
  const int64_t max_ctx = seqs.max_ctx();
  const size_t ws = k::mla_workspace_bytes(T, H, max_ctx);
  void* w = ws ? work_.get(ws) : nullptr;
  check(k::mla_attention(qa, H * W, lat.as<k::bf16>(), p[0], m.max_pages, p[2], p[1], m.max_q, max_ctx, ol,
                         static_cast<int64_t>(seqs.q_lens.size()), T, H, seqs.block_tokens, scale, w, ws, stream_),
        "mla_attention");
  // out[t, h] = o_lat[t, h] W_uv_h^T.
  PARASOL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(vd), static_cast<int>(T), static_cast<int>(L), &one,
      wb + nope * L, CUDA_R_16BF, static_cast<int>(L), (nope + vd) * L, ol, CUDA_R_16BF, static_cast<int>(H * L), L,
      &zero, out.data, CUDA_R_16BF, static_cast<int>(H * vd), vd, static_cast<int>(H), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::moe_gate(const Tensor& logits, const Tensor& bias, const MoeRouting& r, const Tensor& ids,
                           const Tensor& weights) {
  use();
  const int64_t T = logits.dim(0), E = logits.dim(1), K = r.top_k;
  require(logits.dtype == ElemType::kF32 && ids.dtype == ElemType::kI32 && ids.numel() == T * K &&
              weights.numel() == T * K && K <= E && E % r.n_group == 0 && r.topk_group <= r.n_group &&
              (bias.empty() || bias.numel() == E) && dense_rows(logits) && ids.contiguous() && weights.contiguous(),
          "moe_gate", logits.describe() + " top_k " + std::to_string(K));
  require(E <= 1024 && K <= 32 && r.n_group <= 32, "moe_gate", "the cuda router handles <= 1024 experts, top_k <= 32");
  if (T == 0) return;
  float* w = weights.dtype == ElemType::kF32 ? weights.as<float>()
                                             : static_cast<float*>(tmp_a_.get(static_cast<size_t>(T * K) * 4));
  if (!r.sigmoid) {
    check(k::moe_topk_softmax(logits.as<float>(), T, E, K, r.norm_topk_prob, r.routed_scaling_factor, ids.as<int32_t>(),
                              w, stream_),
          "moe_gate");
  } else {
    const float* b = nullptr;
    if (!bias.empty()) {
      if (bias.dtype == ElemType::kF32) {
        b = bias.as<float>();
      } else {
        Tensor bf(tmp_b_.get(static_cast<size_t>(E) * 4), ElemType::kF32, {1, E});
        Tensor bv(bias.data, bias.dtype, {1, E});
        check(k::g_convert(mat(bv), mat(bf), stream_), "moe_gate (bias)");
        b = bf.as<float>();
      }
    }
    const int64_t groups = r.n_group > 1 ? r.n_group : 1, keep = r.n_group > 1 ? r.topk_group : 1;
    check(k::moe_topk_sigmoid_grouped(logits.as<float>(), b, T, E, K, groups, keep, r.norm_topk_prob,
                                      r.routed_scaling_factor, ids.as<int32_t>(), w, stream_),
          "moe_gate");
  }
  if (weights.dtype != ElemType::kF32) {
    Tensor wf(w, ElemType::kF32, {T, K});
    Tensor wo(weights.data, weights.dtype, {T, K});
    check(k::g_convert(mat(wf), mat(wo), stream_), "moe_gate (weights)");
  }
}

void CudaBackend::scatter_add_rows(const Tensor& src, const Tensor& idx, const Tensor& wts, const Tensor& dst) {
  use();
  require(idx.dtype == ElemType::kI32 && idx.numel() == rows_of(src) && src.dim(-1) == dst.dim(-1) &&
              (wts.empty() || wts.numel() == idx.numel()),
          "scatter_add_rows", src.describe() + " idx " + idx.describe() + " -> " + dst.describe());
  const int64_t n = idx.numel();
  if (n == 0) return;
  // The sum order is the src row order (cpu semantics): group src rows by target, ascending, on the host.
  std::vector<int32_t> h(static_cast<size_t>(n));
  download(h.data(), idx.data, static_cast<size_t>(n) * 4);
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return h[a] < h[b]; });
  std::vector<int32_t> offsets{0}, targets;
  for (size_t i = 0; i < order.size(); ++i) {
    const int32_t r = h[static_cast<size_t>(order[i])];
    require(r >= 0 && r < rows_of(dst), "scatter_add_rows", "row index out of range");
    if (targets.empty() || targets.back() != r) {
      if (!targets.empty()) offsets.push_back(static_cast<int32_t>(i));
      targets.push_back(r);
    }
  }
  offsets.push_back(static_cast<int32_t>(n));
  const float* w = nullptr;
  if (!wts.empty()) {
    if (wts.dtype == ElemType::kF32 && wts.contiguous()) {
      w = wts.as<float>();
    } else {
      Tensor wf(tmp_a_.get(static_cast<size_t>(n) * 4), ElemType::kF32, {1, n});
      Tensor wv(wts.data, wts.dtype, {1, n});
      check(k::g_convert(mat(wv), mat(wf), stream_), "scatter_add_rows (weights)");
      w = wf.as<float>();
    }
  }
  auto p = upload_meta({&offsets, &order, &targets});
  check(k::g_scatter_add_rows(mat(src), p[0], p[1], p[2], static_cast<int64_t>(targets.size()), w, mat(dst), stream_),
        "scatter_add_rows");
}

CudaBackend& as_cuda(Backend& b) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  if (!c) throw RuntimeFailure("expected the cuda backend, got '" + b.name() + "'");
  return *c;
}

}  // namespace

cudaStream_t stream_of(Backend& backend) {
  return as_cuda(backend).stream();
}
int device_of(Backend& backend) {
  return as_cuda(backend).device();
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

}  // namespace cuda

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  return std::make_unique<cuda::CudaBackend>(options);
}

}  // namespace parasol::exec

// Backend: where the ops of a Step run (in the spirit of ggml-backend). A backend owns memory (allocate / copy /
// free), runs the compute ops of a Step on Tensors in that memory, records timing events and synchronizes. `cpu` is the
// reference (fp32 math, bf16/fp16 storage accepted wherever a weight or cache is read; BLAS sgemm for GEMMs);
// `cuda` (exec/cuda/, owned by the cuda helper) implements the same interface. Every op is checked against cpu by the
// op-conformance test (tests/exec/op_conformance_test.cpp), so an op's contract is what the cpu backend does.
//
// Conventions for every op:
//   - activations are row-major [tokens, ...]; a Tensor may have a row stride (see tensor.hpp), the last dim is dense;
//   - weights follow Hugging Face's layout: a linear layer is W [out, in] and computes y = x W^T;
//   - int32 tensors (ElemType::kI32) hold token ids, positions, KV slots and expert ids;
//   - ops are asynchronous with respect to the host on device backends; results are visible after synchronize() or to
//     later ops of the same backend. Host-side metadata (SeqBatch, params) is read during the call only.
// Thread behaviour: one Backend per rank; a Backend is used by one thread at a time. Distinct Backends (ranks as threads
// of the local communicator) are independent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "exec/tensor.hpp"

namespace parasol::exec {

// The sequences of one rank's batch, for attention and KV-cache ops. Query tokens are concatenated sequence by
// sequence; query token i of sequence s sits at position ctx_lens[s] - q_lens[s] + i and attends (causally) to
// positions 0 .. its own. KV slot of position p of sequence s: block_tables[s][p / block_tokens] * block_tokens +
// p % block_tokens.
struct SeqBatch {
  std::vector<int64_t> q_lens;
  std::vector<int64_t> ctx_lens;  // cached + new, after this step
  std::vector<std::vector<int32_t>> block_tables;
  int64_t block_tokens = 16;

  // Inline: the cuda plugin uses them and links nothing of parasol_exec.
  int64_t tokens() const {
    int64_t t = 0;
    for (int64_t q : q_lens) t += q;
    return t;
  }
  int64_t max_ctx() const {
    int64_t m = 0;
    for (int64_t c : ctx_lens) m = c > m ? c : m;
    return m;
  }
};

// Which KV head serves a local query head: kv = (q_head_offset + i) / group - kv_head_offset (HF repeat_kv order:
// KV head j serves query heads j*group .. j*group+group-1, global numbering).
struct HeadMap {
  int64_t group = 1;           // n_heads / n_kv_heads of the model
  int64_t q_head_offset = 0;   // global index of this rank's first query head
  int64_t kv_head_offset = 0;  // global index of this rank's first KV head
};

struct RopeParams {
  int64_t rot_offset = 0;    // first rotated column within a head
  int64_t rot_dim = 0;       // rotated columns (even)
  bool interleaved = false;  // DeepSeek rope_interleave: pairs (2i, 2i+1) are de-interleaved, output half-split
  float attention_scaling = 1.0f;  // multiplies cos and sin (HF attention_scaling)
};

struct MoeRouting {
  int64_t top_k = 1;
  bool sigmoid = false;       // false: softmax over all experts (Mixtral); true: sigmoid (DeepSeek-V3)
  bool norm_topk_prob = true;
  int64_t n_group = 1;        // group-limited routing: experts in n_group groups, ...
  int64_t topk_group = 1;     // ... only the best topk_group groups (by sum of their top-2 scores) eligible
  float routed_scaling_factor = 1.0f;
};

// Timing event on the backend's stream (opaque to callers).
class Event {
 public:
  virtual ~Event() = default;
};

struct BackendOptions {
  int device = 0;    // cuda: device ordinal; cpu: ignored
  int threads = 0;   // cpu: BLAS threads (0 = leave the BLAS default)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // True when op inputs/outputs live in host memory (communicators local and mpi need it; nccl needs device memory).
  virtual bool host_memory() const = 0;

  // ---- memory
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // within this backend
  virtual void fill_zero(const Tensor& t) = 0;
  // dst = src converted element-wise (same shape; f32/bf16/f16 in any pair; strided rows allowed on both).
  virtual void convert(const Tensor& src, const Tensor& dst) = 0;

  // ---- ops of a Step (OpKind in core/plan/step.hpp in brackets)
  // [kEmbedding] out[t] = table[ids[t] - row_begin] when row_begin <= ids[t] < row_begin + rows, else 0
  // (vocab-parallel embedding; the caller all-reduces). ids: i32 [T]; table [rows, H]; out [T, H].
  virtual void embedding(const Tensor& ids, const Tensor& table, int64_t row_begin, const Tensor& out) = 0;
  // [kRmsNorm] HF LlamaRMSNorm: x32 = x; y = weight * (x32 * rsqrt(mean(x32^2) + eps)) cast to out's type before the
  // weight multiply. x, out [R, W] (may alias; strided rows allowed); weight [W].
  virtual void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
  // out = a + b, same shapes (the residual add; may alias).
  virtual void add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // [kGemm] y = x W^T (+ y when accumulate). x [M, K], w [N, K], y [M, N]; strided rows allowed for x and y.
  virtual void gemm(const Tensor& x, const Tensor& w, const Tensor& y, bool accumulate = false) = 0;
  // y[m, :] += bias (Qwen2 qkv bias). y [M, N], bias [N].
  virtual void add_bias(const Tensor& y, const Tensor& bias) = 0;
  // [kRope] In place on x [T, heads, head_dim] (strided tokens/heads allowed), columns [rot_offset, rot_offset +
  // rot_dim) of each head, at positions (i32 [T]); inv_freq f32 [rot_dim / 2] (host-computed, llama3 scaling included).
  // Half-split (HF rotate_half): x1 = x[:d/2], x2 = x[d/2:]; out = (x1 c - x2 s, x2 c + x1 s), angle = pos * inv_freq
  // in fp32.
  virtual void rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, const RopeParams& p) = 0;
  // [kActivation] out = silu(gate) * up with gate_up [T, 2F] = [gate | up]; out [T, F].
  virtual void silu_and_mul(const Tensor& gate_up, const Tensor& out) = 0;
  // [kKvAppend] cache[slots[t], :] = src[t, :]. src [T, W] (strided rows allowed); slots i32 [T]; cache [S, W].
  virtual void kv_append(const Tensor& src, const Tensor& slots, const Tensor& cache) = 0;
  // [kAttention] Causal attention over the paged cache. q [T, Hq, D]; k_cache [S, Hkv, D]; v_cache [S, Hkv, Dv];
  // out [T, Hq, Dv]. P = softmax(q k^T * scale) in fp32; out = P v.
  virtual void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const SeqBatch& seqs,
                         const HeadMap& heads, float scale, const Tensor& out) = 0;
  // [kMlaAttention] DeepSeek MLA over a latent cache, absorbed form. q [T, H, nope + rope] (rope part already
  // rotated); latent [S, L + rope] = [normed c_kv | rotated k_rope]; w_kv_b [H * (nope + v), L] (this rank's heads of
  // kv_b_proj); out [T, H, v]. score = (q_nope W_uk_h) . c_kv + q_rope . k_rope, scaled; out = (P c_kv) W_uv_h^T.
  virtual void mla_attention(const Tensor& q, const Tensor& latent, const Tensor& w_kv_b, const SeqBatch& seqs,
                             int64_t nope_dim, int64_t v_dim, float scale, const Tensor& out) = 0;
  // [kMoeGate] Routing from router logits f32 [T, E] (already x W_r^T in fp32). bias f32 [E] (DeepSeek-V3
  // e_score_correction_bias) or empty. ids i32 [T, top_k]; weights f32 [T, top_k]. HF numerics:
  //   softmax: p = softmax(logits); top-k of p; renormalize when norm_topk_prob; times routed_scaling_factor.
  //   sigmoid: s = sigmoid(logits); c = s + bias; group score = sum of top-2 of c per group; keep the best topk_group
  //            groups (c of the others set to 0); ids = top-k of c; w = s[ids]; w /= sum + 1e-20 when norm; w *= factor.
  // Ties pick the lower expert id.
  virtual void moe_gate(const Tensor& logits, const Tensor& bias, const MoeRouting& r, const Tensor& ids,
                        const Tensor& weights) = 0;
  // [kMoeDispatch] dst[n] = src[idx[n]]. src [T, W]; idx i32 [N]; dst [N, W].
  virtual void gather_rows(const Tensor& src, const Tensor& idx, const Tensor& dst) = 0;
  // [kMoeCombine] for n in order 0..N-1: dst[idx[n]] += weights[n] * src[n]. src [N, W]; idx i32 [N]; weights f32 [N]
  // (empty = all 1); dst [T, W]. Sequential in n, so the sum order is the order of src rows.
  virtual void scatter_add_rows(const Tensor& src, const Tensor& idx, const Tensor& weights, const Tensor& dst) = 0;
  // [kSample] Greedy: out[t] = argmax(logits[t]) (lowest index on ties). logits f32 [T, V]; out i32 [T].
  virtual void argmax(const Tensor& logits, const Tensor& out) = 0;

  // ---- timing and ordering
  virtual std::unique_ptr<Event> create_event() = 0;
  virtual void record(Event& e) = 0;
  // Seconds between two recorded events; synchronizes as needed.
  virtual double elapsed_s(Event& start, Event& end) = 0;
  virtual void synchronize() = 0;
};

// "cpu" (always) or "cuda". "cuda" lives in the cuda plugin, libparasol_cuda.so, loaded on first use (exec/plugin.hpp);
// when it cannot be loaded make_backend throws a ConfigError saying which files were tried and why each failed.
// Unknown names are a ConfigError. available_backends(): "cpu", plus "cuda" when this build produced the plugin.
std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& options = {});
std::vector<std::string> available_backends();

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options);
#ifdef PARASOL_HAVE_CUDA_BACKEND
// Implemented in exec/cuda/ (in the plugin, and in programs that link the cuda library directly).
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);
#endif

// Host-side helpers (used by weight loaders and tests): tensor <-> std::vector<float> through the backend.
void upload_f32(Backend& b, const std::vector<float>& host, const Tensor& dst);  // converts to dst's type
std::vector<float> download_f32(Backend& b, const Tensor& src);                  // converts from src's type
void upload_i32(Backend& b, const std::vector<int32_t>& host, const Tensor& dst);
std::vector<int32_t> download_i32(Backend& b, const Tensor& src);

}  // namespace parasol::exec

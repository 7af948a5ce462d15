// parasol_kernels: the CUDA kernels of the executor's `cuda` backend, behind plain host launchers. Pointers and shapes
// in, cudaError_t out; nothing of parasol's core is visible here, so this header can be included by host C++ (g++) and
// the kernels can be reused by any caller. Storage is bf16 (__nv_bfloat16) and accumulation fp32 throughout; numerics
// follow Hugging Face transformers (see the notes per launcher). Every launcher is asynchronous on `stream`, returns
// cudaErrorInvalidValue for shapes it does not support (checked on the host, before anything is launched) and otherwise
// the launch error (cudaGetLastError). Launchers never allocate and never synchronize, so they are graph-capturable.
// Thread behaviour: launchers are reentrant; the only shared state is a per-device cache of the multiprocessor count.
//
// Layouts (those of exec/backend.hpp, which the `cuda` backend maps onto these launchers):
//   activations      row-major [tokens, features]; q as [tokens, heads, head_dim] with a token stride
//   paged KV cache   K and V each [slots, kv_heads, head_dim], slot = page * page_size + offset; block_tables
//                    [batch, max_pages] int32 names the page of tokens [i * page_size, (i + 1) * page_size) of a
//                    sequence
//   MLA latent cache [slots, 576] (kv_lora_rank 512 + qk_rope_head_dim 64)
// Two families: fast kernels on bf16 (16-byte vectorized, tensor cores for attention), and generic kernels (prefix g_)
// that take any of fp32/bf16/fp16 per operand, strided rows and any size, and mirror the cpu backend's rounding
// points; the backend uses the fast ones when the operands allow and the generic ones otherwise.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace parasol::kernels {

using bf16 = __nv_bfloat16;

// ---- elementwise / row-wise (elementwise.cu) ----------------------------------------------------------------------

// out[t, :] = table[ids[t] - vocab_start, :] when the id falls in this shard's rows [vocab_start, vocab_start +
// vocab_rows), else zeros (vocab-parallel embedding: the TP all-reduce then sums the shards).
cudaError_t embedding(const int32_t* ids, const bf16* table, bf16* out, int64_t tokens, int64_t hidden,
                      int64_t vocab_start, int64_t vocab_rows, cudaStream_t stream);

// RMSNorm with an optional fused residual add (HF order): when `residual` is non-null, h = bf16(x + residual) is
// written back to `residual` and normalized; else h = x. out = bf16(w * bf16(h * rsqrt(mean(h^2) + eps))).
// `out` may alias `x`. Contiguous rows; 16-byte vectorized when hidden % 8 == 0.
cudaError_t rms_norm(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t rows, int64_t hidden,
                     float eps, cudaStream_t stream);

// Host helper: the rotary inverse frequencies (HF _compute_default / _compute_llama3_parameters), fp32, rot_dim / 2
// of them written to `inv_freq_host`. scaling_type: 0 none, 1 llama3 (factor, low/high_freq_factor, original max
// positions).
struct RopeParams {
  double theta = 10000.0;
  int scaling_type = 0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position = 8192.0;
};
void rope_inv_freq(const RopeParams& params, int64_t rot_dim, float* inv_freq_host);

// out[r, :] = bf16(bf16(silu(x[r, :d])) * x[r, d:2d]) (gate | up fused; silu rounded as HF's bf16 act_fn does),
// x [rows, 2d], out [rows, d], contiguous.
cudaError_t silu_and_mul(const bf16* x, bf16* out, int64_t rows, int64_t d, cudaStream_t stream);

// dst[slots[r], :] = src[r, :] for r < rows (paged KV append: K and V are two calls); src row stride in elements, dst
// rows of `width` contiguous elements; a negative slot skips the row.
cudaError_t scatter_rows(const bf16* src, int64_t src_stride, const int32_t* slots, bf16* dst, int64_t rows,
                         int64_t width, cudaStream_t stream);

// Per row: the largest value and its index (lowest index on ties; NaN never wins). logits [rows, n] bf16 or fp32,
// row stride in elements. out_value may be null. Vocab-parallel callers add their shard's offset to the index.
cudaError_t argmax_bf16(const bf16* logits, int64_t row_stride, int64_t rows, int64_t n, int32_t* out_index,
                        float* out_value, cudaStream_t stream);
cudaError_t argmax_f32(const float* logits, int64_t row_stride, int64_t rows, int64_t n, int32_t* out_index,
                       float* out_value, cudaStream_t stream);

// out[i] = sum_j inputs[j][i] (fp32 accumulation in input order, so the result is deterministic). `inputs` is a HOST
// array of `count` (<= kMaxSumInputs) device pointers, passed to the kernel by value; out may alias one of them. Used
// by the device-local communicator.
constexpr int kMaxSumInputs = 16;
cudaError_t sum_bf16(const bf16* const* inputs, int count, bf16* out, int64_t n, cudaStream_t stream);
cudaError_t sum_f32(const float* const* inputs, int count, float* out, int64_t n, cudaStream_t stream);

// out[r, c] = bf16(x[r, c] + bias[c]) (Qwen2's qkv bias), in place allowed.
cudaError_t add_bias(const bf16* x, const bf16* bias, bf16* out, int64_t rows, int64_t cols, cudaStream_t stream);

// Conversions and fills (tests, synthetic weights).
cudaError_t convert_f32_to_bf16(const float* in, bf16* out, int64_t n, cudaStream_t stream);
cudaError_t convert_bf16_to_f32(const bf16* in, float* out, int64_t n, cudaStream_t stream);
// Deterministic pseudo-random fill: out[i] = bf16(scale * u) with u uniform in [-1, 1) from a hash of (seed, i).
cudaError_t fill_random_bf16(bf16* out, int64_t n, uint64_t seed, float scale, cudaStream_t stream);
cudaError_t fill_bf16(bf16* out, int64_t n, float value, cudaStream_t stream);

// ---- attention over the paged KV cache (decode_attention.cu, prefill_attention.cu) --------------------------------

// Query head mapping (exec HeadMap): local query head h reads local KV head (q_head_offset + h) / group -
// kv_head_offset (HF repeat_kv order, global numbering), so tensor-parallel shards keep the unsharded pairing.
struct HeadMapping {
  int64_t group = 1;
  int64_t q_head_offset = 0;
  int64_t kv_head_offset = 0;
};

// Decode (one query token per sequence), GQA: q [batch, heads, head_dim] (token stride q_stride elements), out
// [batch, heads, head_dim] contiguous. K/V element (slot, kv head, d) at slot * kv_slot_stride + kvh * head_dim + d.
// ctx_lens [batch] counts the cached tokens including the current one (already appended). block_tables
// [batch, max_pages] int32. Long contexts are split over several blocks (flash-decoding) whose partial results a
// second kernel merges; the split needs `workspace` of decode_attention_workspace_bytes(...) bytes (with less, fewer
// splits). `max_ctx` (host) bounds ctx_lens and sizes the split. head_dim: 64, 128 or 256.
size_t decode_attention_workspace_bytes(int64_t batch, int64_t heads, int64_t head_dim, int64_t max_ctx);
cudaError_t decode_attention(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                             int64_t kv_slot_stride, const int32_t* block_tables, int64_t max_pages,
                             const int32_t* ctx_lens, int64_t max_ctx, bf16* out, int64_t batch, int64_t heads,
                             int64_t kv_heads, HeadMapping map, int64_t head_dim, int64_t page_size, float scale,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream);

// Prefill / chunked prefill, causal, tiled flash attention on tensor cores (mma.sync bf16, fp32 accumulate). Queries
// are packed over sequences: q [total_q, heads, head_dim] (token stride q_stride), cu_q_lens [batch + 1] (device,
// exclusive prefix sums of q_lens). Sequence b's queries are its last q_len tokens: query i sits at position
// ctx_lens[b] - q_len + i and attends keys 0..that position from the paged cache (new K/V appended beforehand).
// out [total_q, heads, head_dim] contiguous. max_q_len (host) sizes the grid. head_dim 64 or 128.
cudaError_t prefill_attention(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                              int64_t kv_slot_stride, const int32_t* block_tables, int64_t max_pages,
                              const int32_t* cu_q_lens, const int32_t* ctx_lens, int64_t max_q_len, bf16* out,
                              int64_t batch, int64_t heads, int64_t kv_heads, HeadMapping map, int64_t head_dim,
                              int64_t page_size, float scale, cudaStream_t stream);

// ---- MLA (mla.cu) -------------------------------------------------------------------------------------------------

// DeepSeek MLA in its absorbed (MQA) form, on tensor cores: every head attends the one shared latent per token.
// q [total_q, heads, 576] = [q_nope . W_UK (512) | q_rope (64)] (token stride q_stride), latent cache as above with
// latent_dim = 576; out [total_q, heads, 512] = softmax(q . c^T * scale) . c[:, :512] (the caller applies W_UV).
// Queries are packed like prefill_attention (cu_q_lens; causal, so decode is q_len == 1 and chunked prefill works
// too). Long contexts are split; workspace as mla_workspace_bytes(...). kv_lora 512 and rope 64 only.
size_t mla_workspace_bytes(int64_t total_q, int64_t heads, int64_t max_ctx);
cudaError_t mla_attention(const bf16* q, int64_t q_stride, const bf16* latent_cache, const int32_t* block_tables,
                          int64_t max_pages, const int32_t* cu_q_lens, const int32_t* ctx_lens, int64_t max_q_len,
                          int64_t max_ctx, bf16* out, int64_t batch, int64_t total_q, int64_t heads, int64_t page_size,
                          float scale, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// ---- MoE routing (moe.cu) -----------------------------------------------------------------------------------------

// Mixtral / Qwen-MoE: p = softmax(logits) over all experts (fp32), top-k (lowest index on ties), optionally
// renormalized to sum 1, then times `scaling`. logits [tokens, experts] fp32; topk_ids / topk_weights [tokens, k].
// experts <= 1024, k <= 32.
cudaError_t moe_topk_softmax(const float* logits, int64_t tokens, int64_t experts, int64_t k, bool renormalize,
                             float scaling, int32_t* topk_ids, float* topk_weights, cudaStream_t stream);

// DeepSeek-V3: s = sigmoid(logits); c = s + bias (bias may be null); group score = sum of the top-2 c in each of
// n_group equal groups; the best topk_group groups stay eligible; the top-k c among eligible experts are chosen and
// weighted by s (not c); renormalize: w /= sum(w) + 1e-20; then w *= scaling.
cudaError_t moe_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t tokens, int64_t experts, int64_t k,
                                     int64_t n_group, int64_t topk_group, bool renormalize, float scaling,
                                     int32_t* topk_ids, float* topk_weights, cudaStream_t stream);

// Sorts the tokens * k (token, choice) pairs by expert, stably (by expert, then pair index: deterministic).
// Experts outside [expert_begin, expert_begin + local_experts) are dropped (expert parallelism: this rank's experts).
// Outputs: expert_offsets [local_experts + 1] (exclusive prefix sums of the local pairs per expert), sorted_pairs
// [tokens * k] (pair index = token * k + choice, in sorted order; only the first expert_offsets[local] are valid),
// pair_rows [tokens * k] (row of each pair in the sorted order, -1 when dropped).
cudaError_t moe_align(const int32_t* topk_ids, int64_t tokens, int64_t k, int64_t expert_begin, int64_t local_experts,
                      int32_t* expert_offsets, int32_t* sorted_pairs, int32_t* pair_rows, cudaStream_t stream);

// x_sorted[r, :] = x[sorted_pairs[r] / k, :] for r < rows (rows = expert_offsets[local], read by the caller, or an
// upper bound: rows whose pair index is negative are zero-filled).
cudaError_t moe_permute(const bf16* x, const int32_t* sorted_pairs, int64_t rows, int64_t k, int64_t hidden,
                        bf16* x_sorted, cudaStream_t stream);

// out[t, :] = bf16((accumulate ? out[t, :] : 0) + sum_j w[t, j] * y_sorted[pair_rows[t * k + j], :]) over the pairs
// this rank kept (pair_rows >= 0), fp32 accumulation in choice order.
cudaError_t moe_unpermute(const bf16* y_sorted, const int32_t* pair_rows, const float* topk_weights, int64_t tokens,
                          int64_t k, int64_t hidden, bool accumulate, bf16* out, cudaStream_t stream);

// ---- generic kernels (generic.cu): any of fp32 / bf16 / fp16 per operand, strided rows -------------------------

enum class Elem : int { kF32 = 0, kBf16 = 1, kF16 = 2 };

// A 2-D strided view: rows x cols elements of `type`, rows `stride` elements apart (last dimension dense).
struct Mat {
  void* data = nullptr;
  Elem type = Elem::kF32;
  int64_t rows = 0, cols = 0, stride = 0;
};

// Element-wise, with the cpu backend's semantics (fp32 math, one rounding at the store).
cudaError_t g_convert(Mat src, Mat dst, cudaStream_t stream);
cudaError_t g_add(Mat a, Mat b, Mat out, cudaStream_t stream);
cudaError_t g_add_bias(Mat y, Mat bias, cudaStream_t stream);  // bias: 1 x cols
cudaError_t g_embedding(const int32_t* ids, Mat table, int64_t row_begin, Mat out, cudaStream_t stream);
// out = w * round_to(x.type, x * rsqrt(mean(x^2) + eps)).
cudaError_t g_rms_norm(Mat x, Mat weight, float eps, Mat out, cudaStream_t stream);
// In place on x [tokens, heads, *] (token and head strides in elements), columns [rot_offset, rot_offset + rot_dim):
// cos and sin (times attention_scaling) rounded to x's type; interleaved de-interleaves (DeepSeek).
cudaError_t g_rope(void* x, Elem type, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_stride,
                   int64_t rot_offset, int64_t rot_dim, const int32_t* positions, const float* inv_freq,
                   bool interleaved, float attention_scaling, cudaStream_t stream);
cudaError_t g_silu_and_mul(Mat gate_up, Mat out, cudaStream_t stream);
// dst[slots[r]] = src[r] (kv_append) and dst[r] = src[idx[r]] (gather_rows).
cudaError_t g_scatter_rows(Mat src, const int32_t* slots, Mat dst, cudaStream_t stream);
cudaError_t g_gather_rows(Mat src, const int32_t* idx, Mat dst, cudaStream_t stream);
// scatter_add_rows through a CSR of the destination rows: for i < n_targets, row target_rows[i] of dst gets, in
// order, dst = round(dst + w[n] * src[n]) for n = src_rows[offsets[i] .. offsets[i + 1]) (ascending n, as the cpu
// backend's sequential loop does). weights may be null (all 1).
cudaError_t g_scatter_add_rows(Mat src, const int32_t* offsets, const int32_t* src_rows, const int32_t* target_rows,
                               int64_t n_targets, const float* weights, Mat dst, cudaStream_t stream);
cudaError_t g_argmax(Mat logits, int32_t* out, cudaStream_t stream);

// Attention as the cpu backend computes it (scores in fp32, P = round_to(q.type, softmax) normalized before P V),
// one warp per (token, head); head_dim and v_dim <= 512. Per query token t: seq_of[t] and pos_of[t] (device int32).
struct AttnOperand {
  const void* data = nullptr;
  Elem type = Elem::kF32;
  int64_t token_stride = 0;  // q/out: per token; caches: per slot
  int64_t head_stride = 0;
};
cudaError_t g_attention(AttnOperand q, AttnOperand k_cache, AttnOperand v_cache, void* out, Elem out_type,
                        int64_t tokens, int64_t heads, int64_t head_dim, int64_t v_dim, HeadMapping map,
                        const int32_t* seq_of, const int32_t* pos_of, const int32_t* block_tables, int64_t max_pages,
                        int64_t page_size, float scale, cudaStream_t stream);
// MLA (absorbed) as the cpu backend computes it; one block per (token, head). q [T, H, nope + rope] (strides as
// AttnOperand), latent [slots, L + rope] contiguous, w_kv_b [H * (nope + v), L] contiguous, out [T, H, v]
// contiguous. L <= 1024.
cudaError_t g_mla_attention(AttnOperand q, const void* latent, Elem latent_type, const void* w_kv_b, Elem w_type,
                            void* out, Elem out_type, int64_t tokens, int64_t heads, int64_t nope, int64_t rope_dim,
                            int64_t latent_dim, int64_t v_dim, const int32_t* seq_of, const int32_t* pos_of,
                            const int32_t* block_tables, int64_t max_pages, int64_t page_size, float scale,
                            cudaStream_t stream);

}  // namespace parasol::kernels

// parasol_kernels: the CUDA kernels of the executor's `cuda` backend, behind plain host launchers. Pointers and shapes
// in, cudaError_t out; nothing of parasol's core is visible here, so this header can be included by host C++ (g++) and
// the kernels can be reused by any caller. Storage is bf16 (__nv_bfloat16) and accumulation fp32 throughout; numerics
// follow Hugging Face transformers (see the notes per launcher). Every launcher is asynchronous on `stream`, returns
// cudaErrorInvalidValue for shapes it does not support (checked on the host, before anything is launched) and otherwise
// the launch error (cudaGetLastError). Launchers never allocate and never synchronize, so they are graph-capturable.
// Thread behaviour: launchers are reentrant; the only shared state is a per-device cache of the multiprocessor count.
//
// Layouts used everywhere:
//   activations      row-major [tokens, features]; q/k/v as [tokens, heads, head_dim]
//   paged KV cache   one tensor each for K and V: [num_pages, kv_heads, page_size, head_dim] ("HND": the page_size
//                    rows of one head are contiguous, so a decode warp streams them); a token's slot is
//                    page * page_size + offset, and block_tables[seq, i] names the page holding tokens
//                    [i * page_size, (i + 1) * page_size) of the sequence.
//   MLA latent cache [num_pages, page_size, latent_dim] (latent_dim = kv_lora_rank + qk_rope_head_dim, e.g. 576).
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
// `out` may alias `x`. 16-byte vectorized when hidden % 8 == 0.
cudaError_t rms_norm(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t rows, int64_t hidden,
                     float eps, cudaStream_t stream);

// Rotary position embedding, in place, on q [tokens, q_heads, *] and k [tokens, k_heads, *] (k may be null).
// Rows are addressed with strides (elements): x + t * token_stride + h * head_stride; the rotation touches the
// first rot_dim elements of each head. inv_freq [rot_dim / 2] (device, fp32) comes from rope_inv_freq() below.
// Half-split (HF rotate_half): x'[i] = x[i] cos - x[i + d/2] sin, x'[i + d/2] = x[i + d/2] cos + x[i] sin, with
// angle = float(pos) * inv_freq[i] in fp32. `interleaved` (DeepSeek rope_interleave) first de-interleaves each head
// (pairs (2i, 2i+1) -> (i, i + d/2)) and writes the result in the de-interleaved order, as HF does.
cudaError_t rope(bf16* q, int64_t q_token_stride, int64_t q_heads, bf16* k, int64_t k_token_stride, int64_t k_heads,
                 int64_t head_stride, int64_t tokens, int64_t rot_dim, const int32_t* positions, const float* inv_freq,
                 bool interleaved, cudaStream_t stream);

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

// out[r, :] = bf16(silu(x[r, :d]) * x[r, d:2d]) (gate | up fused), x [rows, 2d], out [rows, d].
cudaError_t silu_and_mul(const bf16* x, bf16* out, int64_t rows, int64_t d, cudaStream_t stream);

// Writes the new tokens' K and V ([tokens, kv_heads, head_dim], any token stride in elements) into the paged caches
// at slots slot_mapping[t] (page * page_size + offset; a negative slot skips the token).
cudaError_t kv_append(const bf16* k, const bf16* v, int64_t kv_token_stride, bf16* k_cache, bf16* v_cache,
                      const int64_t* slot_mapping, int64_t tokens, int64_t kv_heads, int64_t head_dim,
                      int64_t page_size, cudaStream_t stream);

// MLA: writes latent rows [tokens, latent_dim] (token stride in elements) into cache [pages, page_size, latent_dim].
cudaError_t latent_append(const bf16* latent, int64_t token_stride, bf16* cache, const int64_t* slot_mapping,
                          int64_t tokens, int64_t latent_dim, cudaStream_t stream);

// Per row: the largest value and its index (lowest index on ties; NaN never wins). logits [rows, n] bf16 or fp32,
// row stride in elements. out_value may be null. Vocab-parallel callers add their shard's offset to the index.
cudaError_t argmax_bf16(const bf16* logits, int64_t row_stride, int64_t rows, int64_t n, int32_t* out_index,
                        float* out_value, cudaStream_t stream);
cudaError_t argmax_f32(const float* logits, int64_t row_stride, int64_t rows, int64_t n, int32_t* out_index,
                       float* out_value, cudaStream_t stream);

// out[i] = sum_j inputs[j][i] (fp32 accumulation in input order, so the result is deterministic). `inputs` is a HOST
// array of `count` (<= kMaxSumInputs) device pointers, passed to the kernel by value; out may alias one of them. Used by
// the device-local communicator.
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

// Decode (one query token per sequence), GQA: q [batch, heads, head_dim] (token stride q_stride elements), out
// [batch, heads, head_dim]. Query head h reads KV head h / (heads / kv_heads) (HF repeat_kv order). ctx_lens [batch]
// counts the cached tokens including the current one (already appended). block_tables [batch, max_pages] int32.
// Long contexts are split over several blocks (flash-decoding) whose partial results a second kernel merges; the
// split needs `workspace` of decode_attention_workspace_bytes(...) bytes (null when that is 0). `max_ctx` (host) bounds
// ctx_lens and sizes the split. head_dim: 64, 128 or 256.
size_t decode_attention_workspace_bytes(int64_t batch, int64_t heads, int64_t head_dim, int64_t max_ctx);
cudaError_t decode_attention(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                             const int32_t* block_tables, int64_t max_pages, const int32_t* ctx_lens, int64_t max_ctx,
                             bf16* out, int64_t batch, int64_t heads, int64_t kv_heads, int64_t head_dim,
                             int64_t page_size, float scale, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream);

// Prefill / chunked prefill, causal, tiled flash attention on tensor cores (mma.sync bf16, fp32 accumulate). Queries
// are packed over sequences: q [total_q, heads, head_dim] (token stride q_stride), cu_q_lens [batch + 1] (device,
// exclusive prefix sums of q_lens). Sequence b's queries are its last q_len tokens: query i sits at position
// ctx_lens[b] - q_len + i and attends keys 0..that position from the paged cache (new K/V appended beforehand).
// out [total_q, heads, head_dim]. max_q_len (host) sizes the grid. head_dim 64 or 128; page_size a multiple of 16.
cudaError_t prefill_attention(const bf16* q, int64_t q_stride, const bf16* k_cache, const bf16* v_cache,
                              const int32_t* block_tables, int64_t max_pages, const int32_t* cu_q_lens,
                              const int32_t* ctx_lens, int64_t max_q_len, bf16* out, int64_t batch, int64_t heads,
                              int64_t kv_heads, int64_t head_dim, int64_t page_size, float scale,
                              cudaStream_t stream);

// ---- MLA (mla.cu) -------------------------------------------------------------------------------------------------

// DeepSeek MLA in its absorbed (MQA) form, on tensor cores: every head attends the one shared latent per token.
// q [total_q, heads, 576] = [q_nope . W_UK (512) | q_rope (64)] (token stride q_stride), latent cache as above with
// latent_dim = 576; out [total_q, heads, 512] = softmax(q . c^T * scale) . c[:, :512] (the caller applies W_UV).
// Queries are packed like prefill_attention (cu_q_lens; causal, so decode is q_len == 1 and chunked prefill works
// too). Long contexts are split; workspace as mla_workspace_bytes(...). kv_lora 512 and rope 64 only.
size_t mla_workspace_bytes(int64_t total_q, int64_t heads, int64_t max_ctx);
cudaError_t mla_attention(const bf16* q, int64_t q_stride, const bf16* latent_cache, const int32_t* block_tables,
                          int64_t max_pages, const int32_t* cu_q_lens, const int32_t* ctx_lens, int64_t max_q_len,
                          int64_t max_ctx, bf16* out, int64_t batch, int64_t total_q, int64_t heads,
                          int64_t page_size, float scale, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream);

// ---- MoE routing (moe.cu) -----------------------------------------------------------------------------------------

// Mixtral / Qwen-MoE: p = softmax(logits) over all experts (fp32), top-k (lowest index on ties), optionally
// renormalized to sum 1. logits [tokens, experts] fp32; topk_ids / topk_weights [tokens, k]. experts <= 1024, k <= 32.
cudaError_t moe_topk_softmax(const float* logits, int64_t tokens, int64_t experts, int64_t k, bool renormalize,
                             int32_t* topk_ids, float* topk_weights, cudaStream_t stream);

// DeepSeek-V3: s = sigmoid(logits); c = s + bias (bias may be null); group score = sum of the top-2 c in each of
// n_group equal groups; the best topk_group groups stay eligible; the top-k c among eligible experts are chosen and
// weighted by s (not c); renormalize: w /= sum(w) + 1e-20; then w *= scaling.
cudaError_t moe_topk_sigmoid_grouped(const float* logits, const float* bias, int64_t tokens, int64_t experts,
                                     int64_t k, int64_t n_group, int64_t topk_group, bool renormalize, float scaling,
                                     int32_t* topk_ids, float* topk_weights, cudaStream_t stream);

// Sorts the tokens * k (token, choice) pairs by expert, stably (by expert, then pair index: deterministic).
// Experts outside [expert_begin, expert_begin + local_experts) are dropped (expert parallelism: this rank's experts).
// Outputs: expert_offsets [local_experts + 1] (exclusive prefix sums of the local pairs per expert), sorted_pairs
// [tokens * k] (pair index = token * k + choice, in sorted order; only the first expert_offsets[local] are valid),
// pair_rows [tokens * k] (row of each pair in the sorted order, -1 when dropped).
cudaError_t moe_align(const int32_t* topk_ids, int64_t tokens, int64_t k, int64_t expert_begin,
                      int64_t local_experts, int32_t* expert_offsets, int32_t* sorted_pairs, int32_t* pair_rows,
                      cudaStream_t stream);

// x_sorted[r, :] = x[sorted_pairs[r] / k, :] for r < rows (rows = expert_offsets[local], read by the caller, or an
// upper bound: rows whose pair index is negative are zero-filled).
cudaError_t moe_permute(const bf16* x, const int32_t* sorted_pairs, int64_t rows, int64_t k, int64_t hidden,
                        bf16* x_sorted, cudaStream_t stream);

// out[t, :] = bf16((accumulate ? out[t, :] : 0) + sum_j w[t, j] * y_sorted[pair_rows[t * k + j], :]) over the pairs
// this rank kept (pair_rows >= 0), fp32 accumulation in choice order.
cudaError_t moe_unpermute(const bf16* y_sorted, const int32_t* pair_rows, const float* topk_weights, int64_t tokens,
                          int64_t k, int64_t hidden, bool accumulate, bf16* out, cudaStream_t stream);

}  // namespace parasol::kernels

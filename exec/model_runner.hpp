// ModelRunner: one rank's share of one model instance — its weights (read through a WeightSource as RankLayout says),
// its paged KV cache, and the forward of one scheduler iteration on a Backend and a Communicator. Numerics follow
// Hugging Face transformers (DESIGN.md, shared/notes/nccl-and-reference-math.md §5).
//
// DESIGN contract 2: step() turns the request into a plan::Batch, builds the iteration's Step with core's
// build_step (StepBuilder) and runs this rank's program of that Step op by op: each op the executor issues must be
// the program's next one — same kind and name, same sharded shape (m, n, k, tokens), same group (the members of the
// communicator it runs on) or peer — or step() throws parasol::Error naming the rank, the op index and both ops; the
// program must be used up at the end. So the executor runs exactly the ops the simulator costs. Outside the Step
// (control plane, not costed): uploads of ids / positions / slots, the host-side routing bookkeeping of MoE, the
// LM-head row selection and the all-gather of sampled tokens to every rank.
//
// Every rank of the instance constructs its runner at the same time (the constructor splits the instance
// communicator into the tp and stage groups: collective) and calls step() with the same StepRequest; each rank picks
// the sequences of its attention-DP group. Each op run is recorded (the Step's op, with this rank's actual shapes
// and, for the routed-expert ops, the actual token counts) with its time, so a step yields a per-op profile.
// Thread behaviour: a runner belongs to its rank's thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/plan/plan.hpp"
#include "core/plan/step.hpp"
#include "core/spec/model.hpp"
#include "exec/backend.hpp"
#include "exec/communicator.hpp"
#include "exec/layout.hpp"
#include "exec/weights.hpp"

namespace parasol::exec {

struct RunnerOptions {
  ElemType weight_type = ElemType::kF32;  // storage of weights (math is fp32 on cpu)
  ElemType kv_type = ElemType::kF32;
  int64_t kv_blocks = 256;  // per rank (per layer), of block_tokens tokens each
  int64_t block_tokens = 16;
  bool all_logits = false;  // logits of every new token (tests), not only each sampled sequence's last
                            // (the LM head then runs on more rows than the Step's: not compared)
  bool profile = false;     // time every op (synchronizes the backend around each op)
  // The Plan whose Steps this runner executes (pool `pool`; its model and layout must be the runner's): dtypes and
  // routing come from it. nullptr: a Plan made of the model, the layout and weight_type / kv_type above.
  const plan::Plan* plan = nullptr;
  int pool = 0;
};

struct SeqInput {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;  // the new tokens (prompt chunk, or the one decoded token)
  int64_t context = 0;          // tokens already in this sequence's KV cache
  int attn_group = 0;
  bool sample = true;  // produce a next token (false for a non-final prefill chunk)
};

struct StepRequest {
  std::vector<SeqInput> seqs;
};

struct OpRecord {
  plan::Op op;        // kind, name, layer and this rank's shapes
  double time_s = 0;  // measured when RunnerOptions::profile
};

struct StepResult {
  // Every rank: the greedy next token of each sequence of the request (-1 where not sampled).
  std::vector<int32_t> next_tokens;
  // Last-stage ranks: logits [rows, vocab] of this rank's attention group; logit_rows[i] = (index of the sequence in
  // the request, index of the token among its new tokens).
  std::vector<float> logits;
  std::vector<std::pair<int, int64_t>> logit_rows;
  std::vector<OpRecord> ops;
};

class ModelRunner {
 public:
  ModelRunner(const spec::Model& model, const RankLayout& layout, Backend& backend, Communicator& instance,
              const WeightSource& weights, const RunnerOptions& options);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  StepResult step(const StepRequest& request);
  // Pipelined serving: every rank of the instance calls submit() with the same requests in the same order; it runs
  // this rank's program and returns when it is done, without waiting for the rest of the pipeline (the last stage
  // sends the sampled tokens to instance rank 0); it returns this rank's op records. Instance rank 0 then takes the
  // iterations' results, oldest first, with collect() (it waits for the last stage), and may submit the next
  // micro-batch before collecting the previous one. collect()'s StepResult holds next_tokens only.
  std::vector<OpRecord> submit(const StepRequest& request);
  StepResult collect();
  // Frees the KV blocks of a finished sequence (every rank of its attention group must call it).
  void release(int64_t seq_id);
  // P/D: this rank's KV of the first `tokens` tokens of `seq_id` — every local layer in order, its k rows then its v
  // rows (or its MLA latent rows), in the KV dtype — for a rank of another instance with the same layout; empty when
  // the sequence is not in this rank's attention group. import_kv() takes such bytes as `seq_id`'s KV (allocating its
  // blocks; a RuntimeFailure when they run out or the size does not match).
  std::vector<uint8_t> export_kv(int64_t seq_id, int64_t tokens) const;
  void import_kv(int64_t seq_id, int64_t tokens, const std::vector<uint8_t>& bytes);
  int64_t free_kv_blocks() const;
  const RankLayout& layout() const { return layout_; }
  // The Step of the last step() (every rank's program), and the Plan the Steps are built from.
  const plan::Step& last_step() const;
  const plan::Plan& plan() const;

  struct Impl;

 private:
  RankLayout layout_;
  std::unique_ptr<Impl> impl_;
};

// HF rotary inverse frequencies for rot_dim columns (llama3 scaling applied when the model asks for it), in fp32.
std::vector<float> rope_inv_freq(const spec::Model& model, int64_t rot_dim);

}  // namespace parasol::exec

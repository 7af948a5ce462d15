// Step: DESIGN contract 2. build_step(plan, batch) turns one scheduler iteration into, for every rank of an instance,
// the ordered ops it runs, each with its FLOPs and memory bytes. The simulator costs these ops; the executor runs
// exactly these ops. Nothing else builds per-rank programs.
// Thread behaviour: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/common/dtype.hpp"

namespace parasol::plan {

// One sequence's share of an iteration: `new_tokens` query tokens appended after `context` cached tokens.
// Prefill (or a chunk of it): new_tokens >= 1 with context the already-prefilled part; decode: new_tokens == 1.
struct SeqWork {
  int64_t seq_id = 0;
  int64_t new_tokens = 0;
  int64_t context = 0;
  int attn_group = 0;  // which attention-DP group serves it (0 when attn_dp == 1)
  bool sample = true;  // this step ends with a token for the sequence (false for a non-final prefill chunk)
  bool is_decode() const { return new_tokens == 1 && context > 0; }
};

struct Batch {
  std::vector<SeqWork> seqs;
  int64_t tokens() const {
    int64_t t = 0;
    for (const auto& s : seqs) t += s.new_tokens;
    return t;
  }
};

enum class OpKind {
  kEmbedding,
  kRmsNorm,      // fused residual add + RMSNorm
  kGemm,
  kRope,
  kAttention,    // prefill/decode attention (MHA/GQA) over paged KV
  kMlaAttention, // DeepSeek MLA (absorbed for decode)
  kKvAppend,
  kActivation,   // SiLU-and-mul
  kMoeGate,      // router logits + top-k
  kMoeDispatch,  // permute tokens to experts (local part)
  kMoeCombine,   // unpermute + weighted sum
  kAllReduce,
  kAllGather,
  kReduceScatter,
  kAllToAll,
  kSend,
  kRecv,
  kSample,       // final-logit gather + argmax
};

// kOneShot / kTwoShot: a serving engine's own all-reduce over peer memory inside one NVLink domain (every rank reads
// all peers' buffers; or reduce-scatter + all-gather through peer loads/stores), core/cost/collective_cost.hpp.
enum class CollectiveAlgo { kAuto, kRing, kTree, kNvls, kHierarchical, kDirect, kOneShot, kTwoShot };

// A group of ranks (within the instance) that a collective runs over.
struct Group {
  std::string name;        // "tp.s0.a0", "ep.s1", ...
  std::vector<int> ranks;  // instance ranks, ascending
};

struct Op {
  OpKind kind = OpKind::kGemm;
  std::string name;   // stable, e.g. "L12.attn.qkv", "L12.moe.dispatch", "lm_head"
  int layer = -1;     // -1 for embedding / final norm / lm_head / sample
  DType dtype = DType::kBf16;

  // GEMM: [m x k] x [k x n]. Sharded shapes (what this rank runs).
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;  // batched / grouped GEMM: number of independent weight matrices (local experts, MLA heads)
  // Attention / MoE: the token-level shape.
  int64_t tokens = 0;             // query tokens this rank processes
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t v_head_dim = 0;         // attention: value head dim (differs from head_dim for MLA)
  std::vector<int64_t> q_lens;    // per sequence: query tokens
  std::vector<int64_t> ctx_lens;  // per sequence: total context after this step (cached + new)
  // build_step's name for these lengths: ops with the same nonzero lens_id have equal q_lens and ctx_lens (copies
  // of one group's lengths in one build), so a lookup keyed on the lengths need not compare them. 0: unnamed. Whoever
  // changes the lengths of a built op sets it to 0.
  uint64_t lens_id = 0;
  std::vector<int64_t> expert_tokens;  // MoE: tokens routed to each local expert

  // Collectives and point-to-point.
  int group = -1;                 // index into Step::groups
  int peer = -1;                  // send/recv: the other rank
  double comm_bytes = 0;          // payload per rank (the buffer size S of nccl-tests)
  std::vector<double> a2a_send_bytes;  // all-to-all(v): bytes to each group member, in group order
  CollectiveAlgo algo = CollectiveAlgo::kAuto;

  // Cost inputs.
  double flops = 0;
  double bytes = 0;  // memory (HBM) traffic
};

struct RankProgram {
  int rank = 0;
  int stage = 0;
  std::vector<Op> ops;
};

struct Step {
  std::vector<RankProgram> ranks;  // one per instance rank
  std::vector<Group> groups;
  int64_t tokens = 0;              // total new tokens in the batch
  int64_t seqs = 0;                // sequences with new tokens (an engine's per-iteration CPU cost grows with them)
  int pool = 0;                    // index into Plan::pools the step was built for
};

std::string to_string(OpKind k);
std::string to_string(CollectiveAlgo a);
// Inline: the cost model asks for every op of every step.
inline bool is_collective(OpKind k) {
  return k == OpKind::kAllReduce || k == OpKind::kAllGather || k == OpKind::kReduceScatter || k == OpKind::kAllToAll;
}
inline bool is_communication(OpKind k) { return is_collective(k) || k == OpKind::kSend || k == OpKind::kRecv; }
// A hash of an attention op's per-sequence lengths.
uint64_t lengths_hash(const std::vector<int64_t>& q_lens, const std::vector<int64_t>& ctx_lens);
// A new nonzero Op::lens_id (process-wide, thread-safe; its value never enters a result).
uint64_t new_lens_id();

// Sum of the FLOPs and HBM bytes of every op of every rank.
void step_work(const Step& step, double& flops, double& bytes);

}  // namespace parasol::plan

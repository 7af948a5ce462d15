// Internals of ModelRunner shared by its translation units (model_runner.cpp: step driver, op checks, embedding, LM
// head, pipeline; model_weights.cpp: weights; model_layers.cpp: attention, MLA, dense MLP; model_moe.cpp: MoE). Not
// part of the executor's interface.
// Thread behaviour: as ModelRunner.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/plan/build_step.hpp"
#include "exec/model_runner.hpp"

namespace parasol::exec {

struct MlpWeights {
  OwnedTensor gate_up;  // [2 f, H] = [gate rows | up rows] of this rank's FFN slice
  OwnedTensor down;     // [H, f]
  int64_t f = 0;
};

struct LayerWeights {
  int64_t index = 0;
  OwnedTensor attn_norm, mlp_norm;
  // GQA / MHA
  OwnedTensor qkv, o;
  // MLA: q_a and kv_a_with_mqa fused row-wise as build_step's "attn.qkv_a" ([q_lora + L + rope, H]; kv_a alone
  // when q_lora_rank == 0), q_b (or q_proj), kv_b [heads x (nope + v), L] and its W_UK halves transposed per head
  // [heads x L, nope] for the absorbed decode form.
  OwnedTensor qkv_a, q_a_norm, q_b, kv_a_norm, kv_b, w_uk_t;
  // MLP
  bool moe = false;
  MlpWeights mlp;                   // dense layer
  OwnedTensor router, router_bias;  // MoE
  std::vector<MlpWeights> experts;  // local experts, layout.experts order
  MlpWeights shared;                // shared experts (f == 0 when none on this rank)
  // KV cache: k / v [slots, kv_heads_local, D] or MLA latent [slots, L + rope]
  OwnedTensor k_cache, v_cache, latent;
};

// This rank's actual shape of an op, compared with the Step's (-1: not compared). Data-dependent ops (routed expert
// GEMMs and activation: their rows are the tokens the real router sent here) are recorded with the actual values
// instead of being compared.
struct OpShape {
  OpShape(int64_t m_ = -1, int64_t n_ = -1, int64_t k_ = -1, int64_t tokens_ = -1, bool data_dependent_ = false,
          std::vector<int64_t> expert_tokens_ = {})
      : m(m_),
        n(n_),
        k(k_),
        tokens(tokens_),
        data_dependent(data_dependent_),
        expert_tokens(std::move(expert_tokens_)) {}
  int64_t m, n, k, tokens;
  bool data_dependent;                 // m and tokens are the routed rows: recorded, not compared
  std::vector<int64_t> expert_tokens;  // data-dependent ops: rows per local expert
};

// Per-step activation state of a rank.
struct StepState {
  int64_t T = 0;                      // new tokens of this rank's attention group
  std::vector<int64_t> group_tokens;  // new tokens of every attention group (MoE exchanges span the stage)
  SeqBatch seqs;                      // of this rank's group
  std::vector<int> seq_index;         // request index of each local sequence
  std::vector<bool> decode;           // per local sequence: a decode (1 new token after a non-empty context)
  OwnedTensor positions, slots;       // i32 [T]
  OwnedTensor xp;                     // [2T, H]: x (rows 0..T) and partial (rows T..2T), sent together between stages
  Tensor x;                           // residual stream [T, H]
  Tensor partial;                     // block output to add to x [T, H]
  OwnedTensor h;                      // normed [T, H]
  bool pending = false;               // partial not yet added to x
  // The Step this iteration runs (build_step's) and the position in this rank's program.
  const plan::Step* step = nullptr;
  const plan::RankProgram* program = nullptr;
  size_t next_op = 0;
  std::vector<OpRecord>* ops = nullptr;
};

struct ModelRunner::Impl {
  Impl(const spec::Model& m, const RankLayout& l, Backend& b, Communicator& c, const WeightSource& w,
       const RunnerOptions& o);

  // weights
  OwnedTensor upload(const std::vector<float>& host, const std::vector<int64_t>& shape, ElemType type);
  OwnedTensor load(const std::string& name, const std::vector<int64_t>& shape, const std::vector<Slice>& parts,
                   ElemType type);
  OwnedTensor load_full(const std::string& name, const std::vector<int64_t>& shape, ElemType type) {
    return load(name, shape, {Slice{}}, type);
  }
  MlpWeights load_mlp(const std::string& gate, const std::string& up, const std::string& down, int64_t ffn, Range r);
  void load_layer(LayerWeights& lw);
  void load_mla(LayerWeights& lw);
  std::string layer_prefix(int64_t l) const { return "model.layers." + std::to_string(l) + "."; }

  // ops: every op is the next one of this rank's program in the Step (checked: kind, name, shape, group, peer)
  static std::string op_name(int layer, const std::string& what) {
    return layer < 0 ? what : "L" + std::to_string(layer) + "." + what;
  }
  const plan::Op& expect(StepState& st, plan::OpKind kind, const std::string& name, const OpShape& shape);
  void run_op(StepState& st, plan::OpKind kind, int layer, const std::string& what, const OpShape& shape,
              const std::function<void()>& fn);
  void gemm(StepState& st, int layer, const std::string& what, const Tensor& x, const Tensor& w, const Tensor& y,
            bool accumulate = false);
  // A collective over `c`, whose members are the instance ranks `members` (checked against the op's group).
  void collective(StepState& st, plan::OpKind kind, int layer, const std::string& what, Communicator& c,
                  const std::vector<int>& members, const std::function<void()>& fn);
  void all_reduce(StepState& st, int layer, const std::string& what, const Tensor& t);  // over tp
  void all_gather_v(StepState& st, Communicator& c, const std::vector<int>& members, int layer, const std::string& what,
                    const Tensor& mine, const std::vector<int64_t>& counts, const Tensor& out);
  void norm(StepState& st, int layer, const std::string& what, const Tensor& w);  // x += partial; h = rmsnorm(x)

  // blocks (model_layers.cpp, model_moe.cpp)
  void attention(StepState& st, LayerWeights& lw);
  void mla(StepState& st, LayerWeights& lw);
  void mla_prefill(StepState& st, LayerWeights& lw, const Tensor& q, const Tensor& out);
  void mla_decode(StepState& st, LayerWeights& lw, const Tensor& q, const Tensor& out);
  // out (+)= down(silu(gate(in)) * up(in)) with this rank's slice, as the ops what.gate_up / .act / .down.
  void dense_mlp(StepState& st, int layer, const MlpWeights& w, const std::string& what, const Tensor& in,
                 const Tensor& out, bool accumulate);
  void dense_block(StepState& st, LayerWeights& lw);  // partial = all-reduce(MLP slice(h))
  void moe(StepState& st, LayerWeights& lw);
  void moe_all_to_all(StepState& st, LayerWeights& lw);
  void moe_gather(StepState& st, LayerWeights& lw);
  // "moe.gate": router GEMM + top-k over the rows of `in`: host ids / weights [rows x top_k].
  void route(StepState& st, LayerWeights& lw, const Tensor& in, std::vector<int32_t>& ids, std::vector<float>& w);
  // "moe.experts.gate_up / act / down": the local experts' grouped MLP over the rows of `x` (counts[e] rows of local
  // expert e after sorting; `order` lists x's rows in that sorted order, empty when x already is) into `y`, row i of
  // y answering row i of x.
  void experts(StepState& st, LayerWeights& lw, const Tensor& x, const std::vector<int32_t>& order,
               const std::vector<int64_t>& counts, const Tensor& y);

  // step pieces (model_runner.cpp)
  void prepare(StepState& st, const StepRequest& req);
  void embed_or_recv(StepState& st, const StepRequest& req);
  // all_ranks: every rank learns every sampled token (step()); else the last stage sends them to instance rank 0
  // (submit()), whose own ones go into `res`.
  void finish(StepState& st, const StepRequest& req, StepResult& res, bool all_ranks);
  // One iteration of this rank's program (build, run, check that it was used up).
  void run_step(const StepRequest& req, StepResult& res, bool all_ranks);

  const spec::Model& model;
  RankLayout layout;
  Backend& be;
  Communicator& world;
  const WeightSource& weights;
  RunnerOptions opt;
  std::unique_ptr<Communicator> tp_comm, stage_comm;
  std::vector<int> tp_members, stage_members;  // instance ranks of tp_comm / stage_comm, in their rank order
  bool mixtral_names = false;
  double act_bytes = 4, weight_bytes = 4;  // element sizes for data-dependent op costs

  // The Plan this runner's Steps come from, and the builder (build_step) that makes them.
  plan::Plan plan;
  std::unique_ptr<plan::StepBuilder> builder;
  plan::Step step;

  OwnedTensor embed, final_norm, lm_head, inv_freq;
  std::vector<LayerWeights> layers;

  // paged KV: blocks of every local sequence (identical on all ranks of an attention group)
  std::map<int64_t, std::vector<int32_t>> block_tables;
  std::vector<int32_t> free_blocks;  // ascending, popped from the front for determinism

  // Instance rank 0 under submit(): the iterations whose sampled tokens are still to come, oldest first (each with
  // this rank's own tokens), and the ranks that send them (the last stage's tp index 0 of every attention group).
  std::deque<StepResult> submitted;
  std::vector<int> token_senders;
};

}  // namespace parasol::exec

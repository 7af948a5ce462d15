// Internals of ModelRunner shared by its translation units (model_runner.cpp: weights, KV, step driver, embedding,
// LM head, pipeline; model_layers.cpp: attention, MLA, dense MLP, MoE). Not part of the executor's interface.
// Thread behaviour: as ModelRunner.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

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
  // MLA
  OwnedTensor q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b;
  // MLP
  bool moe = false;
  MlpWeights mlp;                   // dense layer
  OwnedTensor router, router_bias;  // MoE
  std::vector<MlpWeights> experts;  // local experts, layout.experts order
  MlpWeights shared;                // shared experts (f == 0 when none on this rank)
  // KV cache: k / v [slots, kv_heads_local, D] or MLA latent [slots, L + rope]
  OwnedTensor k_cache, v_cache, latent;
};

// Per-step activation state of a rank.
struct StepState {
  int64_t T = 0;                // new tokens of this rank's attention group
  std::vector<int64_t> group_tokens;  // new tokens of every attention group (MoE exchanges span the stage)
  SeqBatch seqs;                // of this rank's group
  std::vector<int> seq_index;   // request index of each local sequence
  OwnedTensor positions, slots; // i32 [T]
  OwnedTensor x;                // residual stream [T, H]
  OwnedTensor h;                // normed [T, H]
  OwnedTensor partial;          // block output to add to x [T, H]
  bool pending = false;         // partial not yet added to x
  std::vector<OpRecord>* ops = nullptr;
};

struct ModelRunner::Impl {
  Impl(const spec::Model& m, const RankLayout& l, Backend& b, Communicator& c, const WeightSource& w,
       const RunnerOptions& o);

  // weights
  OwnedTensor load(const std::string& name, const std::vector<int64_t>& shape, const std::vector<Slice>& parts,
                   ElemType type);
  OwnedTensor load_full(const std::string& name, const std::vector<int64_t>& shape, ElemType type) {
    return load(name, shape, {Slice{}}, type);
  }
  MlpWeights load_mlp(const std::string& gate, const std::string& up, const std::string& down, int64_t ffn, Range r);
  void load_layer(LayerWeights& lw);
  std::string layer_prefix(int64_t l) const { return "model.layers." + std::to_string(l) + "."; }

  // ops, recorded
  void run_op(StepState& st, plan::Op op, const std::function<void()>& fn);
  plan::Op gemm_op(const std::string& name, int layer, int64_t m, int64_t n, int64_t k) const;
  void gemm(StepState& st, const std::string& name, int layer, const Tensor& x, const Tensor& w, const Tensor& y,
            bool accumulate = false);
  void all_reduce(StepState& st, Communicator& c, const std::string& name, int layer, const Tensor& t);
  void all_gather_v(StepState& st, Communicator& c, const std::string& name, int layer, const Tensor& mine,
                    const std::vector<int64_t>& counts, const Tensor& out);
  void norm(StepState& st, const std::string& name, int layer, const Tensor& w);  // x += partial; h = rmsnorm(x)

  // blocks (model_layers.cpp)
  void attention(StepState& st, LayerWeights& lw);
  void mla(StepState& st, LayerWeights& lw);
  // out (+)= down(silu(gate(in)) * up(in)) with this rank's slice; no collective.
  void dense_mlp(StepState& st, int layer, const MlpWeights& w, const std::string& name, const Tensor& in,
                 const Tensor& out, bool accumulate);
  void dense_block(StepState& st, LayerWeights& lw);  // partial = all-reduce(MLP slice(h))
  void moe(StepState& st, LayerWeights& lw);
  void moe_all_to_all(StepState& st, LayerWeights& lw);
  void moe_gather(StepState& st, LayerWeights& lw);
  // Router GEMM + top-k over rows of `in`: host ids / weights [rows x top_k].
  void route(StepState& st, LayerWeights& lw, const Tensor& in, std::vector<int32_t>& ids, std::vector<float>& w);

  // step pieces (model_runner.cpp)
  void prepare(StepState& st, const StepRequest& req);
  void embed_or_recv(StepState& st, const StepRequest& req);
  void finish(StepState& st, const StepRequest& req, StepResult& res);

  const spec::Model& model;
  RankLayout layout;
  Backend& be;
  Communicator& world;
  const WeightSource& weights;
  RunnerOptions opt;
  std::unique_ptr<Communicator> tp_comm, stage_comm;
  bool mixtral_names = false;

  OwnedTensor embed, final_norm, lm_head, inv_freq;
  std::vector<LayerWeights> layers;

  // paged KV: blocks of every local sequence (identical on all ranks of an attention group)
  std::map<int64_t, std::vector<int32_t>> block_tables;
  std::vector<int32_t> free_blocks;  // ascending, popped from the front for determinism
};

}  // namespace parasol::exec

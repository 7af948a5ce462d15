// The analytic StepRunner (step_runner.hpp) of one pool of the Plan: the cost model's time of build_step(plan, batch)
// (core/cost), without building most steps: a step depends on its batch only through, per attention-DP group, the new
// tokens T, the sampled sequences S, the attended keys K = sum q (c + (q + 1) / 2) and the context sum C; and only the
// attention ops depend on K and C. So the first batch of each shape (T, S per group) is built and costed once and
// compiled: per rank, the fixed time between communications, the attention ops (re-timed from K and C with the cost
// model's own op_time), and the barriers in the order the cost model resolves them. Later batches of that shape cost
// one pass over the compiled program (one add per layer for a one-GPU replica). Compiling checks that its attention
// formula reproduces the built op exactly, else (and for MLA models) the pool falls back to building every step,
// memoized on the exact per-sequence signature. set_verify() cross-checks every step against the full path (tests). The
// clock is advanced by the driver.
// Symmetric pools (one stage, one attention group, dense MLP: pure TP, TP1 included) compile a shape from one rank
// (skipping the cost model's barrier bookkeeping): ranks 0 and R-1 are built (build_ranks), checked equal op by op
// (uneven shards show there first), and rank 0 alone is costed (CostModel::cost_symmetric_rank); the first shapes are
// also compiled in full and compared, and any difference turns the one-rank path off. Such a pool's layers are all
// alike, so a shape is built from a one-layer copy of the model (the layer template): the ops before layer 0, layer
// 0's, and those after it, the layer's ops then taken `layers` times in order (the same additions in the same order:
// bit-identical); the first template shapes are also compiled from the full model and compared field by field, and any
// difference turns the template off.
// It needs no simulator: sim's analytic fidelity runs it, and exec can take it as its virtual clock.
// Thread behaviour: one runner per pool, not shared between threads.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/plan.hpp"
#include "core/serve/step_runner.hpp"

namespace parasol::serve {

class AnalyticStepRunner final : public StepRunner {
 public:
  // `engine` (may be null: the bare GPU program; must outlive the runner): its fusion and dispatch shape the steps,
  // its per-iteration costs add to every step (core/cost/step_cost.hpp).
  AnalyticStepRunner(const plan::Plan& plan, int pool, const spec::Cluster& cluster,
                     const spec::Engine* engine = nullptr);
  ~AnalyticStepRunner() override;
  StepTiming run(int replica, const plan::Batch& batch) override;
  std::string name() const override { return "analytic"; }
  int64_t memo_hits() const { return hits_; }      // steps served from a compiled shape (or the exact memo)
  int64_t memo_misses() const { return misses_; }  // steps built and costed in full
  int64_t shapes() const { return shapes_; }       // compiled shapes made
  bool compiled() const { return fast_; }          // false: this pool's steps go through the exact memo only
  bool one_rank() const { return one_rank_; }      // shapes compiled from one representative rank
  void set_one_rank(bool v) { one_rank_ = v && one_rank_ok_; }  // tests: allow / forbid it (on where it applies)
  bool layer_template() const { return template_ != nullptr; }  // one-rank shapes built from one layer
  void set_layer_template(bool v);                              // tests: allow / forbid it (on where it applies)
  // Tests: also build and cost every step in full and throw RuntimeFailure when the two differ by more than 1e-12
  // relative (total, stage times, FLOPs, bytes).
  void set_verify(bool v) { verify_ = v; }

 private:
  int64_t window_ = 0;  // the model's sliding window (0: none)
  struct Shape;
  struct Entry {
    std::vector<int64_t> key;
    StepTiming timing;
  };
  StepTiming full(const plan::Batch& batch);
  StepTiming exact_memo(const plan::Batch& batch);
  std::unique_ptr<Shape> compile(const plan::Batch& batch);
  std::unique_ptr<Shape> compile_full(const plan::Batch& batch);
  std::unique_ptr<Shape> compile_one(const plan::Batch& batch);
  std::unique_ptr<Shape> compile_one_from(plan::StepBuilder& builder, const plan::Batch& batch, int64_t layers);
  void evaluate(const Shape& sh, StepTiming& t);
  static bool same_shape(const Shape& a, const Shape& b);

  const plan::Plan& plan_;
  int pool_ = 0;
  const spec::Engine* engine_ = nullptr;
  plan::StepOptions step_options_;
  plan::StepBuilder builder_;
  cost::CostModel cost_;
  const spec::Gpu* gpu_ = nullptr;
  cost::Launch launch_ = cost::Launch::kGraph;  // the current batch's launch mode (evaluate's launch floors)
  bool floors_ = false;
  int pp_ = 1;
  int attn_dp_ = 1;
  double act_bytes_ = 2, kv_bytes_ = 2;
  bool fast_ = true;
  bool verify_ = false;
  bool one_rank_ok_ = false, one_rank_ = false;
  int one_rank_checks_ = 2;                  // shapes still to be compiled both ways and compared
  std::vector<int> probe_ranks_;             // {0, R-1}
  struct LayerTemplate;                      // the one-layer model's plan and builder
  std::unique_ptr<LayerTemplate> template_;  // null: shapes are built from the full model
  int template_checks_ = 3;                  // template shapes still to be compared with full-model ones
  std::vector<cost::OpCost> rank_cost_;      // compile_one() scratch
  plan::Step step_;
  cost::StepCost sc_;                       // reused by every full costing
  std::vector<std::vector<int>> instance_;  // compile() scratch
  std::vector<int64_t> key_;
  // Per attention group of the current batch: tokens, sampled, attended keys, context sum (exact integers).
  std::vector<int64_t> agg_;
  std::vector<std::vector<int64_t>> q_lens_, ctx_lens_;  // per attention group: the attention model's lengths
  plan::Op attention_op_;  // evaluate()'s scratch: a compiled attention op with this step's lengths
  std::vector<double> var_time_, var_flops_, var_bytes_, now_, first_;               // evaluate() scratch
  std::unordered_map<uint64_t, std::vector<std::unique_ptr<Shape>>> shapes_by_key_;  // lookups only, never iterated
  std::unordered_map<uint64_t, std::vector<Entry>> memo_;                            // lookups only, never iterated
  int64_t hits_ = 0, misses_ = 0, entries_ = 0, shapes_ = 0;
  size_t shape_bytes_ = 0;
};

}  // namespace parasol::serve

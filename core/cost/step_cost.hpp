// cost_step: the time of one Step (one iteration of one instance) on the cluster, op by op. Each rank runs its ops
// in order; compute ops take their op_time (core/cost/op_cost.hpp); a collective is a barrier across its group (it
// starts when the last member arrives, all members leave together after its time); a send/recv pair is a barrier of
// the two ranks. The step's time is the latest finish over ranks (the critical path). The GPU of every rank comes from
// the plan's placement (instance `CostOptions::instance` of the step's pool).
// CostModel keeps per-plan state (GPU specs, group links) so that the search and the simulator can cost many steps of
// one plan cheaply; cost_step is the one-shot form.
// With an engine (CostOptions::engine, core/spec/engine.hpp; null: the bare GPU program), the iteration also pays
// what the engine does around the kernels (docs/cost-model.md "Engine"):
//   launch   decode-only iterations (every sequence one new token) of at most cuda_graphs.decode_max_seqs sequences
//            replay one full CUDA graph; mixed ones of at most mixed_max_tokens tokens run piecewise graphs when the
//            engine has them; the rest launch every kernel. The GPU cannot finish a rank's ops before the host has
//            issued them at launch_s each, so a rank finishes at max(its critical path, launches x launch_s), with
//            launches = its ops (eager), 2 x its attention ops + 1 (piecewise: each attention op and the graph piece
//            after it), 0 (full graph: one graph launch, in the serial cost).
//   CPU      the iteration's CPU work (scheduling, input preparation, sampling sync) cpu = fixed + per_sequence x
//            sequences + per_token x tokens (decode or mixed parameters); the step takes
//            serial + gpu + cpu, or serial + max(gpu, cpu) when the engine overlaps it (and pp == 1 or it overlaps
//            with pipelines too): it appears exactly once per iteration.
//   all-reduce  the engine's custom all-reduce limits go to CollectiveParams (the collective model decides its time).
// Fusion and the MoE dispatch bytes are in the Step itself (plan::StepOptions from the same engine).
// A CostModel caches the time of each distinct compute op (keyed on the op, its GPU type object and the calibration):
// the cluster's GPU specs must not change while it is in use; build a new one after editing them.
// Thread behaviour: cost_step is pure; a CostModel is not thread-safe (one per thread).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "core/cost/calibration.hpp"
#include "core/cost/collective_cost.hpp"
#include "core/cost/op_cost.hpp"
#include "core/plan/plan.hpp"
#include "core/plan/step.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/engine.hpp"

namespace parasol::cost {

struct CostOptions {
  int instance = 0;                                         // which instance of the pool (placement row)
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto;  // force one algorithm for all collectives
  const CalibrationTable* calibration = nullptr;            // overrides the roofline where it covers an op
  const spec::Engine* engine = nullptr;                     // the serving engine (not owned); null: no engine terms
};

// How an iteration's kernels reach the GPU under an engine.
enum class Launch { kGraph, kPiecewise, kEager };
const char* to_string(Launch l);
// `seqs` and `tokens` are the instance's; with attention-DP every group runs its own scheduler and graphs (vLLM's and
// SGLang's data-parallel engine cores), so limits and CPU work apply to one group's share: ceil(x / attn_dp).
Launch launch_mode(const spec::Engine& e, int64_t seqs, int64_t tokens, int attn_dp = 1);
// The host's floor on one rank's GPU time: launches x launch_s (eager: `ops`; piecewise: 2 x attention_ops + 1).
double launch_floor_s(const spec::Engine& e, Launch mode, int64_t ops, int64_t attention_ops);
// The engine's CPU work of one iteration of `seqs` sequences and `tokens` new tokens.
double iteration_cpu_s(const spec::Engine& e, int64_t seqs, int64_t tokens, int attn_dp = 1);
// The iteration's time from its GPU time (launch floors included) and its CPU work, for a plan of `pp` stages.
double engine_step_s(const spec::Engine& e, double gpu_s, double cpu_s, int pp);
// The CollectiveParams of a GPU under an engine (null: none): NCCL-like latencies plus the custom all-reduce limits.
CollectiveParams collective_params(const spec::Gpu& gpu, const spec::Engine* engine);

struct OpCost {
  double start_s = 0;  // when the op starts (after waiting for its group)
  double wait_s = 0;   // time blocked at a collective / send / recv before it could start
  OpTime time;         // its own duration and bound (time.time_s)
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto;  // the algorithm used (collectives)
  double end_s() const { return start_s + time.time_s; }
};

struct RankCost {
  int rank = 0;
  int gpu = -1;                // cluster GPU index
  std::vector<OpCost> ops;     // parallel to Step::ranks[i].ops
  double finish_s = 0;
  double busy_s = 0;           // sum of op times (no waits)
  double compute_bound_s = 0;  // time in ops bounded by compute, memory, communication, launch, calibration
  double memory_bound_s = 0;
  double comm_s = 0;
  double launch_bound_s = 0;
  double calibrated_s = 0;
};

struct StepCost {
  std::vector<RankCost> ranks;  // parallel to Step::ranks
  double total_s = 0;           // the iteration: gpu_s plus the engine's share (engine_s)
  double gpu_s = 0;             // max over ranks of finish_s (launch floors included)
  double engine_s = 0;          // what the engine's per-iteration CPU work adds: total_s - gpu_s
  double engine_cpu_s = 0;      // that CPU work before overlap (0 without an engine)
  double launch_floor_s = 0;    // the largest rank's launch floor (0 with a full graph or no engine)
  Launch launch = Launch::kGraph;
  int critical_rank = 0;
  // Time per layer (-1: embedding, head, sampling) on the critical rank: sum of its ops' times + waits.
  std::map<int, double> layer_s;
};

// Paths and group links of one cluster, shared by several CostModels of that cluster (the search's stage shapes
// share one): a path is searched once per source GPU and a group's links once per GPU list. Not thread-safe.
class LinkTables {
 public:
  explicit LinkTables(const spec::Cluster& cluster) : links_(cluster) {}
  LinkCache& links() { return links_; }
  const GroupLinks& group(const std::vector<int>& gpus);

 private:
  LinkCache links_;
  std::map<std::vector<int>, GroupLinks> groups_;  // by GPU list
};

class CostModel {
 public:
  CostModel(const plan::Plan& plan, const spec::Cluster& cluster, CostOptions options = {});
  // Same, with the link tables of `shared` (which must outlive the model and belong to the same cluster).
  CostModel(const plan::Plan& plan, const spec::Cluster& cluster, LinkTables& shared, CostOptions options = {});
  ~CostModel();
  CostModel(CostModel&&) noexcept;
  CostModel& operator=(CostModel&&) noexcept;

  StepCost cost(const plan::Step& step);
  // Same, into `out`, reusing its vectors (callers that cost many steps: the simulator's step runner).
  void cost(const plan::Step& step, StepCost& out);
  // The total only (no per-op records): the search's inner loop.
  double step_time_s(const plan::Step& step);
  // The op times of step.ranks[index] alone, for symmetric ranks: every member of each of its collectives is assumed
  // to run the same program (so the collective starts when this rank reaches it, with this rank's payload), which
  // gives exactly the times `cost` gives when that holds. `out` is parallel to the rank's ops (start_s: the running
  // sum, wait_s = 0). Send/recv and all-to-all need their peers: false (out unspecified), as for a bad group.
  bool cost_symmetric_rank(const plan::Step& step, size_t index, std::vector<OpCost>& out);
  // Same, and with `symmetric_all_to_all` an all-to-all is costed as the cost model costs it when every member runs
  // this rank's op (every member sends this rank's a2a_send_bytes): exact when the ranks' programs are identical.
  bool cost_symmetric_rank(const plan::Step& step, size_t index, std::vector<OpCost>& out, bool symmetric_all_to_all);
  const spec::Engine* engine() const;  // CostOptions::engine

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

StepCost cost_step(const plan::Step& step, const plan::Plan& plan, const spec::Cluster& cluster,
                   const CostOptions& options = {});

}  // namespace parasol::cost

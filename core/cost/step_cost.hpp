// cost_step: the time of one Step (one iteration of one instance) on the cluster, op by op. Each rank runs its ops
// in order; compute ops take their op_time (core/cost/op_cost.hpp); a collective is a barrier across its group (it
// starts when the last member arrives, all members leave together after its time); a send/recv pair is a barrier of
// the two ranks. The step's time is the latest finish over ranks (the critical path). The GPU of every rank comes from
// the plan's placement (instance `CostOptions::instance` of the step's pool).
// CostModel keeps per-plan state (GPU specs, group links) so that the search and the simulator can cost many steps of
// one plan cheaply; cost_step is the one-shot form.
// Owner: planner. Thread behaviour: cost_step is pure; a CostModel is not thread-safe (one per thread).
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

namespace parasol::cost {

struct CostOptions {
  int instance = 0;                                         // which instance of the pool (placement row)
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto;  // force one algorithm for all collectives
  const CalibrationTable* calibration = nullptr;            // overrides the roofline where it covers an op
};

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
  double total_s = 0;           // max over ranks of finish_s
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

StepCost cost_step(const plan::Step& step, const plan::Plan& plan, const spec::Cluster& cluster,
                   const CostOptions& options = {});

}  // namespace parasol::cost

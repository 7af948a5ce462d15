// The simulator's network StepRunner (core/serve/step_runner.hpp; the analytic one is
// core/serve/analytic_step_runner.hpp), one per pool of the Plan: compute ops take their cost-model
// time; every collective and send/recv becomes flows on the platform (sim/collectives.hpp) started when the last member
// of its group arrives, so they share links with everything else in flight (other replicas, KV transfers). It simulates
// the step inside run() (clock_advanced = true); ranks are not actors: one small event loop per step tracks every
// rank's position, starts collectives in time order and waits for their flows.
// Like the analytic runner it reports the step's FLOPs and HBM bytes (all ranks) for MFU / MBU, and per-stage busy time
// for pipelines.
// Thread behaviour: one runner per pool, called from SimGrid actors.
#pragma once

#include <functional>
#include <map>
#include <tuple>
#include <vector>

#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/plan.hpp"
#include "core/serve/analytic_step_runner.hpp"
#include "core/serve/step_runner.hpp"
#include "sim/collectives.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"

namespace parasol::sim {

struct NetworkStats {
  int64_t steps = 0;
  int64_t collectives = 0;
  FlowStats flows;
};

class NetworkStepRunner final : public serve::StepRunner {
 public:
  NetworkStepRunner(const plan::Plan& plan, int pool, Platform& platform,
                    plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto, const spec::Engine* engine = nullptr);
  serve::StepTiming run(int replica, const plan::Batch& batch) override;
  // One micro-batch of a pipelined replica (sim/serving runs up to pp of them at once, each in its own actor): slot
  // keeps concurrent micro-batches of one replica apart (0 <= slot < pp); stage0_done, when set, is called once with
  // the absolute time at which stage 0's ranks finish their part (known as soon as its last send completes, possibly
  // ahead of the clock), so the caller can start the next micro-batch then, as the analytic mode does.
  serve::StepTiming run_micro_batch(int replica, int slot, const plan::Batch& batch,
                                    const std::function<void(double)>& stage0_done);
  std::string name() const override { return "network"; }
  const NetworkStats& stats() const { return stats_; }

 private:
  const FlowSet& flows_for(const plan::Step& step, int replica, const plan::Op& op, int group,
                           const std::vector<double>* a2a);

  const plan::Plan& plan_;
  int pool_;
  Platform& platform_;
  plan::CollectiveAlgo algo_;
  const spec::Engine* engine_ = nullptr;
  double efficiency_ = 1.0;
  plan::StepBuilder builder_;
  cost::CostModel cost_;
  std::map<std::pair<int, int>, plan::Step> steps_;  // per (replica, slot): run() yields to other actors meanwhile
  // Per replica: micro-batches take their ranks in the order they started (see run_micro_batch).
  struct Gates {
    int64_t started = 0;            // micro-batches started
    std::vector<int64_t> finished;  // per rank: how many micro-batches are done with it
    std::vector<double> free_s;     // per rank: when the last of them was
    simgrid::s4u::ConditionVariablePtr cv;
    simgrid::s4u::MutexPtr mutex;
  };
  std::map<int, Gates> gates_;
  std::map<std::tuple<int, int, int, double>, FlowSet> cache_;  // (replica, group, kind, bytes) -> flows
  NetworkStats stats_;
};

}  // namespace parasol::sim

// The simulator's StepRunners (core/serve/step_runner.hpp), one per pool of the Plan:
//   AnalyticStepRunner  the cost model's time of build_step(plan, batch) (core/cost), memoized on the exact batch
//                       signature (each sequence's new tokens, context and attention group), so repeated shapes cost a
//                       hash lookup. The clock is advanced by the driver.
//   NetworkStepRunner   compute ops take their cost-model time; every collective and send/recv becomes flows on the
//                       platform (sim/collectives.hpp) started when the last member of its group arrives, so they share
//                       links with everything else in flight (other replicas, KV transfers). It simulates the step
//                       inside run() (clock_advanced = true); ranks are not actors: one small event loop per step
//                       tracks every rank's position, starts collectives in time order and waits for their flows.
// Both report the step's FLOPs and HBM bytes (all ranks) for MFU / MBU, and per-stage busy time for pipelines.
// Thread behaviour: one runner per pool; the network runner must be called from a SimGrid actor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/plan.hpp"
#include "core/serve/step_runner.hpp"
#include "sim/collectives.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"

namespace parasol::sim {

class AnalyticStepRunner final : public serve::StepRunner {
 public:
  AnalyticStepRunner(const plan::Plan& plan, int pool, const spec::Cluster& cluster);
  serve::StepTiming run(int replica, const plan::Batch& batch) override;
  std::string name() const override { return "analytic"; }
  int64_t memo_hits() const { return hits_; }
  int64_t memo_misses() const { return misses_; }

 private:
  struct Entry {
    std::vector<int64_t> key;
    serve::StepTiming timing;
  };
  plan::StepBuilder builder_;
  cost::CostModel cost_;
  int pp_ = 1;
  plan::Step step_;
  std::vector<int64_t> key_;
  std::unordered_map<uint64_t, std::vector<Entry>> memo_;  // lookups only, never iterated
  int64_t hits_ = 0, misses_ = 0, entries_ = 0;
};

struct NetworkStats {
  int64_t steps = 0;
  int64_t collectives = 0;
  FlowStats flows;
};

class NetworkStepRunner final : public serve::StepRunner {
 public:
  NetworkStepRunner(const plan::Plan& plan, int pool, Platform& platform,
                    plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto);
  serve::StepTiming run(int replica, const plan::Batch& batch) override;
  std::string name() const override { return "network"; }
  const NetworkStats& stats() const { return stats_; }

 private:
  const FlowSet& flows_for(int replica, const plan::Op& op, int group, const std::vector<double>* a2a);

  const plan::Plan& plan_;
  int pool_;
  Platform& platform_;
  plan::CollectiveAlgo algo_;
  double efficiency_ = 1.0;
  plan::StepBuilder builder_;
  cost::CostModel cost_;
  plan::Step step_;
  std::map<std::tuple<int, int, int, double>, FlowSet> cache_;  // (replica, group, kind, bytes) -> flows
  NetworkStats stats_;
};

// Sum of FLOPs and HBM bytes of every op of every rank.
void step_work(const plan::Step& step, double& flops, double& bytes);

}  // namespace parasol::sim

// StepRunner: DESIGN contract 3. Runs (or costs) one scheduler iteration of one replica and says how long it took.
// Implementations: analytic (cost model over build_step's ops, memoized on the batch signature), network-detailed
// (collectives as SimGrid flows) and real (exec backend). The Scheduler neither knows nor cares which: the driver
// calls schedule() -> runner.run() -> complete() and advances its Clock by the returned time.
// Thread behaviour: a runner is used by one driver thread (or one SimGrid actor) at a time unless it says otherwise.
#pragma once

#include <string>
#include <vector>

#include "core/plan/step.hpp"

namespace parasol::serve {

struct OpTime {
  int rank = 0;         // instance rank
  int op_index = 0;     // index into Step::ranks[rank].ops
  double start_s = 0;   // relative to the start of the step
  double duration_s = 0;
};

struct StepTiming {
  double total_s = 0;  // from the start of the iteration to the last token of the batch being available
  // Per pipeline stage busy time (size pp; empty when pp == 1 or unknown), and when each stage starts relative to the
  // start of the step on an idle pipeline (stage_start_s, same size; empty: the stages run back to back). With pp > 1
  // the serving loop runs micro-batches through the stages as a flow shop: a micro-batch's stage s starts when its
  // stage s - 1 got there and stage s finished the previous micro-batch; the next micro-batch enters when stage 0 is
  // free.
  std::vector<double> stage_s;
  std::vector<double> stage_start_s;
  // Work totals over all ranks of the replica, for MFU / MBU (0 when unknown).
  double flops = 0;
  double bytes = 0;  // HBM traffic
  // Per-op times, filled only when the runner was asked for them (tracing, validation); empty otherwise.
  std::vector<OpTime> ops;
  // True when run() itself already let the clock advance by total_s (a real executor, or a SimGrid runner that
  // simulated the step's activities inside run()); the driver then must not advance it again.
  bool clock_advanced = false;
};

class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // `replica` indexes the replicas of the pool the batch runs on (see router.hpp); the batch is the Scheduler's
  // iteration (seq_id = Request::id).
  virtual StepTiming run(int replica, const plan::Batch& batch) = 0;
  virtual std::string name() const = 0;
};

// A runner with closed-form step times, for tests and benchmarks: total = base_s + prefill_token_s x (prefill tokens)
// + decode_seq_s x (decode sequences). Stateless.
class LinearStepRunner final : public StepRunner {
 public:
  LinearStepRunner(double base_s, double prefill_token_s, double decode_seq_s)
      : base_s_(base_s), prefill_token_s_(prefill_token_s), decode_seq_s_(decode_seq_s) {}
  StepTiming run(int replica, const plan::Batch& batch) override;
  std::string name() const override { return "linear"; }

 private:
  double base_s_, prefill_token_s_, decode_seq_s_;
};

}  // namespace parasol::serve

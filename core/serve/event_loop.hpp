// The reference serving loop: a single-threaded discrete-event driver of core/serve on a ManualClock. It pulls
// requests from a source as their arrival time comes, routes them, runs each replica's iterations on a StepRunner
// (up to pp micro-batches in flight per replica, the next starting when stage 0 is free), and feeds every record and
// iteration to a MetricsCollector. sim/ drives the same classes from SimGrid actors; tests and benchmarks use this
// loop directly. Events at equal times: iteration ends (replica order) before arrivals, so freed KV is visible.
// Thread behaviour: runs on the calling thread; the objects passed in are used only during the call.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
#include "core/serve/scheduler.hpp"
#include "core/serve/step_runner.hpp"
#include "core/serve/workload.hpp"

namespace parasol::serve {

struct EventLoopOptions {
  int pp = 1;  // micro-batches in flight per replica
  // Called every `progress_every` requests finished (records), with the clock and the count; empty: never.
  std::function<void(double now_s, int64_t done)> progress;
  int64_t progress_every = 10000;
};

struct EventLoopResult {
  double end_s = 0;        // clock when the last request left
  int64_t iterations = 0;
  int64_t requests = 0;    // records produced (== arrived)
};

// Serves `source` to exhaustion. `replicas` must be mixed-role schedulers (disaggregation is sim/'s business).
EventLoopResult run_event_loop(RequestSource& source, Router& router, std::vector<Scheduler>& replicas,
                               StepRunner& runner, MetricsCollector& metrics, const EventLoopOptions& options = {});

}  // namespace parasol::serve

// run_event_loop: the serving loop (serving_loop.hpp) over one mixed pool on virtual time (ManualHost), for tests and
// benchmarks that bring their own schedulers, router and runner. Same loop, same order of events as sim and exec.
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

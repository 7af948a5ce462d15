#include "core/serve/event_loop.hpp"

#include "core/serve/serving_loop.hpp"

namespace parasol::serve {

EventLoopResult run_event_loop(RequestSource& source, Router& router, std::vector<Scheduler>& replicas,
                               StepRunner& runner, MetricsCollector& metrics, const EventLoopOptions& options) {
  LoopPool pool;
  for (Scheduler& s : replicas) pool.schedulers.push_back(&s);
  pool.router = &router;
  pool.runner = &runner;
  pool.pp = options.pp;
  LoopOptions o;
  o.progress = options.progress;
  o.progress_every = options.progress_every;
  ServingLoop loop({std::move(pool)}, source, metrics, std::move(o));
  ManualHost host;
  const LoopResult r = loop.run(host);
  EventLoopResult result;
  result.end_s = r.end_s;
  result.iterations = r.iterations;
  result.requests = r.requests;
  return result;
}

}  // namespace parasol::serve

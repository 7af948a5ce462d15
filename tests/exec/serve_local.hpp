// Serving a Plan in-process on local ranks (exec::serve_rank on run_local's threads, world rank 0 driving), for the
// executor's serving tests: the run's result, summary, every request's record and every iteration (replica, index,
// start, end).
#pragma once

#include <vector>

#include "core/serve/metrics.hpp"
#include "exec/generate.hpp"
#include "exec/serving.hpp"

namespace parasol::exec::testing {

struct Served {
  ServeResult result;
  serve::Summary summary;
  std::vector<serve::RequestRecord> records;
  std::vector<serve::IterationView> iterations;  // `it` cleared: only replica, index, start and end
};

// One ServeConfig per pool; synthetic weights and prompts from `seed`.
inline Served serve_local(const plan::Plan& plan, const std::vector<ServeConfig>& configs,
                          const serve::WorkloadSpec& ws, uint64_t seed) {
  int world = 0;
  for (const plan::Pool& p : plan.pools) world += p.config.instance_size() * std::max(1, p.config.dp);
  auto src = serve::make_source(ws, seed);
  serve::MetricsCollector metrics(serve::MetricsConfig{});
  SyntheticWeights weights(seed);
  Served run;
  serve::LoopOptions lo;
  lo.on_record = [&](const serve::RequestRecord& r) { run.records.push_back(r); };
  lo.on_iteration = [&](const serve::IterationView& v) {
    serve::IterationView x = v;
    x.it = nullptr;
    run.iterations.push_back(x);
  };
  run_local(world, 30.0, [&](int rank, Communicator& comm) {
    ServeResult r = serve_rank(plan, weights, comm, configs, rank == 0 ? src.get() : nullptr,
                               rank == 0 ? &metrics : nullptr, lo);
    if (rank == 0) run.result = std::move(r);
  });
  run.summary = metrics.finish(run.result.end_s);
  return run;
}

}  // namespace parasol::exec::testing

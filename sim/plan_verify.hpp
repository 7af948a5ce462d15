// Verified ranking: the plan search's best candidates (core/plan/search.hpp, ranked by the steady-state estimator)
// simulated on the scenario's own workload (the first `requests` requests; analytic fidelity, the scenario's engine
// and serving knobs), then ranked by what the simulation measured: first the candidates whose simulated TTFT and
// TPOT p99 meet the SLOs with a simulated goodput per GPU (requests meeting both SLOs per second, per GPU) within 2% of
// the best such (below saturation they all serve the offered load: the estimator's rank orders them), then the others
// that meet the SLOs and then those that miss them, by simulated goodput per GPU. Each candidate runs in a forked child process (one SimGrid engine per process), one after the
// other, so the result is deterministic and the caller may create its own engine afterwards. `parasol plan --verify K`
// and `parasol sim --verify K` use it; docs/search.md.
// Thread behaviour: forks; call it from the main thread before any SimGrid engine exists in this process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/plan/search.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::sim {

struct Verified {
  int estimator_rank = 0;  // 1-based, in SearchResult::ranked
  plan::Candidate candidate;
  bool ok = false;
  std::string error;       // why the simulation failed (ok false)
  int64_t requests = 0;    // simulated
  double duration_s = 0;
  double slo_fraction = 0;            // requests meeting both SLOs / arrived
  double goodput_rps = 0;             // requests meeting both SLOs per second
  double goodput_rps_per_gpu = 0;
  double ttft_p99_s = 0, tpot_p99_s = 0;
  bool meets_slo = false;             // simulated p99s within the SLOs
};

struct Verification {
  std::vector<Verified> verified;  // in the verified order (best first)
  int64_t requests = 0;            // per candidate
};

// Simulates the best `k` of `result.ranked` (fewer when fewer are ranked). `requests` caps each simulation.
Verification verify_candidates(const spec::Scenario& scenario, const plan::SearchInput& input,
                               const plan::SearchResult& result, int k, int64_t requests, uint64_t seed);

// Signed relative error of the estimate against the simulation, (estimate - simulated) / simulated; 0 when the
// simulated value is 0.
double estimate_error(double estimate, double simulated);

}  // namespace parasol::sim

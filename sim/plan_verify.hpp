// Verified ranking: the plan search's best candidates (core/search/search.hpp, ranked by the steady-state estimator)
// simulated on the scenario's own workload (the first `requests` requests; analytic fidelity, the scenario's engine
// and serving knobs), then ranked by what the simulation measured.
//   Goodput per GPU (the default objective): first the candidates whose simulated TTFT and TPOT p99 meet the SLOs
//   with a simulated goodput per GPU (requests meeting both SLOs per second, per GPU) within 2% of the best such
//   (below saturation they all serve the offered load: the estimator's rank orders them), then the others that meet
//   the SLOs and then those that miss them, by simulated goodput per GPU.
//   Fewest GPUs: each candidate is first re-sized in simulation: from the estimator's instance counts, one instance
//   more (of the pool whose SLO is missed: prefill for TTFT, decode for TPOT) until the simulation meets the SLOs,
//   else one fewer (prefill first, then decode) while it still meets them; the candidate keeps the smallest sizing
//   that met them. Then those that meet the SLOs, fewest GPUs first, then by simulated goodput per GPU.
// Each simulation runs in a forked child process (one SimGrid engine per process), one after the other, so the result
// is deterministic and the caller may create its own engine afterwards. `parasol plan --verify K` and `parasol sim
// --verify K` use it; docs/search.md.
// Thread behaviour: forks; call it from the main thread before any SimGrid engine exists in this process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/plan/plan.hpp"
#include "core/search/search.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::sim {

// What one simulation of a plan on the scenario's workload measured.
struct Simulated {
  bool ok = false;
  std::string error;       // why the simulation failed (ok false)
  int64_t requests = 0;    // simulated
  double duration_s = 0;
  double slo_fraction = 0;            // requests meeting both SLOs / arrived
  double goodput_rps = 0;             // requests meeting both SLOs per second
  double ttft_p99_s = 0, tpot_p99_s = 0;
  bool meets_slo = false;             // simulated p99s within the SLOs
};

// Simulates `plan` on the scenario's workload (the first `requests` requests, arrivals `rate_scale` times as dense)
// in a forked child process. The workload's own request cap applies when smaller, unless `replace_cap` (then
// `requests` of a synthetic workload are drawn whatever its cap; a trace gives at most its rows).
Simulated simulate_isolated(const spec::Scenario& scenario, const plan::Plan& plan, int64_t requests, uint64_t seed,
                            double rate_scale = 1.0, bool replace_cap = false);

struct Verified : Simulated {
  int estimator_rank = 0;  // 1-based, in SearchResult::ranked
  search::Candidate candidate;  // fewest GPUs: re-sized in simulation (estimated_gpus keeps the estimator's count)
  int estimated_gpus = 0;
  int simulations = 0;     // simulations this candidate took (more than 1 when re-sized)
  double goodput_rps_per_gpu = 0;
  // Fewest GPUs: the largest smaller sizing simulated that missed the SLOs (colocated: one instance fewer, unless
  // the simulations ran out), when one was simulated.
  std::optional<search::Candidate> smaller_candidate;
  Simulated smaller;
};

struct Verification {
  std::vector<Verified> verified;  // in the verified order (best first)
  int64_t requests = 0;            // per simulation
  spec::Objective objective = spec::Objective::kGoodputPerGpu;
};

// Simulates the best `k` of `result.ranked` (fewer when fewer are ranked). `requests` caps each simulation.
Verification verify_candidates(const spec::Scenario& scenario, const search::SearchInput& input,
                               const search::SearchResult& result, int k, int64_t requests, uint64_t seed);

// Signed relative error of the estimate against the simulation, (estimate - simulated) / simulated; 0 when the
// simulated value is 0.
double estimate_error(double estimate, double simulated);

}  // namespace parasol::sim

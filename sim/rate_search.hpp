// The highest arrival rate a deployment sustains within the SLOs, found in simulation (as Vidur-Search and DistServe
// do): the scenario's workload with its arrivals compressed or stretched in time (rate_scale: the same requests, the
// same lengths, inter-arrival times divided by the factor), each rate simulated in its own child process
// (plan_verify.hpp simulate_isolated) on the same number of requests (`requests`, in place of the workload's own
// cap: a capacity needs enough requests for the queues to build). From the workload's own rate the factor doubles
// while the simulated TTFT and TPOT p99 meet the SLOs (or halves while they miss), then bisects (geometrically)
// between the last rate that met them and the first that missed until they are within `tolerance` of each other.
// The result brackets the crossing: `sustained_rps` met the SLOs in simulation, `missed_rps` did not, and every
// simulated rate is a point of the rate-vs-latency curve. `parasol plan --objective max_rate`; docs/search.md.
// Thread behaviour: forks (see plan_verify.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/plan/plan.hpp"
#include "core/spec/scenario.hpp"
#include "sim/plan_verify.hpp"

namespace parasol::sim {

struct RatePoint {
  double rate_rps = 0;    // mean arrival rate simulated
  double rate_scale = 1;  // of the workload's arrivals
  Simulated sim;
};

struct RateSearch {
  double base_rate_rps = 0;   // the workload's own mean rate (rate_scale 1)
  double sustained_rps = 0;   // the highest simulated rate that met the SLOs (0: none did)
  double missed_rps = 0;      // the lowest simulated rate above it that missed them (0: none did, up to the cap)
  std::vector<RatePoint> curve;  // every simulated rate, ascending
  int64_t requests = 0;          // per simulation
  std::string note;              // why the search stopped short of a bracket, if it did
};

struct RateSearchOptions {
  int64_t requests = 2000;
  double tolerance = 0.02;       // bracket: missed <= sustained x (1 + tolerance)
  int max_simulations = 24;
  double max_scale = 1024, min_scale = 1.0 / 1024;
};

RateSearch search_max_rate(const spec::Scenario& scenario, const plan::Plan& plan, double base_rate_rps,
                           uint64_t seed, const RateSearchOptions& options = {});

// The curve as CSV (rate_rps, rate_scale, requests, slo_fraction, goodput_rps, ttft_p99_s, tpot_p99_s, meets_slo).
std::string rate_curve_csv(const RateSearch& r);
// The curve as a picture: TTFT and TPOT p99 against the rate, the SLOs and the sustained rate marked.
std::string rate_curve_svg(const RateSearch& r, const spec::Slo& slo, const std::string& title);

}  // namespace parasol::sim

// How `parasol sim` picks the Plan it simulates when none is given (no --plan, no `plan:` in the scenario): the same
// search as `parasol plan` (core/search/search.hpp) over the scenario's space, SLOs and load, and its best candidate.
// The load is the workload's mean rate and lengths (a trace read in full with its window, scaling and cap; a synthetic
// workload's rate and the means of 20,000 draws), or the scenario's `search.workload_stats` when the trace file is
// absent, exactly as docs/search.md describes for `parasol plan`.
// Also: the workload to simulate when the scenario's trace is absent (a Poisson stream with the declared statistics).
// Thread behaviour: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/plan/placement.hpp"
#include "core/search/goodput.hpp"
#include "core/search/planning_load.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::sim {

struct PlanChoice {
  plan::Plan plan;
  std::string label;  // the chosen layout
  std::string why;    // one line: how it was chosen
};

// Searches the scenario's space and returns the best candidate as a Plan. ConfigError when nothing is feasible.
// `verify` > 0: the best `verify` candidates are simulated on `verify_requests` requests of the workload and the best
// simulated one is chosen (sim/plan_verify.hpp; call before this process creates its SimGrid engine).
PlanChoice choose_plan(const spec::Scenario& s, uint64_t seed, int verify = 0, int64_t verify_requests = 2000);

// The scenario's workload. A trace file that is absent is a ConfigError at its path (saying where traces come from),
// unless the workload asks for a stand-in (`missing_trace: workload_stats`): then Poisson arrivals at the declared
// search.workload_stats rate with lognormal lengths (cv 1) of the declared means, and `note` says so (the caller
// prints it whatever the verbosity, and records it in the summary). nullopt when the scenario has no workload at all.
std::optional<serve::WorkloadSpec> scenario_workload(const spec::Scenario& s, std::string& note);

}  // namespace parasol::sim

// The load a search plans for (core/search/search.hpp): a scenario workload's mean arrival rate and mean prompt and
// output lengths, or the declared `search.workload_stats` when the workload's trace file is absent. Shared by
// `parasol plan` and `parasol sim` (which searches when no plan is given), so the two can never disagree.
// Thread behaviour: pure function of its inputs.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/search/goodput.hpp"
#include "core/search/search.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::search {

// `source` says where the load came from ("poisson 10 req/s ... (20000 requests)",
// "declared workload_stats (trace ... not found)"). Bad or missing workloads are ConfigErrors.
WorkloadLoad planning_load(const spec::Scenario& s, uint64_t seed, std::string& source);

// The batch limits, KV block size and memory fraction of a scenario's serving knobs (spec::effective_serving).
void apply_serving(const spec::Serving& serving, plan::PlanOptions& options);
// The search a scenario asks for: its model, cluster, GPU type, `search:` space, SLOs, serving knobs and
// planning_load().
SearchInput scenario_search_input(const spec::Scenario& s, uint64_t seed, std::string& load_source);

// Trace files a workload section names, as (node that names it, found on this machine?).
std::vector<std::pair<yaml::Node, bool>> referenced_traces(const yaml::Node& workload);

}  // namespace parasol::search

// Running flows on the platform: a FlowSet (sim/collectives.hpp) becomes SimGrid comms that start together, share
// links by max-min fairness with whatever else is in flight, and complete; then the step latencies that pipelining
// cannot hide elapse. Call only from inside a SimGrid actor (it blocks the calling actor in simulated time).
// Thread behaviour: SimGrid actors only (single-threaded event loop).
#pragma once

#include <cstdint>

#include "sim/collectives.hpp"
#include "sim/platform.hpp"

namespace parasol::sim {

struct FlowStats {
  int64_t flows = 0;       // comms started
  double bytes = 0;        // bytes moved (after efficiency)
};

// Runs `fs` to completion and returns its simulated duration. Accounts bytes per link on the platform.
double run_flows(Platform& p, const FlowSet& fs, FlowStats* stats = nullptr);

}  // namespace parasol::sim

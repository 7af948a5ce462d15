#include "sim/flows.hpp"

#include <cmath>
#include <vector>

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

double run_flows(Platform& p, const FlowSet& fs, FlowStats* stats) {
  const double t0 = sg4::Engine::get_clock();
  std::vector<sg4::CommPtr> comms;
  comms.reserve(fs.flows.size());
  p.begin_flow_group(algo_name(fs.algo));
  for (const Flow& f : fs.flows) {
    if (f.src == f.dst || f.bytes <= 0) continue;
    const auto bytes = static_cast<uint64_t>(std::llround(f.bytes));
    comms.push_back(sg4::Comm::sendto_async(p.host(f.src), p.host(f.dst), bytes));
    p.account(f.src, f.dst, static_cast<double>(bytes));
    if (stats) {
      stats->flows += 1;
      stats->bytes += static_cast<double>(bytes);
    }
  }
  if (!comms.empty()) sg4::Comm::wait_all(comms);
  if (fs.extra_latency_s > 0) sg4::this_actor::sleep_for(fs.extra_latency_s);
  return sg4::Engine::get_clock() - t0;
}

}  // namespace parasol::sim

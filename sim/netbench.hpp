// netbench: nccl-tests for the simulated cluster. Runs all-reduce, all-gather, reduce-scatter and all-to-all over a
// group of GPUs for message sizes from min to max (x2 steps), each collective alone on the platform (so the numbers
// are the uncontended curve), for every applicable algorithm and for the automatic choice, and reports simulated
// time, algbw = S / t and busbw = algbw x bus_factor (nccl-tests definitions, sim/collectives.hpp). Renders the rows as
// CSV and as an SVG chart (busbw and time against size, optional reference lines). Used by `parasol netbench`
// (tools/sim_cmd_netbench.cpp).
// Thread behaviour: run_netbench creates this process's SimGrid engine (one simulation per process).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/spec/cluster.hpp"
#include "sim/collectives.hpp"

namespace parasol::sim {

struct NetbenchOptions {
  std::vector<CollKind> kinds = {CollKind::kAllReduce, CollKind::kAllGather, CollKind::kReduceScatter,
                                 CollKind::kAllToAll};
  std::vector<int> gpus;  // the group (cluster GPU indices); empty: the GPUs of node 0
  double min_bytes = 1024;
  double max_bytes = 8.0 * (1ull << 30);
  double efficiency = 1.0;      // achieved / nominal bandwidth (Gpu::eff.comm_efficiency)
  bool every_algorithm = true;  // also rows for each applicable algorithm, not only the automatic choice
};

struct NetbenchRow {
  CollKind kind = CollKind::kAllReduce;
  std::string algo;  // "auto:ring" for the automatic choice, else the forced algorithm
  double bytes = 0;
  double time_s = 0;
  double algbw_Bps = 0;
  double busbw_Bps = 0;
  int64_t flows = 0;
};

std::vector<NetbenchRow> run_netbench(const spec::Cluster& cluster, const NetbenchOptions& options);
std::string netbench_csv(const std::vector<NetbenchRow>& rows);
// A horizontal reference line on the busbw panel (e.g. a public nccl-tests figure).
struct NetbenchReference {
  std::string label;
  double busbw_Bps = 0;
};
// Two panels against message size: busbw (GB/s) and time (us, log scale); the automatic choice dashed.
std::string netbench_svg(const std::vector<NetbenchRow>& rows, const std::string& title,
                         const std::vector<NetbenchReference>& refs = {});

}  // namespace parasol::sim

// A reader of nccl-tests' standard text output (all_reduce_perf, all_gather_perf, reduce_scatter_perf, alltoall_perf;
// github NVIDIA/nccl-tests) into calibration Samples, so `parasol calibrate --nccl-tests FILE --gpu G` fits the
// collective families to a run on the user's own machine.
//   header  "# Collective test starting: all_reduce_perf" names the test (the first one it sees, else the file name);
//           the "#  Rank  N Group ... device ..." lines count the ranks (one per GPU of the run).
//   rows    size (B), count (elements), type, redop, root, then out-of-place time (us), algbw, busbw, #wrong and the
//           same for in-place; older versions omit root. A row becomes one Sample of the test's family: one collective
//           op of comm_bytes = size (nccl-tests' buffer size S, as Op::comm_bytes) over the run's ranks, measured as
//           the out-of-place time (what AIConfigurator records too).
// Every malformed row is a ConfigError naming file:line and the column. The ranks are taken to sit in one scale-up
// domain of the GPU (as the calibration's NVSwitch node assumes); a multi-node run is the caller's to reject.
// Thread behaviour: pure functions.
#pragma once

#include <string>
#include <vector>

#include "core/cost/measurement.hpp"

namespace parasol::cost {

// The family (all_reduce, all_gather, reduce_scatter, alltoall) of an nccl-tests binary name ("all_reduce_perf");
// empty when parasol does not model it.
std::string nccl_tests_family(const std::string& test);
// Samples of `text` (the output of one or more nccl-tests runs; `name` for errors) measured on parasol GPU `gpu`.
std::vector<Sample> nccl_tests_samples(const std::string& text, const std::string& name, const std::string& gpu);
std::vector<Sample> load_nccl_tests(const std::string& path, const std::string& gpu);

}  // namespace parasol::cost

// Executor profiles (`parasol exec --profile`): the calibration CSV of core/cost/calibration.hpp with profile columns
// after its fifteen, so that every row is one whole op of one iteration of one rank:
//   ...,time_s,rank,iteration,step_s,name,layer,v_head_dim,q_lens,ctx_lens,expert_tokens
// (lists are space-separated integers; step_s, the iteration's wall time, is on rank 0's rows only). A calibration
// table reads such a file as before (it ignores the profile columns), and the readers here accept a profile without
// them (an older profile): its attention rows, which lack the per-sequence lengths, then give no Sample.
// This file writes the rows (the executor's profiler calls profile_csv_row), reads them back as whole ops, and turns
// them into the Samples that `parasol calibrate --profile` fits and `parasol validate` checks: one Sample per distinct
// (family, gpu, shape), its time the median of the rows with that shape (repeats over layers, ranks and iterations),
// so a profile taken on a noisy machine still gives one robust time per shape.
// Families: "gemm" (dense, batched and grouped GEMMs, the MoE gate), "context_attention" (an attention op with a query
// longer than one token), "generation_attention" (every query one token; MLA included in both), "elementwise" (every
// other compute op). Communication ops are read but give no Sample (the device file does not model the communicator).
// Thread behaviour: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/cost/measurement.hpp"
#include "core/plan/step.hpp"

namespace parasol::cost {

// Where and when a profiled op ran.
struct ProfileContext {
  int rank = 0;
  int64_t iteration = -1;  // scheduler iteration (0-based); -1: unknown
  double step_s = 0;       // the iteration's measured wall time (rank 0); 0: not known on this rank
};

// The header line (no newline) and one row (no newline) of an executor profile.
std::string profile_csv_header();
std::string profile_csv_row(const plan::Op& op, const std::string& gpu, double time_s, const ProfileContext& ctx);
// True for the columns above that a calibration table ignores (rank, iteration, ..., expert_tokens).
bool is_profile_column(const std::string& name);

// One row read back: the op as the Step stated it (shape, FLOPs, bytes), where it ran, its measured time.
struct ProfileRow {
  plan::Op op;
  std::string gpu;
  std::string where;       // file:line
  int rank = -1;           // -1: the profile has no rank column
  int64_t iteration = -1;  // -1: no iteration column (or an empty cell)
  double step_s = 0;       // 0: not given on this row
  double time_s = 0;
};
// Every row of `table` (an executor profile or a calibration CSV). Malformed cells throw ConfigError (file:line).
std::vector<ProfileRow> read_profile(const CsvTable& table);

// The family of an op ("" for communication ops, and for attention without per-sequence lengths).
std::string profile_family(const plan::Op& op);
// The op's shape as text: equal for ops the cost model cannot tell apart (Sample::key; the held-out split hashes it).
std::string profile_key(const plan::Op& op);

// Samples of the rows, grouped by (family, gpu, key): ops = {the op}, time_s = median of the group's times, where =
// the first row's file:line. In order of first appearance.
std::vector<Sample> profile_samples(const std::vector<ProfileRow>& rows);
std::vector<Sample> profile_samples(const CsvTable& table);

}  // namespace parasol::cost

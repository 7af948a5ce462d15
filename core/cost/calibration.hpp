// CalibrationTable: measured op times (`parasol exec --profile`, an AIConfigurator folder via `--calibration DIR`),
// which override the model for the ops and shapes they cover. Read from CSV (format in docs/cost-model.md):
//   gpu,kind,dtype,phase,m,n,k,batch,heads,kv_heads,head_dim,tokens,flops,bytes,time_s
// Rows match an op on (gpu, kind, dtype) plus the kind's exact keys (GEMM: n, k, batch; attention: phase, heads,
// kv_heads, head_dim and the number of sequences, written in the `batch` column; other ops: n); among matching rows
// time is interpolated linearly in log(time) vs log(x), x being the kind's size key (GEMM: m; prefill attention:
// flops; decode attention: bytes; other ops: bytes). Attention also interpolates between the two measured sequence
// counts around the op's (log-log), when both cover its x. An op whose x lies outside the rows' range is not covered
// (the model applies): no extrapolation.
// Collectives (rows of kind all_reduce, all_gather, reduce_scatter, all_to_all; n = the number of GPUs, all in one
// scale-up domain; bytes = the op's comm_bytes; dtype ignored) are looked up by lookup_collective.
// load() reads a CSV file or a folder (docs/calibration.md); active_calibration() is the one `--calibration` or a
// scenario's `calibration:` made active for the process.
// Thread behaviour: immutable after load; lookups are const and thread-safe. The active
// calibration is set once by the CLI before any costing and only read afterwards.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "core/plan/step.hpp"

namespace parasol::cost {

struct CalibrationRow {
  std::string gpu;
  plan::OpKind kind = plan::OpKind::kGemm;
  std::string dtype = "bf16";
  std::string phase;  // attention: "prefill" | "decode"; empty otherwise
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  int64_t tokens = 0;
  double flops = 0, bytes = 0;
  double time_s = 0;
};

class CalibrationTable {
 public:
  // Parses CSV text; `name` stands for the file in errors (ConfigError with line and column name).
  static CalibrationTable parse_csv(const std::string& text, const std::string& name);
  static CalibrationTable load_csv(const std::string& path);
  // A CSV file (calibration or executor profile), or a folder: its *.csv files in these formats, and when it is an
  // AIConfigurator GPU folder (h100_sxm/, or one framework folder of it) or their parent, its tables converted to
  // rows through the op families' readers (fit_family.hpp). Bad input: ConfigError.
  static CalibrationTable load(const std::string& path);

  // Adds `other`'s rows (repeated points: geometric mean, as add()).
  void merge(const CalibrationTable& other);

  void add(const CalibrationRow& row);
  // The measured (interpolated) time of `op` on `gpu`, or nullopt when the table does not cover it.
  std::optional<double> lookup(const plan::Op& op, const std::string& gpu) const;
  // The measured time of collective `kind` over `num_gpus` GPUs of `gpu` (one scale-up domain) with `bytes` =
  // the op's comm_bytes, or nullopt when not covered.
  std::optional<double> lookup_collective(plan::OpKind kind, const std::string& gpu, int num_gpus, double bytes) const;
  size_t size() const { return rows_; }

  // The CSV header line (no newline) and one row as CSV, for writers (the executor's profiler).
  static std::string csv_header();
  static std::string csv_row(const CalibrationRow& row);
  // The row an executor would write for `op` measured at `time_s` on `gpu`.
  static CalibrationRow row_for(const plan::Op& op, const std::string& gpu, double time_s);

 private:
  // (gpu, kind, dtype, exact keys) -> points (x, time) sorted by x.
  using Key = std::tuple<std::string, int, std::string, std::string>;
  std::map<Key, std::vector<std::pair<double, double>>> curves_;
  size_t rows_ = 0;
  void add_point(const Key& key, double x, double time_s);
  std::optional<double> curve_at(const Key& key, double x) const;  // nullopt: no curve, or x outside it
};

// The calibration of this process (`--calibration`, a scenario's `calibration:`): op_time and the step cost use it
// when their caller passes none. nullptr (the default): none.
void set_active_calibration(std::shared_ptr<const CalibrationTable> table);
const CalibrationTable* active_calibration();

}  // namespace parasol::cost

// CalibrationTable: op times measured by the executor (`parasol exec --profile`, `parasol calibrate`), which override
// the roofline for the ops and shapes they cover. Read from CSV (format in docs/cost-model.md):
//   gpu,kind,dtype,phase,m,n,k,batch,heads,kv_heads,head_dim,tokens,flops,bytes,time_s
// Rows match an op on (gpu, kind, dtype) plus the kind's exact keys (GEMM: n, k, batch; attention: phase, heads,
// kv_heads, head_dim; other ops: n); among matching rows time is interpolated linearly in log(time) vs log(x), x being
// the kind's size key (GEMM: m; prefill attention: flops; decode attention: bytes; other ops: bytes). An op whose x
// lies outside the rows' range is not covered (the roofline applies): no extrapolation.
// Owner: planner. Thread behaviour: immutable after load; lookups are const and thread-safe.
#pragma once

#include <map>
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

  void add(const CalibrationRow& row);
  // The measured (interpolated) time of `op` on `gpu`, or nullopt when the table does not cover it.
  std::optional<double> lookup(const plan::Op& op, const std::string& gpu) const;
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
};

}  // namespace parasol::cost

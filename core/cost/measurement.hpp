// Measured tables for `parasol calibrate`: a checked CSV reader (every bad cell is a ConfigError with file, line and
// column name) and the Sample a measurement becomes: the ops of a Step whose summed time was measured.
// Thread behaviour: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/plan/step.hpp"

namespace parasol::cost {

// A CSV file with a header line; `#` lines and blank lines are skipped.
class CsvTable {
 public:
  static CsvTable load(const std::string& path);
  static CsvTable parse(const std::string& text, const std::string& name);

  const std::string& name() const { return name_; }
  size_t rows() const { return cells_.size(); }
  bool has(const std::string& column) const;
  int line(size_t row) const { return lines_[row]; }
  // "file:line" of a row, for Sample::where.
  std::string where(size_t row) const;
  // Cell accessors: a missing column or a malformed value throws ConfigError(file, line, column, key = column name).
  const std::string& str(size_t row, const std::string& column) const;
  int64_t integer(size_t row, const std::string& column, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  double number(size_t row, const std::string& column, double min = -1e308, double max = 1e308) const;

 private:
  int col(const std::string& column, size_t row) const;
  std::string name_;
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> cells_;
  std::vector<std::vector<int>> columns_;  // 1-based character column of each cell, for errors
  std::vector<int> lines_;
};

// One measurement: the ops whose summed op_time (or, for a collective, whose collective time over `num_gpus` GPUs
// of one scale-up domain of `gpu`) was measured as `time_s`.
struct Sample {
  std::string family;         // Family::name
  std::string gpu;            // parasol GPU name (topologies/gpus/<gpu>.yaml `name:`)
  std::string where;          // file:line of the row
  std::string key;            // the shape, as text; the held-out split hashes it
  std::vector<plan::Op> ops;  // compute ops (summed), or one collective op
  int num_gpus = 1;           // collectives: ranks, all in one scale-up domain
  double time_s = 0;          // measured
};

}  // namespace parasol::cost

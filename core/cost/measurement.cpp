// CsvTable: the checked CSV reader of the measured tables (measurement.hpp). Cells are kept as text; the typed
// accessors check them on use, so an error names the file, the line, the column (1-based character position of the
// cell) and the column's name.
#include "core/cost/measurement.hpp"

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/common/error.hpp"

namespace parasol::cost {
namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return std::string(s.substr(b, e - b));
}

// Splits one line at commas; a cell in double quotes may hold commas ("" is a quote). `starts` receives each cell's
// 1-based character column, for errors.
void split_line(std::string_view line, std::vector<std::string>& cells, std::vector<int>& starts) {
  cells.clear();
  starts.clear();
  size_t i = 0;
  while (true) {
    starts.push_back(static_cast<int>(i) + 1);
    std::string cell;
    size_t b = i;
    while (b < line.size() && line[b] == ' ') ++b;
    if (b < line.size() && line[b] == '"') {
      size_t j = b + 1;
      while (j < line.size()) {
        if (line[j] == '"') {
          if (j + 1 < line.size() && line[j + 1] == '"') {
            cell += '"';
            j += 2;
            continue;
          }
          ++j;
          break;
        }
        cell += line[j++];
      }
      size_t comma = line.find(',', j);
      cells.push_back(cell);
      if (comma == std::string_view::npos) return;
      i = comma + 1;
    } else {
      size_t comma = line.find(',', i);
      cells.push_back(trim(line.substr(i, comma == std::string_view::npos ? std::string_view::npos : comma - i)));
      if (comma == std::string_view::npos) return;
      i = comma + 1;
    }
  }
}

bool skipped(std::string_view line) {
  for (char c : line) {
    if (c == '#') return true;
    if (c != ' ' && c != '\t' && c != '\r') return false;
  }
  return true;
}

}  // namespace

CsvTable CsvTable::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, 0, "", "a readable CSV file", "cannot open it");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

CsvTable CsvTable::parse(const std::string& text, const std::string& name) {
  CsvTable t;
  t.name_ = name;
  std::vector<std::string> cells;
  std::vector<int> starts;
  size_t pos = 0;
  int line_no = 0;
  bool have_header = false;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    if (skipped(line)) continue;
    split_line(line, cells, starts);
    if (!have_header) {
      t.header_ = cells;
      for (size_t c = 0; c < cells.size(); ++c) {
        if (cells[c].empty())
          throw ConfigError(name, line_no, starts[c], "header", "a column name", "an empty cell");
        for (size_t d = 0; d < c; ++d)
          if (cells[d] == cells[c])
            throw ConfigError(name, line_no, starts[c], cells[c], "unique column names", "a repeated column");
      }
      have_header = true;
      continue;
    }
    if (cells.size() != t.header_.size())
      throw ConfigError(name, line_no, starts.back(), "row",
                        std::to_string(t.header_.size()) + " cells (as the header)", std::to_string(cells.size()));
    t.cells_.push_back(cells);
    t.columns_.push_back(starts);
    t.lines_.push_back(line_no);
  }
  if (!have_header) throw ConfigError(name, 1, 1, "header", "a CSV header line", "an empty file");
  return t;
}

bool CsvTable::has(const std::string& column) const {
  for (const auto& h : header_)
    if (h == column) return true;
  return false;
}

std::string CsvTable::where(size_t row) const { return name_ + ":" + std::to_string(lines_[row]); }

int CsvTable::col(const std::string& column, size_t row) const {
  for (size_t c = 0; c < header_.size(); ++c)
    if (header_[c] == column) return static_cast<int>(c);
  throw ConfigError(name_, row < lines_.size() ? lines_[row] : 1, 0, column, "a column '" + column + "'",
                    "no such column in the header");
}

const std::string& CsvTable::str(size_t row, const std::string& column) const {
  return cells_[row][static_cast<size_t>(col(column, row))];
}

int64_t CsvTable::integer(size_t row, const std::string& column, int64_t min, int64_t max) const {
  const int c = col(column, row);
  const std::string& s = cells_[row][static_cast<size_t>(c)];
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
    // Integers written as floats ("4096.0") are accepted when they are whole.
    double d = 0;
    auto [p2, ec2] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (ec2 != std::errc() || p2 != s.data() + s.size() || s.empty() || d != std::floor(d) || std::fabs(d) > 9e15)
      throw ConfigError(name_, lines_[row], columns_[row][static_cast<size_t>(c)], column, "an integer",
                        "'" + s + "'");
    v = static_cast<int64_t>(d);
  }
  if (v < min || v > max)
    throw ConfigError(name_, lines_[row], columns_[row][static_cast<size_t>(c)], column,
                      "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]", "'" + s + "'");
  return v;
}

double CsvTable::number(size_t row, const std::string& column, double min, double max) const {
  const int c = col(column, row);
  const std::string& s = cells_[row][static_cast<size_t>(c)];
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty() || !std::isfinite(v))
    throw ConfigError(name_, lines_[row], columns_[row][static_cast<size_t>(c)], column, "a number", "'" + s + "'");
  if (v < min || v > max) {
    std::ostringstream range;
    range << "a number in [" << min << ", " << max << "]";
    throw ConfigError(name_, lines_[row], columns_[row][static_cast<size_t>(c)], column, range.str(), "'" + s + "'");
  }
  return v;
}

}  // namespace parasol::cost

// Calibration table: CSV of measured op times, interpolated in log space (calibration.hpp, docs/cost-model.md).
#include "core/cost/calibration.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/common/dtype.hpp"
#include "core/common/error.hpp"

namespace parasol::cost {
namespace {

using plan::OpKind;

const std::vector<std::string>& columns() {
  static const std::vector<std::string> c = {"gpu",   "kind",     "dtype",    "phase",  "m",     "n",     "k",    "batch",
                                             "heads", "kv_heads", "head_dim", "tokens", "flops", "bytes", "time_s"};
  return c;
}

bool is_gemm(OpKind k) { return k == OpKind::kGemm || k == OpKind::kMoeGate; }
bool is_attention(OpKind k) { return k == OpKind::kAttention || k == OpKind::kMlaAttention; }

std::string exact_key(OpKind kind, const std::string& phase, int64_t n, int64_t k, int64_t batch, int64_t heads,
                      int64_t kv_heads, int64_t head_dim) {
  if (is_gemm(kind)) return "n=" + std::to_string(n) + ",k=" + std::to_string(k) + ",b=" + std::to_string(batch);
  if (is_attention(kind))
    return phase + ",h=" + std::to_string(heads) + ",kv=" + std::to_string(kv_heads) + ",d=" + std::to_string(head_dim);
  return "n=" + std::to_string(n);
}

double size_key(OpKind kind, const std::string& phase, int64_t m, double flops, double bytes) {
  if (is_gemm(kind)) return static_cast<double>(m);
  if (is_attention(kind)) return phase == "decode" ? bytes : flops;
  return bytes;
}

std::string phase_of(const plan::Op& op) {
  if (!is_attention(op.kind)) return "";
  for (int64_t q : op.q_lens)
    if (q != 1) return "prefill";
  return "decode";
}

std::optional<OpKind> parse_kind(const std::string& s) {
  for (int k = 0; k <= static_cast<int>(OpKind::kSample); ++k)
    if (plan::to_string(static_cast<OpKind>(k)) == s) return static_cast<OpKind>(k);
  return std::nullopt;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream is(line);
  while (std::getline(is, cell, ',')) {
    while (!cell.empty() && (cell.back() == ' ' || cell.back() == '\r')) cell.pop_back();
    size_t b = cell.find_first_not_of(' ');
    out.push_back(b == std::string::npos ? std::string() : cell.substr(b));
  }
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

}  // namespace

void CalibrationTable::add(const CalibrationRow& r) {
  const double x = size_key(r.kind, r.phase, r.m, r.flops, r.bytes);
  if (!(x > 0) || !(r.time_s > 0)) return;
  Key key{r.gpu, static_cast<int>(r.kind), r.dtype,
          exact_key(r.kind, r.phase, r.n, r.k, r.batch, r.heads, r.kv_heads, r.head_dim)};
  auto& pts = curves_[key];
  auto it = std::lower_bound(pts.begin(), pts.end(), std::make_pair(x, 0.0),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (it != pts.end() && it->first == x)
    it->second = std::sqrt(it->second * r.time_s);  // repeated measurement: geometric mean
  else
    pts.insert(it, {x, r.time_s});
  ++rows_;
}

std::optional<double> CalibrationTable::lookup(const plan::Op& op, const std::string& gpu) const {
  if (curves_.empty() || plan::is_communication(op.kind)) return std::nullopt;
  const std::string phase = phase_of(op);
  Key key{gpu, static_cast<int>(op.kind), std::string(to_string(op.dtype)),
          exact_key(op.kind, phase, op.n, op.k, op.batch, op.heads, op.kv_heads, op.head_dim)};
  auto c = curves_.find(key);
  if (c == curves_.end()) return std::nullopt;
  const double x = size_key(op.kind, phase, op.m, op.flops, op.bytes);
  const auto& pts = c->second;
  if (!(x > 0) || x < pts.front().first || x > pts.back().first) return std::nullopt;
  auto hi = std::lower_bound(pts.begin(), pts.end(), std::make_pair(x, 0.0),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (hi->first == x) return hi->second;
  auto lo = hi - 1;
  const double f = (std::log(x) - std::log(lo->first)) / (std::log(hi->first) - std::log(lo->first));
  return std::exp(std::log(lo->second) + f * (std::log(hi->second) - std::log(lo->second)));
}

CalibrationTable CalibrationTable::parse_csv(const std::string& text, const std::string& name) {
  CalibrationTable t;
  std::istringstream is(text);
  std::string line;
  int line_no = 0;
  std::vector<int> col_of;  // header position -> column index
  auto fail = [&](int col, const std::string& key, const std::string& expected, const std::string& found) {
    throw ConfigError(name, line_no, col, key, expected, found);
  };
  while (std::getline(is, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#' || line.find_first_not_of(" \r") == std::string::npos) continue;
    auto cells = split_csv(line);
    if (col_of.empty()) {
      for (size_t i = 0; i < cells.size(); ++i) {
        auto it = std::find(columns().begin(), columns().end(), cells[i]);
        if (it == columns().end()) fail(static_cast<int>(i) + 1, "header", "a column of " + csv_header(), "'" + cells[i] + "'");
        col_of.push_back(static_cast<int>(it - columns().begin()));
      }
      for (const char* need : {"gpu", "kind", "dtype", "time_s"})
        if (std::find(cells.begin(), cells.end(), need) == cells.end())
          fail(1, "header", std::string("a '") + need + "' column", "none");
      continue;
    }
    if (cells.size() != col_of.size())
      fail(1, "row", std::to_string(col_of.size()) + " cells", std::to_string(cells.size()));
    CalibrationRow r;
    for (size_t i = 0; i < cells.size(); ++i) {
      const std::string& v = cells[i];
      const std::string& col = columns()[static_cast<size_t>(col_of[i])];
      const int cn = static_cast<int>(i) + 1;
      try {
        if (col == "gpu") r.gpu = v;
        else if (col == "kind") {
          auto k = parse_kind(v);
          if (!k) fail(cn, col, "an op kind (gemm, attention, rmsnorm, ...)", "'" + v + "'");
          r.kind = *k;
        } else if (col == "dtype") {
          auto d = parse_dtype(v);
          if (!d) fail(cn, col, "a dtype (bf16, fp8, ...)", "'" + v + "'");
          r.dtype = std::string(to_string(*d));
        } else if (col == "phase") {
          if (!v.empty() && v != "prefill" && v != "decode") fail(cn, col, "'prefill', 'decode' or empty", "'" + v + "'");
          r.phase = v;
        } else if (v.empty()) {
          continue;
        } else if (col == "flops" || col == "bytes" || col == "time_s") {
          size_t used = 0;
          double x = std::stod(v, &used);
          if (used != v.size() || x < 0) fail(cn, col, "a non-negative number", "'" + v + "'");
          (col == "flops" ? r.flops : col == "bytes" ? r.bytes : r.time_s) = x;
        } else {
          size_t used = 0;
          long long x = std::stoll(v, &used);
          if (used != v.size() || x < 0) fail(cn, col, "a non-negative integer", "'" + v + "'");
          int64_t* f = col == "m" ? &r.m : col == "n" ? &r.n : col == "k" ? &r.k : col == "batch" ? &r.batch
                     : col == "heads" ? &r.heads : col == "kv_heads" ? &r.kv_heads : col == "head_dim" ? &r.head_dim
                     : &r.tokens;
          *f = x;
        }
      } catch (const std::logic_error&) {
        fail(cn, col, "a number", "'" + v + "'");
      }
    }
    if (!(r.time_s > 0)) fail(1, "time_s", "a positive time in seconds", std::to_string(r.time_s));
    t.add(r);
  }
  return t;
}

CalibrationTable CalibrationTable::load_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path, 0, 0, "", "a readable calibration CSV", "no such file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_csv(ss.str(), path);
}

std::string CalibrationTable::csv_header() {
  std::string h;
  for (const auto& c : columns()) h += (h.empty() ? "" : ",") + c;
  return h;
}

std::string CalibrationTable::csv_row(const CalibrationRow& r) {
  std::ostringstream os;
  os.precision(17);
  os << r.gpu << ',' << plan::to_string(r.kind) << ',' << r.dtype << ',' << r.phase << ',' << r.m << ',' << r.n << ','
     << r.k << ',' << r.batch << ',' << r.heads << ',' << r.kv_heads << ',' << r.head_dim << ',' << r.tokens << ','
     << r.flops << ',' << r.bytes << ',' << r.time_s;
  return os.str();
}

CalibrationRow CalibrationTable::row_for(const plan::Op& op, const std::string& gpu, double time_s) {
  CalibrationRow r;
  r.gpu = gpu;
  r.kind = op.kind;
  r.dtype = std::string(to_string(op.dtype));
  r.phase = phase_of(op);
  r.m = op.m, r.n = op.n, r.k = op.k, r.batch = op.batch;
  r.heads = op.heads, r.kv_heads = op.kv_heads, r.head_dim = op.head_dim, r.tokens = op.tokens;
  r.flops = op.flops, r.bytes = op.bytes, r.time_s = time_s;
  return r;
}

}  // namespace parasol::cost

// Calibration table: CSV of measured op times, interpolated in log space (calibration.hpp, docs/cost-model.md).
#include "core/cost/calibration.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <fstream>
#include <sstream>

#include "core/common/dtype.hpp"
#include "core/common/error.hpp"
#include "core/cost/profile_samples.hpp"

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

std::string attention_prefix(const std::string& phase, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  return phase + ",h=" + std::to_string(heads) + ",kv=" + std::to_string(kv_heads) + ",d=" + std::to_string(head_dim) +
         ",s=";
}

// `batch`: GEMMs' batch; attention's number of sequences.
std::string exact_key(OpKind kind, const std::string& phase, int64_t n, int64_t k, int64_t batch, int64_t heads,
                      int64_t kv_heads, int64_t head_dim) {
  if (is_gemm(kind)) return "n=" + std::to_string(n) + ",k=" + std::to_string(k) + ",b=" + std::to_string(batch);
  if (is_attention(kind)) return attention_prefix(phase, heads, kv_heads, head_dim) + std::to_string(std::max<int64_t>(batch, 1));
  return "n=" + std::to_string(n);
}

// What the `batch` column holds for an op: attention's sequence count, else the op's batch.
int64_t sequences(const plan::Op& op) {
  if (is_attention(op.kind) && !op.q_lens.empty()) return static_cast<int64_t>(op.q_lens.size());
  return op.batch;
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
  // Collectives: the dtype does not select a curve (NCCL's time is the bytes', and tables name dtypes their own way).
  const std::string dtype = plan::is_communication(r.kind) ? std::string() : r.dtype;
  add_point(Key{r.gpu, static_cast<int>(r.kind), dtype,
                exact_key(r.kind, r.phase, r.n, r.k, r.batch, r.heads, r.kv_heads, r.head_dim)},
            x, r.time_s);
  ++rows_;
}

void CalibrationTable::add_point(const Key& key, double x, double time_s) {
  auto& pts = curves_[key];
  auto it = std::lower_bound(pts.begin(), pts.end(), std::make_pair(x, 0.0),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (it != pts.end() && it->first == x)
    it->second = std::sqrt(it->second * time_s);  // repeated measurement: geometric mean
  else
    pts.insert(it, {x, time_s});
}

void CalibrationTable::merge(const CalibrationTable& other) {
  for (const auto& [key, pts] : other.curves_)
    for (const auto& [x, t] : pts) add_point(key, x, t);
  rows_ += other.rows_;
}

std::optional<double> CalibrationTable::curve_at(const Key& key, double x) const {
  auto c = curves_.find(key);
  if (c == curves_.end()) return std::nullopt;
  const auto& pts = c->second;
  if (!(x > 0) || x < pts.front().first || x > pts.back().first) return std::nullopt;
  auto hi = std::lower_bound(pts.begin(), pts.end(), std::make_pair(x, 0.0),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  if (hi->first == x) return hi->second;
  auto lo = hi - 1;
  const double f = (std::log(x) - std::log(lo->first)) / (std::log(hi->first) - std::log(lo->first));
  return std::exp(std::log(lo->second) + f * (std::log(hi->second) - std::log(lo->second)));
}

std::optional<double> CalibrationTable::lookup(const plan::Op& op, const std::string& gpu) const {
  if (curves_.empty() || plan::is_communication(op.kind)) return std::nullopt;
  const std::string phase = phase_of(op);
  const std::string dtype(to_string(op.dtype));
  const int64_t seqs = sequences(op);
  const double x = size_key(op.kind, phase, op.m, op.flops, op.bytes);
  const Key key{gpu, static_cast<int>(op.kind), dtype,
                exact_key(op.kind, phase, op.n, op.k, seqs, op.heads, op.kv_heads, op.head_dim)};
  if (auto t = curve_at(key, x)) return t;
  if (!is_attention(op.kind)) return std::nullopt;
  // Attention at a sequence count between two measured ones: interpolate (log-log) between their curves at x.
  const std::string prefix = attention_prefix(phase, op.heads, op.kv_heads, op.head_dim);
  int64_t below = 0, above = 0;
  double t_below = 0, t_above = 0;
  for (auto it = curves_.lower_bound(Key{gpu, static_cast<int>(op.kind), dtype, prefix}); it != curves_.end(); ++it) {
    const auto& [g, k, d, exact] = it->first;
    if (g != gpu || k != static_cast<int>(op.kind) || d != dtype || exact.compare(0, prefix.size(), prefix) != 0) break;
    const int64_t s = std::atoll(exact.c_str() + prefix.size());
    if (s == seqs) continue;
    auto t = curve_at(it->first, x);
    if (!t) continue;
    if (s < seqs && s > below) below = s, t_below = *t;
    if (s > seqs && (above == 0 || s < above)) above = s, t_above = *t;
  }
  if (below == 0 || above == 0) return std::nullopt;
  const double f = (std::log(static_cast<double>(seqs)) - std::log(static_cast<double>(below))) /
                   (std::log(static_cast<double>(above)) - std::log(static_cast<double>(below)));
  return std::exp(std::log(t_below) + f * (std::log(t_above) - std::log(t_below)));
}

std::optional<double> CalibrationTable::lookup_collective(plan::OpKind kind, const std::string& gpu, int num_gpus,
                                                          double bytes) const {
  if (curves_.empty() || !plan::is_communication(kind)) return std::nullopt;
  return curve_at(Key{gpu, static_cast<int>(kind), "", "n=" + std::to_string(num_gpus)}, bytes);
}

namespace {
std::mutex active_mutex;
std::shared_ptr<const CalibrationTable> active_table;
std::atomic<const CalibrationTable*> active_ptr{nullptr};
}  // namespace

void set_active_calibration(std::shared_ptr<const CalibrationTable> table) {
  std::lock_guard<std::mutex> lock(active_mutex);
  active_ptr.store(table.get());
  active_table = std::move(table);  // kept alive for the process
}

const CalibrationTable* active_calibration() { return active_ptr.load(std::memory_order_acquire); }

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
        if (is_profile_column(cells[i])) {  // an executor profile's extra columns (profile_samples.hpp)
          col_of.push_back(-1);
          continue;
        }
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
      if (col_of[i] < 0) continue;
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
  r.m = op.m, r.n = op.n, r.k = op.k, r.batch = sequences(op);
  r.heads = op.heads, r.kv_heads = op.kv_heads, r.head_dim = op.head_dim, r.tokens = op.tokens;
  r.flops = op.flops, r.bytes = op.bytes, r.time_s = time_s;
  return r;
}

}  // namespace parasol::cost

// Executor profiles: writing rows, reading them back as ops, and grouping them into Samples (profile_samples.hpp).
#include "core/cost/profile_samples.hpp"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>
#include <tuple>

#include "core/common/error.hpp"
#include "core/cost/calibration.hpp"

namespace parasol::cost {
namespace {

using plan::OpKind;

// The profile columns, after the calibration table's.
const char* const kProfileColumns[] = {"rank",       "iteration", "step_s",   "name",         "layer",
                                       "v_head_dim", "q_lens",    "ctx_lens", "expert_tokens"};

bool is_gemm(OpKind k) { return k == OpKind::kGemm || k == OpKind::kMoeGate; }
bool is_attention(OpKind k) { return k == OpKind::kAttention || k == OpKind::kMlaAttention; }

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : " ") + std::to_string(x);
  return s;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string short_num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Op names never hold commas; a stray one would shift every later cell of the row.
std::string cell_safe(std::string s) {
  for (char& c : s)
    if (c == ',' || c == '"' || c == '\n' || c == '\r') c = '_';
  return s;
}

std::optional<OpKind> parse_kind(const std::string& s) {
  for (int k = 0; k <= static_cast<int>(OpKind::kSample); ++k)
    if (plan::to_string(static_cast<OpKind>(k)) == s) return static_cast<OpKind>(k);
  return std::nullopt;
}

// A cell that may be absent (no such column) or empty: 0.
int64_t opt_integer(const CsvTable& t, size_t row, const std::string& col, int64_t min = 0) {
  if (!t.has(col) || t.str(row, col).empty()) return 0;
  return t.integer(row, col, min);
}
double opt_number(const CsvTable& t, size_t row, const std::string& col) {
  if (!t.has(col) || t.str(row, col).empty()) return 0;
  return t.number(row, col, 0.0);
}

std::vector<int64_t> opt_list(const CsvTable& t, size_t row, const std::string& col) {
  std::vector<int64_t> out;
  if (!t.has(col)) return out;
  const std::string& s = t.str(row, col);
  std::istringstream is(s);
  std::string word;
  while (is >> word) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    if (used != word.size() || v < 0)
      throw ConfigError(t.name(), t.line(row), 0, col, "space-separated non-negative integers", "'" + s + "'");
    out.push_back(v);
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

std::string profile_csv_header() {
  std::string h = CalibrationTable::csv_header();
  for (const char* c : kProfileColumns) h += std::string(",") + c;
  return h;
}

bool is_profile_column(const std::string& name) {
  for (const char* c : kProfileColumns)
    if (name == c) return true;
  return false;
}

std::string profile_csv_row(const plan::Op& op, const std::string& gpu, double time_s, const ProfileContext& ctx) {
  std::string r = CalibrationTable::csv_row(CalibrationTable::row_for(op, gpu, time_s));
  r += "," + std::to_string(ctx.rank);
  r += "," + (ctx.iteration >= 0 ? std::to_string(ctx.iteration) : std::string());
  r += "," + (ctx.step_s > 0 ? num(ctx.step_s) : std::string());
  r += "," + cell_safe(op.name);
  r += "," + std::to_string(op.layer);
  r += "," + (op.v_head_dim > 0 ? std::to_string(op.v_head_dim) : std::string());
  r += "," + join(op.q_lens);
  r += "," + join(op.ctx_lens);
  r += "," + join(op.expert_tokens);
  return r;
}

std::vector<ProfileRow> read_profile(const CsvTable& t) {
  std::vector<ProfileRow> rows;
  rows.reserve(t.rows());
  for (size_t i = 0; i < t.rows(); ++i) {
    ProfileRow r;
    r.where = t.where(i);
    r.gpu = t.str(i, "gpu");
    plan::Op& op = r.op;
    const std::string& kind = t.str(i, "kind");
    auto k = parse_kind(kind);
    if (!k)
      throw ConfigError(t.name(), t.line(i), 0, "kind", "an op kind (gemm, attention, rmsnorm, ...)", "'" + kind + "'");
    op.kind = *k;
    const std::string& dtype = t.str(i, "dtype");
    auto d = parse_dtype(dtype);
    if (!d) throw ConfigError(t.name(), t.line(i), 0, "dtype", "a dtype (fp32, bf16, fp8, ...)", "'" + dtype + "'");
    op.dtype = *d;
    op.m = opt_integer(t, i, "m");
    op.n = opt_integer(t, i, "n");
    op.k = opt_integer(t, i, "k");
    // `batch` is a GEMM's batch, but an attention row's number of sequences (calibration.hpp): the op's is 1.
    op.batch = is_attention(op.kind) ? 1 : std::max<int64_t>(1, opt_integer(t, i, "batch"));
    op.heads = opt_integer(t, i, "heads");
    op.kv_heads = opt_integer(t, i, "kv_heads");
    op.head_dim = opt_integer(t, i, "head_dim");
    op.tokens = opt_integer(t, i, "tokens");
    op.flops = opt_number(t, i, "flops");
    op.bytes = opt_number(t, i, "bytes");
    r.time_s = t.number(i, "time_s", 0.0);
    if (!(r.time_s > 0))
      throw ConfigError(t.name(), t.line(i), 0, "time_s", "a positive time in seconds", "'" + t.str(i, "time_s") + "'");
    if (t.has("rank") && !t.str(i, "rank").empty()) r.rank = static_cast<int>(t.integer(i, "rank", 0, 1 << 24));
    if (t.has("iteration") && !t.str(i, "iteration").empty()) r.iteration = t.integer(i, "iteration", 0);
    r.step_s = opt_number(t, i, "step_s");
    if (t.has("name")) op.name = t.str(i, "name");
    op.layer = t.has("layer") && !t.str(i, "layer").empty() ? static_cast<int>(t.integer(i, "layer", -1, 1 << 20)) : -1;
    op.v_head_dim = opt_integer(t, i, "v_head_dim");
    if (op.v_head_dim == 0 && is_attention(op.kind)) op.v_head_dim = op.head_dim;
    op.q_lens = opt_list(t, i, "q_lens");
    op.ctx_lens = opt_list(t, i, "ctx_lens");
    op.expert_tokens = opt_list(t, i, "expert_tokens");
    if (op.q_lens.size() != op.ctx_lens.size())
      throw ConfigError(t.name(), t.line(i), 0, "ctx_lens", "one context length per query length (" +
                        std::to_string(op.q_lens.size()) + ")", std::to_string(op.ctx_lens.size()));
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string profile_family(const plan::Op& op) {
  if (plan::is_communication(op.kind)) return "";
  if (is_gemm(op.kind)) return "gemm";
  if (is_attention(op.kind)) {
    if (op.q_lens.empty()) return "";  // an older profile: the lengths the attention model needs are not there
    for (int64_t q : op.q_lens)
      if (q != 1) return "context_attention";
    return "generation_attention";
  }
  return "elementwise";
}

std::string profile_key(const plan::Op& op) {
  std::string s = plan::to_string(op.kind) + ":" + std::string(to_string(op.dtype));
  auto field = [&](const char* name, int64_t v) {
    if (v != 0) s += std::string(" ") + name + "=" + std::to_string(v);
  };
  field("m", op.m);
  field("n", op.n);
  field("k", op.k);
  if (op.batch != 1) field("b", op.batch);
  field("t", op.tokens);
  field("h", op.heads);
  field("kv", op.kv_heads);
  field("d", op.head_dim);
  if (op.v_head_dim != op.head_dim) field("dv", op.v_head_dim);
  if (!op.q_lens.empty()) s += " q=" + join(op.q_lens) + " ctx=" + join(op.ctx_lens);
  if (!op.expert_tokens.empty()) s += " e=" + join(op.expert_tokens);
  s += " flops=" + short_num(op.flops) + " bytes=" + short_num(op.bytes);
  return s;
}

std::vector<Sample> profile_samples(const std::vector<ProfileRow>& rows) {
  std::vector<Sample> out;
  std::vector<std::vector<double>> times;
  std::map<std::tuple<std::string, std::string, std::string>, size_t> index;
  for (const ProfileRow& r : rows) {
    std::string family = profile_family(r.op);
    if (family.empty()) continue;
    std::string key = profile_key(r.op);
    auto [it, fresh] = index.try_emplace({family, r.gpu, key}, out.size());
    if (fresh) {
      Sample s;
      s.family = std::move(family);
      s.gpu = r.gpu;
      s.where = r.where;
      s.key = std::move(key);
      s.ops = {r.op};
      out.push_back(std::move(s));
      times.emplace_back();
    }
    times[it->second].push_back(r.time_s);
  }
  for (size_t i = 0; i < out.size(); ++i) out[i].time_s = median(times[i]);
  return out;
}

std::vector<Sample> profile_samples(const CsvTable& table) { return profile_samples(read_profile(table)); }

}  // namespace parasol::cost

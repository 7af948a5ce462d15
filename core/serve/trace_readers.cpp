// Streaming readers of request traces (formats in docs/workloads.md). Each keeps one line in memory.
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/serve/workload.hpp"

namespace parasol::serve {

std::optional<std::pair<int64_t, double>> parse_azure_timestamp_split(std::string_view s);

namespace {

// Longest prompt or answer a trace row may give: far beyond any model's context window (those requests are then
// rejected with a reason), small enough that prompt + answer + any block rounding stays exact in 64 bits.
constexpr int64_t kMaxTraceTokens = int64_t{1} << 40;
const char* const kTokenBound = "a token count in [0, 2^40]";

// Line-by-line reader that knows where it is, for error messages.
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) throw ConfigError(path, 0, 0, "", "a readable trace file", "no such file or not readable");
  }
  // Next non-empty line (CR stripped); false at end of file.
  bool next(std::string& line) {
    while (std::getline(in_, line)) {
      ++line_no_;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) return true;
    }
    return false;
  }
  [[noreturn]] void fail(const std::string& column, const std::string& expected, const std::string& found) const {
    throw ConfigError(path_, line_no_, 1, column, expected, found);
  }
  int line() const { return line_no_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ifstream in_;
  int line_no_ = 0;
};

void split_csv(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    std::string_view f = line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    while (!f.empty() && f.front() == ' ') f.remove_prefix(1);
    while (!f.empty() && f.back() == ' ') f.remove_suffix(1);
    if (f.size() >= 2 && f.front() == '"' && f.back() == '"') f = f.substr(1, f.size() - 2);
    out.push_back(f);
    if (comma == std::string_view::npos) return;
    start = comma + 1;
  }
}

template <typename T>
bool parse_num(std::string_view s, T& v) {
  if (s.empty()) return false;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

// Column indices by header name; a missing column is an error naming the header line.
std::vector<size_t> find_columns(const LineReader& r, const std::vector<std::string_view>& header,
                                 std::initializer_list<std::string_view> names) {
  std::vector<size_t> idx;
  for (std::string_view name : names) {
    size_t k = 0;
    while (k < header.size() && header[k] != name) ++k;
    if (k == header.size()) r.fail("", "a header with column '" + std::string(name) + "'", "no such column");
    idx.push_back(k);
  }
  return idx;
}

class CsvTraceBase : public RequestSource {
 protected:
  explicit CsvTraceBase(const TraceSpec& t) : spec_(t), reader_(t.path) {}
  bool next_fields() {
    while (reader_.next(line_)) {
      if (line_.front() == '#') continue;
      split_csv(line_, fields_);
      return true;
    }
    return false;
  }
  std::string_view field(size_t i) {
    if (i >= fields_.size()) reader_.fail("", std::to_string(i + 1) + " columns", std::to_string(fields_.size()));
    return fields_[i];
  }
  int64_t int_field(size_t i, const char* name) {
    int64_t v = 0;
    if (!parse_num(field(i), v) || v < 0) reader_.fail(name, "a non-negative integer", "'" + std::string(field(i)) + "'");
    return v;
  }
  int64_t tokens_field(size_t i, const char* name) {
    const int64_t v = int_field(i, name);
    if (v > kMaxTraceTokens) reader_.fail(name, kTokenBound, std::to_string(v));
    return v;
  }
  double double_field(size_t i, const char* name) {
    double v = 0;
    if (!parse_num(field(i), v) || !std::isfinite(v)) {
      reader_.fail(name, "a number", "'" + std::string(field(i)) + "'");
    }
    return v;
  }
  void check_order(double t, const char* name) {
    if (t < last_t_) reader_.fail(name, "arrival times in non-decreasing order", format_time_pair(t));
    last_t_ = t;
  }
  std::string format_time_pair(double t) const {
    return std::to_string(t) + " s after " + std::to_string(last_t_) + " s";
  }
  std::string describe() const override {
    return std::string(to_string(spec_.format)) + " trace " + std::filesystem::path(spec_.path).filename().string();
  }

  TraceSpec spec_;
  LineReader reader_;
  std::string line_;
  std::vector<std::string_view> fields_;
  double last_t_ = -1e300;
  int64_t next_id_ = 0;
};

class AzureTrace final : public CsvTraceBase {
 public:
  explicit AzureTrace(const TraceSpec& t) : CsvTraceBase(t) {
    if (!next_fields()) reader_.fail("", "a header TIMESTAMP,ContextTokens,GeneratedTokens", "an empty file");
    cols_ = find_columns(reader_, fields_, {"TIMESTAMP", "ContextTokens", "GeneratedTokens"});
  }
  std::optional<Request> next() override {
    if (!next_fields()) return std::nullopt;
    const auto t = parse_azure_timestamp_split(field(cols_[0]));
    if (!t) reader_.fail("TIMESTAMP", "a time like '2023-11-16 18:17:03.9799600'", std::string(field(cols_[0])));
    if (!first_) first_ = *t;
    Request r;
    r.id = next_id_++;
    r.arrival_s = double(t->first - first_->first) + (t->second - first_->second);
    check_order(r.arrival_s, "TIMESTAMP");
    r.input_tokens = tokens_field(cols_[1], "ContextTokens");
    r.output_tokens = tokens_field(cols_[2], "GeneratedTokens");
    return r;
  }

 private:
  std::vector<size_t> cols_;
  std::optional<std::pair<int64_t, double>> first_;
};

class BurstGptTrace final : public CsvTraceBase {
 public:
  explicit BurstGptTrace(const TraceSpec& t) : CsvTraceBase(t) {
    if (!next_fields()) reader_.fail("", "a BurstGPT header", "an empty file");
    cols_ = find_columns(reader_, fields_,
                         {"Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"});
  }
  std::optional<Request> next() override {
    while (next_fields()) {
      const double t = double_field(cols_[0], "Timestamp");
      check_order(t, "Timestamp");
      if (!spec_.model_filter.empty() && field(cols_[1]) != spec_.model_filter) continue;
      if (!spec_.log_type_filter.empty() && field(cols_[5]) != spec_.log_type_filter) continue;
      Request r;
      r.input_tokens = tokens_field(cols_[2], "Request tokens");
      r.output_tokens = tokens_field(cols_[3], "Response tokens");
      if (r.output_tokens == 0 && !spec_.keep_failed) continue;
      if (!first_) first_ = t;
      r.id = next_id_++;
      r.arrival_s = t - *first_;
      return r;
    }
    return std::nullopt;
  }

 private:
  std::vector<size_t> cols_;
  std::optional<double> first_;
};

class ParasolTrace final : public CsvTraceBase {
 public:
  explicit ParasolTrace(const TraceSpec& t) : CsvTraceBase(t) {
    if (!next_fields()) {
      reader_.fail("", "a header arrival_s,input_tokens,output_tokens[,prefix_hashes][,session]", "an empty file");
    }
    cols_ = find_columns(reader_, fields_, {"arrival_s", "input_tokens", "output_tokens"});
    for (size_t k = 0; k < fields_.size(); ++k) {
      if (fields_[k] == "prefix_hashes") hashes_col_ = int(k);
      if (fields_[k] == "session") session_col_ = int(k);
    }
  }
  std::optional<Request> next() override {
    if (!next_fields()) return std::nullopt;
    Request r;
    r.id = next_id_++;
    r.arrival_s = double_field(cols_[0], "arrival_s");
    check_order(r.arrival_s, "arrival_s");
    r.input_tokens = tokens_field(cols_[1], "input_tokens");
    r.output_tokens = tokens_field(cols_[2], "output_tokens");
    if (hashes_col_ >= 0 && size_t(hashes_col_) < fields_.size()) {
      std::string_view h = fields_[size_t(hashes_col_)];
      while (!h.empty()) {
        const size_t sp = h.find(' ');
        std::string_view tok = h.substr(0, sp);
        if (!tok.empty()) {
          uint64_t v = 0;
          if (!parse_num(tok, v)) reader_.fail("prefix_hashes", "space-separated unsigned integers", std::string(tok));
          r.prefix_hashes.push_back(v);
        }
        if (sp == std::string_view::npos) break;
        h.remove_prefix(sp + 1);
      }
    }
    // An empty field (or a row shorter than the header) is a request outside any session.
    if (session_col_ >= 0 && size_t(session_col_) < fields_.size() && !fields_[size_t(session_col_)].empty()) {
      r.session = int_field(size_t(session_col_), "session");
    }
    return r;
  }

 private:
  std::vector<size_t> cols_;
  int hashes_col_ = -1;
  int session_col_ = -1;
};

class MooncakeTrace final : public RequestSource {
 public:
  explicit MooncakeTrace(const TraceSpec& t) : spec_(t), reader_(t.path) {}
  std::optional<Request> next() override {
    if (!reader_.next(line_)) return std::nullopt;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line_);
    } catch (const nlohmann::json::exception& e) {
      reader_.fail("", "one JSON object per line", e.what());
    }
    if (!j.is_object()) reader_.fail("", "one JSON object per line (JSON Lines)", std::string("a JSON ") + j.type_name());
    auto num = [&](const char* key) -> const nlohmann::json& {
      auto it = j.find(key);
      if (it == j.end() || !it->is_number()) reader_.fail(key, "a number", it == j.end() ? "nothing" : it->dump());
      return *it;
    };
    Request r;
    r.id = next_id_++;
    r.arrival_s = num("timestamp").get<double>() / 1000.0;
    if (r.arrival_s < last_t_) reader_.fail("timestamp", "arrival times in non-decreasing order", j["timestamp"].dump());
    last_t_ = r.arrival_s;
    auto tokens = [&](const char* key) {
      const nlohmann::json& v = num(key);
      if (!v.is_number_integer() || v.get<double>() < 0 || v.get<double>() > static_cast<double>(kMaxTraceTokens))
        reader_.fail(key, kTokenBound, v.dump());
      return v.get<int64_t>();
    };
    r.input_tokens = tokens("input_length");
    r.output_tokens = tokens("output_length");
    if (auto it = j.find("hash_ids"); it != j.end()) {
      if (!it->is_array()) reader_.fail("hash_ids", "a list of integers", it->dump());
      r.prefix_hashes.reserve(it->size());
      for (const auto& h : *it) {
        if (!h.is_number_integer()) reader_.fail("hash_ids", "a list of integers", h.dump());
        r.prefix_hashes.push_back(h.get<uint64_t>());
      }
    }
    if (auto it = j.find("session_id"); it != j.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<double>() < 0 || it->get<double>() > 9.2e18) {
        reader_.fail("session_id", "a non-negative integer", it->dump());
      }
      r.session = it->get<int64_t>();
    }
    return r;
  }
  std::string describe() const override {
    return "mooncake trace " + std::filesystem::path(spec_.path).filename().string();
  }

 private:
  TraceSpec spec_;
  LineReader reader_;
  std::string line_;
  double last_t_ = -1e300;
  int64_t next_id_ = 0;
};

}  // namespace

// Whole seconds since the epoch and the fraction, kept apart so differences keep the trace's 100 ns resolution.
std::optional<std::pair<int64_t, double>> parse_azure_timestamp_split(std::string_view s) {
  // YYYY-MM-DD HH:MM:SS[.fffffff]
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' ||
      s[16] != ':') {
    return std::nullopt;
  }
  int64_t y = 0, mo = 0, d = 0, h = 0, mi = 0;
  double sec = 0;
  if (!parse_num(s.substr(0, 4), y) || !parse_num(s.substr(5, 2), mo) || !parse_num(s.substr(8, 2), d) ||
      !parse_num(s.substr(11, 2), h) || !parse_num(s.substr(14, 2), mi) || !parse_num(s.substr(17), sec)) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec < 0 || sec >= 61) return std::nullopt;
  // Days from civil (H. Hinnant's algorithm).
  y -= mo <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const int64_t days = era * 146097 + doe - 719468;
  const double whole = std::floor(sec);
  return std::make_pair(days * 86400 + h * 3600 + mi * 60 + int64_t(whole), sec - whole);
}

std::optional<double> parse_azure_timestamp(std::string_view s) {
  const auto t = parse_azure_timestamp_split(s);
  if (!t) return std::nullopt;
  return double(t->first) + t->second;
}

TraceFormat parse_trace_format(const std::string& name) {
  if (name == "azure") return TraceFormat::kAzure;
  if (name == "mooncake") return TraceFormat::kMooncake;
  if (name == "burstgpt") return TraceFormat::kBurstGpt;
  if (name == "parasol") return TraceFormat::kParasol;
  throw ConfigError("unknown trace format '" + name + "': expected azure, mooncake, burstgpt or parasol");
}

const char* to_string(TraceFormat f) {
  switch (f) {
    case TraceFormat::kAzure: return "azure";
    case TraceFormat::kMooncake: return "mooncake";
    case TraceFormat::kBurstGpt: return "burstgpt";
    case TraceFormat::kParasol: return "parasol";
  }
  return "?";
}

std::unique_ptr<RequestSource> open_trace(const TraceSpec& t) {
  switch (t.format) {
    case TraceFormat::kAzure: return std::make_unique<AzureTrace>(t);
    case TraceFormat::kMooncake: return std::make_unique<MooncakeTrace>(t);
    case TraceFormat::kBurstGpt: return std::make_unique<BurstGptTrace>(t);
    case TraceFormat::kParasol: return std::make_unique<ParasolTrace>(t);
  }
  return nullptr;
}

}  // namespace parasol::serve

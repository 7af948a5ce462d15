#include "core/serve/metrics.hpp"

#include <cstring>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace parasol::serve {
namespace {

// Log-linear histogram of positive durations: kSub sub-buckets per power of two between 2^kMinExp and 2^kMaxExp
// (about 1e-12 s to 1e9 s); values outside are clamped to the end buckets. Exact count, sum and max.
class LogHistogram {
 public:
  static constexpr int kSub = 1024;
  static constexpr int kMinExp = -40;
  static constexpr int kMaxExp = 30;

  LogHistogram() : counts_(size_t(kMaxExp - kMinExp) * kSub, 0) {}

  // Adds `n` samples equal to v (as n calls of add(v): the sum is accumulated one sample at a time, so the mean is
  // bit-identical however the samples are grouped).
  void add(double v, int64_t n = 1) {
    if (n <= 0) return;
    max_ = count_ == 0 ? v : std::max(max_, v);
    count_ += n;
    for (int64_t k = 0; k < n; ++k) sum_ += v;
    if (!(v > 0)) {
      zeros_ += n;
      return;
    }
    // The bucket from the IEEE-754 bits (a hot path: one call per generated token). For a normal v = 1.f 2^(E-1023),
    // frexp gives e = E - 1022 and m = (1 + f) / 2, so (m - 0.5) 2 kSub = f kSub: the top 10 bits of the mantissa.
    static_assert(kSub == 1024, "the sub-bucket is the top 10 mantissa bits");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    const int e = int((bits >> 52) & 0x7ff) - 1022;  // subnormals (E = 0) land at e <= kMinExp
    size_t idx;
    if (e <= kMinExp) idx = 0;
    else if (e > kMaxExp) idx = counts_.size() - 1;
    else idx = size_t(e - 1 - kMinExp) * kSub + size_t((bits >> 42) & 0x3ff);
    counts_[idx] += n;
  }
  int64_t count() const { return count_; }
  double mean() const { return count_ ? sum_ / double(count_) : kNoTime; }
  double max() const { return count_ ? max_ : kNoTime; }

  // Type-7 percentile over bucket midpoints.
  double percentile(double p) const {
    if (count_ == 0) return kNoTime;
    const double h = double(count_ - 1) * p;
    const auto lo = int64_t(std::floor(h));
    const double a = value_at(lo);
    const double b = lo + 1 < count_ ? value_at(lo + 1) : a;
    return a + (h - double(lo)) * (b - a);
  }

 private:
  double value_at(int64_t rank) const {  // the rank-th smallest (0-based), as its bucket midpoint
    if (rank < zeros_) return 0;
    int64_t seen = zeros_;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) {
        const int e = int(i / kSub) + kMinExp + 1;
        const double sub = double(i % kSub);
        return std::ldexp(0.5 + (sub + 0.5) / (2.0 * kSub), e);
      }
    }
    return max_;
  }

  std::vector<int64_t> counts_;
  int64_t count_ = 0, zeros_ = 0;
  double sum_ = 0, max_ = 0;
};

Percentiles summarize(std::vector<double>& v) {
  Percentiles p;
  p.count = int64_t(v.size());
  if (v.empty()) {
    p.mean = p.p50 = p.p90 = p.p99 = p.p999 = p.max = kNoTime;
    return p;
  }
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / double(v.size());
  p.p50 = percentile(v, 0.5);
  p.p90 = percentile(v, 0.9);
  p.p99 = percentile(v, 0.99);
  p.p999 = percentile(v, 0.999);
  p.max = *std::max_element(v.begin(), v.end());
  return p;
}

Percentiles summarize(const LogHistogram& h) {
  Percentiles p;
  p.count = h.count();
  p.mean = h.mean();
  p.p50 = h.percentile(0.5);
  p.p90 = h.percentile(0.9);
  p.p99 = h.percentile(0.99);
  p.p999 = h.percentile(0.999);
  p.max = h.max();
  return p;
}

std::string csv_number(double v) { return std::isnan(v) ? std::string() : format_number(v); }
std::string json_number(double v) { return std::isfinite(v) ? format_number(v) : std::string("null"); }

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return kNoTime;
  const double h = double(v.size() - 1) * p;
  const auto lo = size_t(std::floor(h));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(lo), v.end());
  const double a = v[lo];
  if (lo + 1 >= v.size()) return a;
  const double b = *std::min_element(v.begin() + std::ptrdiff_t(lo) + 1, v.end());
  return a + (h - double(lo)) * (b - a);
}

std::string format_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

struct MetricsCollector::Impl {
  MetricsConfig cfg;
  std::vector<double> ttft, tpot, e2e, queueing;
  LogHistogram itl;
  int64_t completed = 0, rejected = 0, failed = 0;
  int64_t input_tokens = 0, output_tokens = 0, slo_met = 0, preemptions = 0, prefix_hits = 0;
  std::map<std::string, int64_t> reasons;  // rare (rejections, failures): not a hot path
  int64_t steps = 0;
  double busy_s = 0;
  std::vector<double> flops, bytes, kv_now;
  double kv_sum = 0;
  double next_sample_s = 0;
  std::vector<KvSample> kv_samples;
  int64_t trace_steps = 0;
  bool trace_open = false;
  std::vector<bool> trace_named;
  std::vector<std::vector<int64_t>> trace_lane_end_ns;  // per replica, per lane: when its last slice ends

  void trace_event(const std::string& ev) {
    std::ostream& os = *cfg.trace_json;
    if (!trace_open) {
      os << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
      trace_open = true;
      os << ev;
    } else {
      os << ",\n" << ev;
    }
  }
  // Samples every sample time before t_s (and at t_s when `inclusive`): an update at t_s counts for the sample at t_s.
  // The series is bounded: when it holds kMaxKvSamples, neighbours merge in pairs (mean of the two, larger max) and
  // the interval doubles, so any simulated span (an idle gap of years included) costs O(kMaxKvSamples) memory and
  // O(kMaxKvSamples log(span / interval)) work. Every sample then stands for the same number of base intervals, so
  // the mean over samples is unchanged by merging.
  static constexpr size_t kMaxKvSamples = 4096;  // even
  double kv_interval_s = 0;                       // the current interval (cfg's, doubled at each merge)
  void sample_kv_until(double t_s, bool inclusive) {
    if (cfg.kv_sample_interval_s <= 0) return;
    if (kv_interval_s == 0) kv_interval_s = cfg.kv_sample_interval_s;
    while (next_sample_s < t_s || (inclusive && next_sample_s == t_s)) {
      KvSample k;
      k.t_s = next_sample_s;
      k.mean = kv_sum / double(std::max<size_t>(kv_now.size(), 1));
      for (double u : kv_now) k.max = std::max(k.max, u);
      kv_samples.push_back(k);
      if (kv_samples.size() == kMaxKvSamples) {
        for (size_t i = 0; i < kMaxKvSamples / 2; ++i) {
          const KvSample &a = kv_samples[2 * i], &b = kv_samples[2 * i + 1];
          kv_samples[i] = {a.t_s, 0.5 * (a.mean + b.mean), std::max(a.max, b.max)};
        }
        kv_samples.resize(kMaxKvSamples / 2);
        kv_interval_s *= 2;
      }
      next_sample_s = double(kv_samples.size()) * kv_interval_s;
    }
  }
};

MetricsCollector::MetricsCollector(MetricsConfig config) : impl_(std::make_unique<Impl>()) {
  impl_->cfg = config;
  const auto n = size_t(std::max(config.replicas, 1));
  impl_->flops.assign(n, 0);
  impl_->bytes.assign(n, 0);
  impl_->kv_now.assign(n, 0);
  impl_->trace_named.assign(n, false);
  impl_->trace_lane_end_ns.assign(n, {});
  if (config.requests_csv) *config.requests_csv << requests_csv_header() << '\n';
}

MetricsCollector::~MetricsCollector() = default;

const char* MetricsCollector::requests_csv_header() {
  return "id,outcome,replica,prefill_replica,arrival_s,first_scheduled_s,first_token_s,finish_s,input_tokens,"
         "output_tokens,generated_tokens,ttft_s,tpot_s,e2e_s,queueing_s,itl_max_s,preemptions,prefix_hit_tokens,"
         "reason,retries";
}

void MetricsCollector::on_request(const RequestRecord& r) {
  Impl& m = *impl_;
  ++arrived_;
  if (m.cfg.requests_csv) {
    std::ostream& os = *m.cfg.requests_csv;
    os << r.id << ',' << to_string(r.outcome) << ',' << r.replica << ',' << r.prefill_replica << ','
       << csv_number(r.arrival_s) << ',' << csv_number(r.first_scheduled_s) << ',' << csv_number(r.first_token_s)
       << ',' << csv_number(r.finish_s) << ',' << r.input_tokens << ',' << r.output_tokens << ','
       << r.generated_tokens << ',';
    if (r.outcome == Outcome::kCompleted) {
      os << csv_number(r.ttft_s()) << ',' << csv_number(r.tpot_s()) << ',' << csv_number(r.e2e_s()) << ','
         << csv_number(r.queueing_s()) << ',' << csv_number(r.itl_count ? r.itl_max_s : kNoTime);
    } else {
      os << ",,,,";
    }
    os << ',' << r.preemptions << ',' << r.prefix_hit_tokens << ',' << csv_field(r.reason) << ',' << r.retries << '\n';
  }
  m.preemptions += r.preemptions;
  if (r.outcome != Outcome::kCompleted) {
    (r.outcome == Outcome::kRejected ? m.rejected : m.failed) += 1;
    ++m.reasons[r.reason];
    return;
  }
  ++m.completed;
  m.input_tokens += r.input_tokens;
  m.output_tokens += r.generated_tokens;
  m.prefix_hits += r.prefix_hit_tokens;
  m.ttft.push_back(r.ttft_s());
  m.e2e.push_back(r.e2e_s());
  m.queueing.push_back(r.queueing_s());
  const double tpot = r.tpot_s();
  if (!std::isnan(tpot)) m.tpot.push_back(tpot);
  if (r.ttft_s() <= m.cfg.slo.ttft_s && (std::isnan(tpot) || tpot <= m.cfg.slo.tpot_s)) ++m.slo_met;
}

void MetricsCollector::on_step(const StepSample& s) {
  Impl& m = *impl_;
  const auto r = size_t(s.replica);
  if (r >= m.flops.size()) {
    m.flops.resize(r + 1, 0);
    m.bytes.resize(r + 1, 0);
    m.kv_now.resize(r + 1, 0);
    m.trace_named.resize(r + 1, false);
    m.trace_lane_end_ns.resize(r + 1);
  }
  ++m.steps;
  m.busy_s += s.end_s - s.start_s;
  m.flops[r] += s.flops;
  m.bytes[r] += s.bytes;
  m.sample_kv_until(s.end_s, false);
  m.kv_sum += s.kv_utilization - m.kv_now[r];
  m.kv_now[r] = s.kv_utilization;
  if (m.cfg.trace_json && m.trace_steps < m.cfg.trace_max_steps &&
      (m.cfg.trace_replicas <= 0 || s.replica < m.cfg.trace_replicas)) {
    if (!m.trace_named[r]) {
      m.trace_named[r] = true;
      m.trace_event("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + std::to_string(r) +
                    ",\"args\":{\"name\":\"replica " + std::to_string(r) + "\"}}");
    }
    // Whole nanoseconds for both ends, so that ts + dur of one slice and ts of the next compare exactly as written.
    const auto ts_ns = static_cast<int64_t>(std::llround(s.start_s * 1e9));
    const int64_t end_ns = std::max(ts_ns, static_cast<int64_t>(std::llround(s.end_s * 1e9)));
    auto& lanes = m.trace_lane_end_ns[r];
    size_t lane = 0;
    while (lane < lanes.size() && lanes[lane] > ts_ns) ++lane;
    if (lane == lanes.size()) {
      lanes.push_back(0);
      m.trace_event("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" + std::to_string(r) + ",\"tid\":" +
                    std::to_string(lane) + ",\"args\":{\"name\":\"" +
                    (lane == 0 ? std::string("iterations") : "in flight #" + std::to_string(lane + 1)) + "\"}}");
    }
    lanes[lane] = end_ns;
    const int64_t dur_ns = end_ns - ts_ns;
    const char* name = s.prefill_tokens && s.decode_tokens ? "mixed" : s.prefill_tokens ? "prefill" : "decode";
    char buf[360];
    std::snprintf(buf, sizeof buf,
                  "{\"name\":\"%s\",\"ph\":\"X\",\"pid\":%zu,\"tid\":%zu,\"ts\":%lld.%03lld,\"dur\":%lld.%03lld,"
                  "\"args\":{\"seqs\":%d,\"prefill_tokens\":%lld,\"decode_tokens\":%lld,\"preempted\":%d,"
                  "\"kv_utilization\":%.4f}}",
                  name, r, lane, static_cast<long long>(ts_ns / 1000), static_cast<long long>(ts_ns % 1000),
                  static_cast<long long>(dur_ns / 1000), static_cast<long long>(dur_ns % 1000), int(s.seqs),
                  static_cast<long long>(s.prefill_tokens), static_cast<long long>(s.decode_tokens),
                  int(s.preempted), s.kv_utilization);
    m.trace_event(buf);
    if (++m.trace_steps == m.cfg.trace_max_steps) {
      m.trace_event("{\"name\":\"trace truncated: trace_max_steps reached\",\"ph\":\"i\",\"s\":\"g\",\"pid\":0,"
                    "\"tid\":0,\"ts\":" + format_number(s.end_s * 1e6) + "}");
    }
  }
}

void MetricsCollector::on_itl(std::span<const double> itl_s) {
  for (double v : itl_s) impl_->itl.add(v);
}

void MetricsCollector::on_itl(std::span<const ItlRun> runs) {
  for (const ItlRun& r : runs) impl_->itl.add(r.gap_s, r.count);
}

void MetricsCollector::on_fault(double t_s, int replica, const std::string& what) {
  Impl& m = *impl_;
  if (!m.cfg.trace_json || (m.cfg.trace_replicas > 0 && replica >= m.cfg.trace_replicas)) return;
  const auto ts_ns = static_cast<int64_t>(std::llround(t_s * 1e9));
  char buf[200];
  std::snprintf(buf, sizeof buf, "{\"name\":\"replica %d %s\",\"ph\":\"i\",\"s\":\"p\",\"pid\":%d,\"tid\":0,\"ts\":%lld.%03lld}",
                replica, what.c_str(), replica, static_cast<long long>(ts_ns / 1000),
                static_cast<long long>(ts_ns % 1000));
  m.trace_event(buf);
}

void MetricsCollector::add_trace_events(const std::string& events) {
  if (!impl_->cfg.trace_json || events.empty()) return;
  impl_->trace_event(events);
}

Summary MetricsCollector::finish(double end_s) {
  Impl& m = *impl_;
  if (m.cfg.trace_json) {
    if (!m.trace_open) *m.cfg.trace_json << "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
    *m.cfg.trace_json << "\n]}\n";
    m.trace_open = false;
  }
  m.sample_kv_until(end_s, true);
  Summary s;
  s.arrived = arrived_;
  s.completed = m.completed;
  s.rejected = m.rejected;
  s.failed = m.failed;
  s.reasons.assign(m.reasons.begin(), m.reasons.end());
  s.duration_s = end_s;
  s.input_tokens = m.input_tokens;
  s.output_tokens = m.output_tokens;
  const double d = end_s > 0 ? end_s : kNoTime;
  s.request_throughput = double(m.completed) / d;
  s.input_token_throughput = double(m.input_tokens) / d;
  s.output_token_throughput = double(m.output_tokens) / d;
  s.ttft_s = summarize(m.ttft);
  s.tpot_s = summarize(m.tpot);
  s.itl_s = summarize(m.itl);
  s.e2e_s = summarize(m.e2e);
  s.queueing_s = summarize(m.queueing);
  s.slo = m.cfg.slo;
  s.slo_met = m.slo_met;
  s.goodput_fraction = arrived_ ? double(m.slo_met) / double(arrived_) : 0;
  s.goodput_rps = double(m.slo_met) / d;
  s.ttft_p99_met = s.ttft_s.count > 0 && s.ttft_s.p99 <= m.cfg.slo.ttft_s;
  s.tpot_p99_met = s.tpot_s.count == 0 || s.tpot_s.p99 <= m.cfg.slo.tpot_s;
  s.steps = m.steps;
  s.busy_s = m.busy_s;
  const double gpus = double(std::max(m.cfg.gpus_per_replica, 1));
  double mfu_sum = 0, mbu_sum = 0;
  for (size_t r = 0; r < m.flops.size(); ++r) {
    const double mfu = m.cfg.peak_flops_per_gpu > 0 ? m.flops[r] / (gpus * m.cfg.peak_flops_per_gpu * d) : kNoTime;
    const double mbu = m.cfg.peak_bw_per_gpu > 0 ? m.bytes[r] / (gpus * m.cfg.peak_bw_per_gpu * d) : kNoTime;
    s.replica_mfu.push_back(mfu);
    s.replica_mbu.push_back(mbu);
    mfu_sum += mfu;
    mbu_sum += mbu;
  }
  s.mfu_mean = mfu_sum / double(m.flops.size());
  s.mbu_mean = mbu_sum / double(m.flops.size());
  s.kv_utilization = m.kv_samples;
  double kv = 0;
  for (const auto& k : m.kv_samples) kv += k.mean;
  s.kv_utilization_mean = m.kv_samples.empty() ? 0 : kv / double(m.kv_samples.size());
  s.preemptions = m.preemptions;
  s.prefix_hit_tokens = m.prefix_hits;
  s.prefix_hit_rate = m.input_tokens ? double(m.prefix_hits) / double(m.input_tokens) : 0;
  return s;
}

void MetricsCollector::write_summary_json(const Summary& s, std::ostream& os) {
  auto pct = [](const Percentiles& p) {
    return "{\"count\":" + std::to_string(p.count) + ",\"mean\":" + json_number(p.mean) + ",\"p50\":" +
           json_number(p.p50) + ",\"p90\":" + json_number(p.p90) + ",\"p99\":" + json_number(p.p99) +
           ",\"p99.9\":" + json_number(p.p999) + ",\"max\":" + json_number(p.max) + "}";
  };
  auto list = [](const std::vector<double>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_number(v[i]);
    return out + "]";
  };
  os << "{\n  \"schema\": \"parasol.metrics/1\",\n";
  const RunInfo& r = s.run;
  os << "  \"run\": {\"command\": " << json_string(r.command) << ", \"parasol\": " << json_string(r.parasol_version)
     << ", \"commit\": " << json_string(r.commit) << ", \"scenario\": " << json_string(r.scenario)
     << ", \"scenario_hash\": " << json_string(r.scenario_hash) << ", \"plan\": " << json_string(r.plan)
     << ", \"plan_source\": " << json_string(r.plan_source) << ", \"gpus\": " << r.gpus
     << ", \"replicas\": " << r.replicas << ", \"engine\": " << json_string(r.engine)
     << ", \"fidelity\": " << json_string(r.fidelity) << ", \"workload\": " << json_string(r.workload)
     << ", \"serving\": " << json_string(r.serving) << ", \"seed\": " << r.seed << "},\n";
  os << "  \"notes\": [";
  for (size_t i = 0; i < s.notes.size(); ++i) os << (i ? ", " : "") << json_string(s.notes[i]);
  os << "],\n";
  os << "  \"requests\": {\"arrived\": " << s.arrived << ", \"completed\": " << s.completed
     << ", \"rejected\": " << s.rejected << ", \"failed\": " << s.failed << ", \"reasons\": {";
  for (size_t i = 0; i < s.reasons.size(); ++i) {
    os << (i ? ", " : "") << json_string(s.reasons[i].first) << ": " << s.reasons[i].second;
  }
  os << "}},\n";
  os << "  \"duration_s\": " << json_number(s.duration_s) << ",\n";
  os << "  \"tokens\": {\"input\": " << s.input_tokens << ", \"output\": " << s.output_tokens << "},\n";
  os << "  \"throughput\": {\"requests_per_s\": " << json_number(s.request_throughput)
     << ", \"input_tokens_per_s\": " << json_number(s.input_token_throughput)
     << ", \"output_tokens_per_s\": " << json_number(s.output_token_throughput) << "},\n";
  os << "  \"latency_s\": {\n    \"ttft\": " << pct(s.ttft_s) << ",\n    \"tpot\": " << pct(s.tpot_s)
     << ",\n    \"itl\": " << pct(s.itl_s) << ",\n    \"e2e\": " << pct(s.e2e_s) << ",\n    \"queueing\": "
     << pct(s.queueing_s) << "\n  },\n";
  os << "  \"slo\": {\"ttft_s\": " << json_number(s.slo.ttft_s) << ", \"tpot_s\": " << json_number(s.slo.tpot_s)
     << ", \"met\": " << s.slo_met << ", \"goodput_fraction\": " << json_number(s.goodput_fraction)
     << ", \"goodput_rps\": " << json_number(s.goodput_rps) << ", \"ttft_p99_met\": "
     << (s.ttft_p99_met ? "true" : "false") << ", \"tpot_p99_met\": " << (s.tpot_p99_met ? "true" : "false")
     << "},\n";
  os << "  \"steps\": " << s.steps << ",\n  \"busy_s\": " << json_number(s.busy_s) << ",\n";
  os << "  \"utilization\": {\"mfu_mean\": " << json_number(s.mfu_mean) << ", \"mbu_mean\": "
     << json_number(s.mbu_mean) << ", \"replica_mfu\": " << list(s.replica_mfu) << ", \"replica_mbu\": "
     << list(s.replica_mbu) << "},\n";
  os << "  \"kv_cache\": {\"utilization_mean\": " << json_number(s.kv_utilization_mean) << ", \"samples\": [";
  for (size_t i = 0; i < s.kv_utilization.size(); ++i) {
    const auto& k = s.kv_utilization[i];
    os << (i ? "," : "") << "[" << json_number(k.t_s) << "," << json_number(k.mean) << "," << json_number(k.max)
       << "]";
  }
  os << "]},\n";
  os << "  \"preemptions\": " << s.preemptions << ",\n";
  os << "  \"prefix_cache\": {\"hit_tokens\": " << s.prefix_hit_tokens
     << ", \"hit_rate\": " << json_number(s.prefix_hit_rate) << "}\n}\n";
}

// A number for people: three significant figures (whole numbers from 100 on), "-" when not finite. The JSON keeps
// every digit ("%.9g").
std::string human_number(double v) {
  if (!std::isfinite(v)) return "-";
  const double a = std::fabs(v);
  char buf[40];
  if (a >= 100) std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (a >= 10) std::snprintf(buf, sizeof buf, "%.1f", v);
  else if (a >= 1) std::snprintf(buf, sizeof buf, "%.2f", v);
  else if (a == 0) return "0";
  else std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string MetricsCollector::summary_text(const Summary& s) {
  std::ostringstream os;
  const auto num = human_number;
  auto ms = [](double v) { return human_number(v * 1e3); };
  // A latency row; with an SLO on its p99, the target and whether the run met it.
  auto row = [&](const char* name, const Percentiles& p, double slo_s = 0, bool met = false) {
    os << "  " << name << " ms   p50 " << ms(p.p50) << "  p90 " << ms(p.p90) << "  p99 " << ms(p.p99)
       << "  p99.9 " << ms(p.p999) << "  mean " << ms(p.mean);
    if (slo_s > 0 && std::isfinite(slo_s)) os << "   SLO p99 <= " << ms(slo_s) << " ms: " << (met ? "met" : "MISSED");
    os << "\n";
  };
  for (const auto& n : s.notes) os << "note      " << n << "\n";
  os << "requests  " << s.arrived << " arrived, " << s.completed << " completed, " << s.rejected << " rejected, "
     << s.failed << " failed\n";
  for (const auto& [why, n] : s.reasons) os << "  " << n << " x " << why << "\n";
  os << "duration  " << num(s.duration_s) << " s, " << s.steps << " iterations\n";
  os << "throughput " << num(s.request_throughput) << " req/s, " << num(s.input_token_throughput) << " in tok/s, "
     << num(s.output_token_throughput) << " out tok/s\n";
  row("ttft    ", s.ttft_s, s.slo.ttft_s, s.ttft_p99_met);
  row("tpot    ", s.tpot_s, s.slo.tpot_s, s.tpot_p99_met);
  row("itl     ", s.itl_s);
  row("e2e     ", s.e2e_s);
  row("queueing", s.queueing_s);
  os << "goodput   " << num(100 * s.goodput_fraction) << "% of requests meet the SLOs (" << num(s.goodput_rps)
     << " req/s)\n";
  os << "gpu       MFU " << num(100 * s.mfu_mean) << "%, MBU " << num(100 * s.mbu_mean) << "%, KV used "
     << num(100 * s.kv_utilization_mean) << "% (mean)\n";
  os << "kv        " << s.preemptions << " preemptions, prefix-cache hit rate " << num(100 * s.prefix_hit_rate)
     << "% (" << s.prefix_hit_tokens << " prompt tokens served from the cache, not prefilled)\n";
  return os.str();
}

}  // namespace parasol::serve

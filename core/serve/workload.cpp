// Synthetic sources, source shaping (window, rate scaling, cap) and the `workload:` YAML section.
#include "core/serve/workload.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "core/common/error.hpp"
#include "core/serve/metrics.hpp"

namespace parasol::serve {
namespace {

// Our own distributions over mt19937_64, so draws are the same with any standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform() { return double(gen_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double exponential(double rate) { return -std::log1p(-uniform()) / rate; }
  double normal() {  // Box-Muller, one value per call
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  double gamma(double shape) {  // Marsaglia-Tsang, scale 1
    if (shape < 1.0) return gamma(shape + 1.0) * std::pow(1.0 - uniform(), 1.0 / shape);
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    while (true) {
      double x, v;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const double u = 1.0 - uniform();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }
  int64_t uniform_int(int64_t lo, int64_t hi) {  // inclusive
    return lo + int64_t(uniform() * double(hi - lo + 1));
  }

 private:
  std::mt19937_64 gen_;
};

class LengthSampler {
 public:
  LengthSampler(const LengthSpec& s, bool output_column) : spec_(s) {
    if (s.kind == LengthKind::kEmpirical) {
      auto src = open_trace(s.trace);
      while (auto r = src->next()) values_.push_back(output_column ? r->output_tokens : r->input_tokens);
      if (values_.empty()) throw ConfigError("empirical lengths: trace " + s.trace.path + " has no requests");
    }
    if (s.kind == LengthKind::kLognormal) {
      sigma_ = std::sqrt(std::log1p(s.cv * s.cv));
      mu_ = std::log(s.mean) - 0.5 * sigma_ * sigma_;
    }
  }
  int64_t draw(Rng& rng) const {
    switch (spec_.kind) {
      case LengthKind::kFixed: return spec_.value;
      case LengthKind::kUniform: return rng.uniform_int(spec_.min, spec_.max);
      case LengthKind::kLognormal:
        return std::clamp<int64_t>(std::llround(std::exp(mu_ + sigma_ * rng.normal())), spec_.min, spec_.max);
      case LengthKind::kEmpirical:
        return std::clamp<int64_t>(values_[size_t(rng.uniform_int(0, int64_t(values_.size()) - 1))], spec_.min,
                                   spec_.max);
    }
    return spec_.value;
  }

 private:
  LengthSpec spec_;
  std::vector<int64_t> values_;
  double mu_ = 0, sigma_ = 0;
};

const char* arrival_name(ArrivalKind k) {
  switch (k) {
    case ArrivalKind::kPoisson: return "poisson";
    case ArrivalKind::kGamma: return "gamma";
    case ArrivalKind::kConstant: return "constant";
    case ArrivalKind::kBurst: return "burst";
  }
  return "?";
}

class SyntheticSource final : public RequestSource {
 public:
  SyntheticSource(const WorkloadSpec& s, uint64_t seed)
      : spec_(s), rng_(seed), input_(s.input, false), output_(s.output, true) {}

  std::optional<Request> next() override {
    t_ += gap();
    Request r;
    r.id = next_id_++;
    r.arrival_s = t_;
    r.input_tokens = input_.draw(rng_);
    r.output_tokens = output_.draw(rng_);
    return r;
  }
  std::string describe() const override {
    return std::string(arrival_name(spec_.arrival.kind)) + " arrivals at " + format_number(spec_.arrival.rate_per_s) +
           " req/s";
  }

 private:
  double gap() {
    const ArrivalSpec& a = spec_.arrival;
    switch (a.kind) {
      case ArrivalKind::kPoisson: return rng_.exponential(a.rate_per_s);
      case ArrivalKind::kConstant: return 1.0 / a.rate_per_s;
      case ArrivalKind::kGamma: {
        const double shape = 1.0 / (a.cv * a.cv);
        return rng_.gamma(shape) / (shape * a.rate_per_s);
      }
      case ArrivalKind::kBurst: {
        // Time-rescaling of a unit-rate Poisson process through the piecewise-constant rate.
        double work = rng_.exponential(1.0);
        double t = t_;
        while (true) {
          const double phase = std::fmod(t, a.burst_period_s);
          const bool in_burst = phase < a.burst_duration_s;
          const double rate = a.rate_per_s * (in_burst ? a.burst_factor : 1.0);
          const double seg_end = t - phase + (in_burst ? a.burst_duration_s : a.burst_period_s);
          const double seg = std::max(seg_end - t, 1e-12);
          if (work <= rate * seg) return t + work / rate - t_;
          work -= rate * seg;
          t = seg_end;
        }
      }
    }
    return 0;
  }

  WorkloadSpec spec_;
  Rng rng_;
  LengthSampler input_, output_;
  double t_ = 0;
  int64_t next_id_ = 0;
};

class ShapedSource final : public RequestSource {
 public:
  ShapedSource(std::unique_ptr<RequestSource> inner, double scale, double start_s, double end_s, int64_t cap)
      : inner_(std::move(inner)), scale_(scale), start_s_(start_s), end_s_(end_s), cap_(cap) {}
  std::optional<Request> next() override {
    if (done_ || (cap_ >= 0 && emitted_ >= cap_)) return std::nullopt;
    while (auto r = inner_->next()) {
      if (r->arrival_s < start_s_) continue;
      if (r->arrival_s >= end_s_) break;
      if (!first_) first_ = r->arrival_s;
      r->arrival_s = (r->arrival_s - *first_) / scale_;
      r->id = emitted_++;
      return r;
    }
    done_ = true;
    return std::nullopt;
  }
  std::string describe() const override {
    std::string d = inner_->describe();
    if (scale_ != 1.0) d += " x" + format_number(scale_);
    if (start_s_ > 0 || end_s_ < 1e300) {
      d += " window [" + format_number(start_s_) + ", " + (end_s_ < 1e300 ? format_number(end_s_) : "end") + ") s";
    }
    if (cap_ >= 0) d += ", " + std::to_string(cap_) + " requests";
    return d;
  }

 private:
  std::unique_ptr<RequestSource> inner_;
  double scale_, start_s_, end_s_;
  int64_t cap_;
  int64_t emitted_ = 0;
  std::optional<double> first_;
  bool done_ = false;
};

// A trace path as written: absolute, else relative to the YAML file's folder, else to the data directory
// ($PARASOL_DATA_DIR, or the source tree). A missing file is an error at the key that named it.
std::string resolve_path(const yaml::Node& at) {
  namespace fs = std::filesystem;
  const std::string ref = at.as_string();
  std::error_code ec;
  std::vector<fs::path> tried;
  if (fs::path(ref).is_absolute()) {
    tried.push_back(ref);
  } else {
    if (!at.file().empty()) tried.push_back(fs::path(at.file()).parent_path() / ref);
    const char* env = std::getenv("PARASOL_DATA_DIR");
    tried.push_back(fs::path(env && *env ? env : PARASOL_DATA_DIR) / ref);
  }
  std::string where;
  for (const auto& p : tried) {
    if (fs::is_regular_file(p, ec)) return p.lexically_normal().string();
    where += (where.empty() ? "" : " or ") + p.lexically_normal().string();
  }
  at.fail("an existing trace file (looked for " + where + ")");
}

TraceSpec load_trace(const yaml::Node& n) {
  n.allow_keys({"path", "format", "model", "log_type", "keep_failed"});
  TraceSpec t;
  t.path = resolve_path(n.at("path"));
  t.format = parse_trace_format(n.at("format").as_enum({"azure", "mooncake", "burstgpt", "parasol"}));
  t.model_filter = n.str_or("model", "");
  t.log_type_filter = n.str_or("log_type", "");
  t.keep_failed = n.bool_or("keep_failed", false);
  return t;
}

LengthSpec load_length(const yaml::Node& n) {
  // Lengths are token counts up to 2^40 (as trace rows): past any context window, exact in 64-bit sums.
  constexpr int64_t kMaxLength = int64_t{1} << 40;
  LengthSpec l;
  if (n.is_scalar()) {  // shorthand: `input: 512`
    l.value = n.as_int(1, kMaxLength);
    return l;
  }
  const std::string dist = n.at("dist").as_enum({"fixed", "uniform", "lognormal", "empirical"});
  if (dist == "fixed") {
    n.allow_keys({"dist", "value"});
    l.value = n.integer("value", 0, kMaxLength);
  } else if (dist == "uniform") {
    n.allow_keys({"dist", "min", "max"});
    l.kind = LengthKind::kUniform;
    l.min = n.integer("min", 0, kMaxLength);
    l.max = n.integer("max", l.min, kMaxLength);
  } else if (dist == "lognormal") {
    n.allow_keys({"dist", "mean", "cv", "min", "max"});
    l.kind = LengthKind::kLognormal;
    l.mean = n.number("mean", 1e-9, double(kMaxLength));
    l.cv = n.number_or("cv", 1.0, 0.0, 1e3);
    l.min = n.integer_or("min", 1, 0, kMaxLength);
    l.max = n.integer_or("max", 1 << 20, l.min, kMaxLength);
  } else {
    n.allow_keys({"dist", "trace", "format", "min", "max"});
    l.kind = LengthKind::kEmpirical;
    l.trace.path = resolve_path(n.at("trace"));
    l.trace.format = parse_trace_format(n.at("format").as_enum({"azure", "mooncake", "burstgpt", "parasol"}));
    l.min = n.integer_or("min", 0, 0, kMaxLength);
    l.max = n.integer_or("max", kMaxLength, l.min, kMaxLength);
  }
  return l;
}

}  // namespace

WorkloadSpec load_workload(const yaml::Node& n) {
  if (!n.is_map()) n.fail("a workload map");
  n.allow_keys({"kind", "requests", "arrival", "input", "output", "trace", "rate_scale", "window", "seed",
                "missing_trace"});
  if (auto m = n.get("missing_trace")) m->as_enum({"error", "workload_stats"});  // acted on by the simulator
  WorkloadSpec w;
  const std::string kind = n.has("kind") ? n.at("kind").as_enum({"synthetic", "trace"})
                           : n.has("trace")  ? "trace"
                                             : "synthetic";
  w.max_requests = n.integer_or("requests", -1, 1);
  w.rate_scale = n.number_or("rate_scale", 1.0, 1e-12);
  if (auto win = n.get("window")) {
    win->allow_keys({"start", "end"});
    w.window_start_s = win->quantity_or("start", Dimension::kTime, 0.0);
    w.window_end_s = win->quantity_or("end", Dimension::kTime, 1e300);
    if (w.window_end_s <= w.window_start_s) win->at("end").fail("an end after the start");
  }
  if (auto s = n.get("seed")) w.seed = uint64_t(s->as_int(0));
  if (kind == "trace") {
    w.kind = WorkloadSpec::Kind::kTrace;
    for (const char* k : {"arrival", "input", "output"}) {
      if (n.has(k)) n.at(k).fail("no '" + std::string(k) + "' in a trace workload (lengths come from the trace)");
    }
    w.trace = load_trace(n.at("trace"));
    return w;
  }
  if (n.has("trace")) n.at("trace").fail("no 'trace' in a synthetic workload (kind: trace replays one)");
  if (w.max_requests < 0 && w.window_end_s >= 1e300) n.fail("a 'requests' cap or a window end for a synthetic workload");
  if (auto a = n.get("arrival")) {
    a->allow_keys({"process", "rate", "cv", "burst_period", "burst_duration", "burst_factor"});
    const std::string p = a->at("process").as_enum({"poisson", "gamma", "constant", "burst"});
    w.arrival.kind = p == "poisson"    ? ArrivalKind::kPoisson
                     : p == "gamma"    ? ArrivalKind::kGamma
                     : p == "constant" ? ArrivalKind::kConstant
                                       : ArrivalKind::kBurst;
    w.arrival.rate_per_s = a->number("rate", 1e-12);
    w.arrival.cv = a->number_or("cv", 1.0, 1e-6);
    w.arrival.burst_period_s = a->quantity_or("burst_period", Dimension::kTime, 60.0, 1e-9);
    w.arrival.burst_duration_s = a->quantity_or("burst_duration", Dimension::kTime, 5.0, 0.0);
    w.arrival.burst_factor = a->number_or("burst_factor", 10.0, 1e-9);
    if (w.arrival.burst_duration_s > w.arrival.burst_period_s) {
      a->at("burst_duration").fail("a burst no longer than its period");
    }
  } else {
    n.fail("an 'arrival' section for a synthetic workload");
  }
  if (auto i = n.get("input")) w.input = load_length(*i);
  if (auto o = n.get("output")) w.output = load_length(*o);
  return w;
}

std::unique_ptr<RequestSource> shape_source(std::unique_ptr<RequestSource> inner, double rate_scale,
                                            double window_start_s, double window_end_s, int64_t max_requests) {
  if (!(rate_scale > 0)) throw ConfigError("workload: rate_scale must be positive");
  return std::make_unique<ShapedSource>(std::move(inner), rate_scale, window_start_s, window_end_s, max_requests);
}

int64_t validate_trace(const TraceSpec& trace, double window_start_s, double window_end_s) {
  auto src = open_trace(trace);
  int64_t n = 0;
  while (auto r = src->next()) n += r->arrival_s >= window_start_s && r->arrival_s < window_end_s ? 1 : 0;
  return n;
}

std::unique_ptr<RequestSource> make_source(const WorkloadSpec& spec, uint64_t seed, int64_t* requests) {
  std::unique_ptr<RequestSource> inner;
  if (requests) *requests = spec.max_requests;
  if (spec.kind == WorkloadSpec::Kind::kTrace) {
    // Every row, before anything runs (the run itself streams it again), counting the requests in the window.
    const int64_t n = validate_trace(spec.trace, spec.window_start_s, spec.window_end_s);
    if (requests) *requests = spec.max_requests >= 0 ? std::min(spec.max_requests, n) : n;
    inner = open_trace(spec.trace);
  } else {
    inner = std::make_unique<SyntheticSource>(spec, spec.seed.value_or(seed));
  }
  return shape_source(std::move(inner), spec.rate_scale, spec.window_start_s, spec.window_end_s, spec.max_requests);
}

}  // namespace parasol::serve

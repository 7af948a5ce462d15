// Workloads: where requests come from. A RequestSource streams Requests in arrival order, one at a time, so a trace
// of millions of requests never sits whole in memory. Two families:
//   - synthetic: an arrival process (poisson, gamma with a CV, constant, burst = Poisson whose rate is multiplied
//     during periodic bursts) x length distributions for input and output (fixed, uniform, lognormal, empirical =
//     resampling the lengths of a trace file), all from one seeded RNG with our own distributions (portable bytes);
//   - trace replay: Azure LLM 2023 CSV, Mooncake JSONL (with prefix hash_ids), BurstGPT CSV and the parasol CSV
//     (docs/workloads.md documents every format and the options below).
// Common options: a time window on the trace's own clock, rate scaling (arrival times divided by k, so x2 = twice
// the rate), a cap on the number of requests. Ids are assigned 0, 1, 2, ... in the order requests are emitted;
// arrival times start at 0 (the first request of the window).
// The `workload:` section of a scenario YAML is read by load_workload() (unknown keys are errors).
// Thread behaviour: a source is used by one thread; distinct sources are independent.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/common/yaml_node.hpp"
#include "core/serve/request.hpp"

namespace parasol::serve {

class RequestSource {
 public:
  virtual ~RequestSource() = default;
  // The next request in arrival order (arrival_s non-decreasing), or nullopt when exhausted.
  virtual std::optional<Request> next() = 0;
  // One line for logs: "azure trace AzureLLMInferenceTrace_conv.csv x2.0", "poisson 10 req/s, 1000 requests".
  virtual std::string describe() const = 0;
};

enum class TraceFormat { kAzure, kMooncake, kBurstGpt, kParasol };
TraceFormat parse_trace_format(const std::string& name);  // "azure" | "mooncake" | "burstgpt" | "parasol"
const char* to_string(TraceFormat f);

struct TraceSpec {
  std::string path;  // resolved (load_workload makes it relative to the scenario file's folder)
  TraceFormat format = TraceFormat::kParasol;
  // BurstGPT only: keep rows whose Model equals this (empty: all) and whose Log Type equals this (empty: all).
  std::string model_filter;
  std::string log_type_filter;
  // BurstGPT only: rows with 0 response tokens are failed requests in that trace; skipped unless true.
  bool keep_failed = false;
};

inline TraceSpec trace_spec(std::string path, TraceFormat format) {
  TraceSpec t;
  t.path = std::move(path);
  t.format = format;
  return t;
}

enum class ArrivalKind { kPoisson, kGamma, kConstant, kBurst };
struct ArrivalSpec {
  ArrivalKind kind = ArrivalKind::kPoisson;
  double rate_per_s = 1.0;   // mean arrival rate (outside bursts for kBurst)
  double cv = 1.0;           // kGamma: coefficient of variation of inter-arrival times (1 = Poisson)
  // kBurst: every burst_period_s, for burst_duration_s, the rate is multiplied by burst_factor.
  double burst_period_s = 60.0;
  double burst_duration_s = 5.0;
  double burst_factor = 10.0;
};

enum class LengthKind { kFixed, kUniform, kLognormal, kEmpirical };
struct LengthSpec {
  LengthKind kind = LengthKind::kFixed;
  int64_t value = 128;          // kFixed
  int64_t min = 1;              // kUniform bounds (inclusive); clamp bounds for kLognormal and kEmpirical
  int64_t max = 1 << 20;
  double mean = 128;            // kLognormal: mean and coefficient of variation of the length
  double cv = 1.0;
  TraceSpec trace;              // kEmpirical: lengths resampled uniformly from this trace's input (or output) column
};

inline LengthSpec fixed_length(int64_t n) {
  LengthSpec l;
  l.value = n;
  return l;
}

struct WorkloadSpec {
  enum class Kind { kSynthetic, kTrace } kind = Kind::kSynthetic;
  // synthetic
  ArrivalSpec arrival;
  LengthSpec input = fixed_length(512);
  LengthSpec output = fixed_length(128);
  // trace
  TraceSpec trace;
  // common
  double rate_scale = 1.0;        // arrival times divided by this
  double window_start_s = 0;      // trace clock; requests before are skipped
  double window_end_s = 1e300;    // trace clock; requests at or after end stop the source
  int64_t max_requests = -1;      // -1: no cap (a synthetic workload needs a cap or a window end)
  std::optional<uint64_t> seed;   // overrides the run's seed for this workload when set
};

// Reads the `workload:` section. Shape (docs/workloads.md has the full reference):
//   workload:
//     kind: synthetic | trace
//     requests: 10000                         # cap (max_requests)
//     arrival: {process: poisson | gamma | constant | burst, rate: 12.5, cv: 2,
//               burst_period: "60 s", burst_duration: "5 s", burst_factor: 10}
//     input:  {dist: fixed, value: 512} | {dist: uniform, min: 1, max: 4096}
//           | {dist: lognormal, mean: 1024, cv: 1.5, min: 1, max: 32768}
//           | {dist: empirical, trace: FILE, format: azure}
//     output: (same shapes)
//     trace: {path: FILE, format: azure | mooncake | burstgpt | parasol, model: ..., log_type: ..., keep_failed: false}
//     rate_scale: 2.0
//     window: {start: "600 s", end: "1200 s"}
//     seed: 7
//     missing_trace: error | workload_stats   # a trace file that is absent: an error (default), or simulate the
//                                             # scenario's declared search.workload_stats instead, said in the output
// Relative paths are resolved against the folder of the YAML file. Errors are ConfigError at the offending key.
WorkloadSpec load_workload(const yaml::Node& node);

// Builds the source. `seed` drives synthetic draws (spec.seed wins when set). Reads a trace through once now
// (validate_trace), so a missing or malformed file, or any bad row, is a ConfigError (file, line, column, what was
// expected) before a simulation starts, never in the middle of one.
// `requests`, when given, is set to how many requests the source will give when that is known without drawing them
// (a trace's rows in the window, capped by max_requests; a synthetic workload's cap), else -1.
std::unique_ptr<RequestSource> make_source(const WorkloadSpec& spec, uint64_t seed, int64_t* requests = nullptr);

// Reads every row of the trace (streaming: one line in memory), throws the first row's ConfigError, and returns the
// number of rows whose arrival (trace clock) is in [window_start_s, window_end_s).
int64_t validate_trace(const TraceSpec& trace, double window_start_s = 0, double window_end_s = 1e300);

// Individual readers, for callers that bypass WorkloadSpec (window/scale/cap not applied: wrap in a
// ShapedSource for those).
std::unique_ptr<RequestSource> open_trace(const TraceSpec& trace);

// Applies the common options (window, rate scaling, cap) to any source and renumbers ids 0, 1, ...
std::unique_ptr<RequestSource> shape_source(std::unique_ptr<RequestSource> inner, double rate_scale,
                                            double window_start_s, double window_end_s, int64_t max_requests);

// Parses an Azure trace TIMESTAMP ("2023-11-16 18:17:03.9799600") to seconds since 1970-01-01 (UTC, no leap
// seconds). nullopt when malformed.
std::optional<double> parse_azure_timestamp(std::string_view text);

}  // namespace parasol::serve

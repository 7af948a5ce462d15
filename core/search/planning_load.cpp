#include "core/search/planning_load.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/common/error.hpp"
#include "core/serve/workload.hpp"

namespace parasol::search {
namespace {

constexpr int64_t kSyntheticDraws = 20000;  // requests drawn to estimate a synthetic workload's mean lengths

}  // namespace

// Trace files the workload section names, as (node that names it, found?).
std::vector<std::pair<yaml::Node, bool>> referenced_traces(const yaml::Node& w) {
  std::vector<std::pair<yaml::Node, bool>> out;
  auto check = [&](const yaml::Node& at) {
    out.emplace_back(at, spec::find_referenced_file(at.as_string(), at.file()).has_value());
  };
  if (auto t = w.get("trace"); t && t->is_map())
    if (auto p = t->get("path")) check(*p);
  for (const char* k : {"input", "output"})
    if (auto l = w.get(k); l && l->is_map())
      if (auto p = l->get("trace")) check(*p);
  return out;
}

WorkloadLoad planning_load(const spec::Scenario& s, uint64_t seed, std::string& source) {
  const auto& declared = s.search.workload_stats;
  auto from_declared = [&](const std::string& why) {
    source = "declared workload_stats (" + why + ")";
    // The variability of what is simulated in their place (sim/plan_choice.hpp): Poisson arrivals, lognormal prompt
    // lengths of cv 1 (squared cv 1; 99th percentile exp(z99 sigma - sigma^2 / 2) = 4.90 x the mean, sigma^2 = ln 2).
    WorkloadLoad l{declared->rate_per_s, declared->input_mean, declared->output_mean};
    const double sigma = std::sqrt(std::log(2.0));
    l.arrival_cv2 = 1;
    l.input_cv2 = 1;
    l.input_p99 = declared->input_mean * std::exp(2.326 * sigma - 0.5 * sigma * sigma);
    return l;
  };
  if (!s.workload) {
    if (declared) return from_declared("no workload section");
    throw ConfigError(s.file, 0, 0, "workload", "a workload section or search.workload_stats", "neither");
  }
  for (const auto& [at, found] : referenced_traces(*s.workload))
    if (!found && declared) return from_declared("trace " + at.as_string() + " not found");
  const serve::WorkloadSpec spec = serve::load_workload(*s.workload);
  auto src = serve::make_source(spec, seed);
  int64_t n = 0;
  double in = 0, out = 0, first = 0, last = 0, prev = 0, gap2 = 0;
  std::vector<double> inputs;
  const int64_t cap = spec.kind == serve::WorkloadSpec::Kind::kSynthetic ? kSyntheticDraws : INT64_MAX;
  while (n < cap) {
    auto r = src->next();
    if (!r) break;
    if (n == 0) first = prev = r->arrival_s;
    gap2 += (r->arrival_s - prev) * (r->arrival_s - prev);
    prev = last = r->arrival_s;
    inputs.push_back(static_cast<double>(r->input_tokens));
    in += static_cast<double>(r->input_tokens);
    out += static_cast<double>(r->output_tokens);
    ++n;
  }
  if (n < 2 || !(last > first)) throw ConfigError(s.file, 0, 0, "workload", "at least two requests", std::to_string(n));
  WorkloadLoad load;
  load.input_mean = std::max(1.0, in / static_cast<double>(n));
  load.output_mean = std::max(1.0, out / static_cast<double>(n));
  load.rate_per_s = static_cast<double>(n - 1) / (last - first);
  // Variability: the squared cv of the inter-arrival gaps and of the prompt lengths, the 99th percentile prompt.
  const double gap = (last - first) / static_cast<double>(n - 1);
  load.arrival_cv2 = std::max(0.0, gap2 / static_cast<double>(n - 1) / (gap * gap) - 1);
  double in2 = 0;
  for (double x : inputs) in2 += (x - load.input_mean) * (x - load.input_mean);
  load.input_cv2 = in2 / static_cast<double>(n) / (load.input_mean * load.input_mean);
  const auto k = inputs.begin() + static_cast<std::ptrdiff_t>(std::min<int64_t>(n - 1, (99 * n) / 100));
  std::nth_element(inputs.begin(), k, inputs.end());
  load.input_p99 = *k;
  if (spec.kind == serve::WorkloadSpec::Kind::kSynthetic) {
    const auto& a = spec.arrival;
    load.rate_per_s = a.rate_per_s * spec.rate_scale;
    if (a.kind == serve::ArrivalKind::kBurst)
      load.rate_per_s *= 1 + (a.burst_factor - 1) * a.burst_duration_s / a.burst_period_s;
  }
  source = src->describe() + " (" + std::to_string(n) + " requests)";
  return load;
}

void apply_serving(const spec::Serving& serving, plan::PlanOptions& o) {
  if (serving.max_num_seqs) o.max_batch_seqs = *serving.max_num_seqs;
  if (serving.max_num_batched_tokens) o.max_batch_tokens = *serving.max_num_batched_tokens;
  if (serving.block_size) o.kv_block_tokens = *serving.block_size;
  if (serving.gpu_memory_utilization) o.target_utilization = *serving.gpu_memory_utilization;
}

SearchInput scenario_search_input(const spec::Scenario& s, uint64_t seed, std::string& load_source) {
  SearchInput in;
  in.model = s.model;
  in.cluster = &s.cluster;
  in.gpu_type = s.gpu_type;
  in.space = s.search;
  in.slo = s.slo;
  in.load = planning_load(s, seed, load_source);
  if (!s.engine.name.empty()) in.engine = s.engine;
  apply_serving(spec::effective_serving(s), in.options);
  return in;
}

}  // namespace parasol::search

// parasol sim's plan choice (plan_choice.hpp): the search of `parasol plan`, and the workload stand-in.
#include "sim/plan_choice.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>
#include <vector>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/search/search.hpp"
#include "sim/plan_verify.hpp"

namespace parasol::sim {
namespace {

std::string fmt(const char* f, double v) { return format_number(f, v); }

}  // namespace

PlanChoice choose_plan(const spec::Scenario& s, uint64_t seed, int verify, int64_t verify_requests) {
  std::string source;
  search::SearchInput in = search::scenario_search_input(s, seed, source);
  // The chosen plan and its runner-up (the report below), or the candidates to verify; the pruning keeps the
  // ranking exact.
  in.keep_top = std::max(2, verify);
  const search::SearchResult r = search::search(in);
  if (r.ranked.empty())
    throw ConfigError(s.file, 0, 0, "search", "at least one feasible layout with a non-zero goodput",
                      "none (`parasol plan -v` lists the infeasible layouts and their reasons)");
  if (verify > 0) {
    const Verification v = verify_candidates(s, in, r, verify, verify_requests, seed);
    const Verified& top = v.verified.at(0);
    if (top.ok) {
      plan::MadePlan made = search::candidate_plan(in, top.candidate);
      if (!made.feasibility.ok) throw RuntimeFailure("sim: the verified layout " + top.candidate.label() + " cannot be made");
      PlanChoice c;
      c.plan = std::move(made.plan);
      c.label = top.candidate.label();
      c.why = "searched " + std::to_string(r.stats.layouts) + " layouts for " + fmt("%.4g", in.load.rate_per_s) +
              " req/s and simulated the best " + std::to_string(v.verified.size()) + " on " +
              std::to_string(verify_requests) + " requests each: " + fmt("%.1f", 100 * top.slo_fraction) +
              "% meet the SLOs (estimator's rank " + std::to_string(top.estimator_rank) + ")";
      if (v.verified.size() > 1) {
        const Verified& next = v.verified[1];
        c.why += "; runner-up " + next.candidate.label() + ": " +
                 (next.ok ? fmt("%.1f", 100 * next.slo_fraction) + "% meet them" : "failed: " + next.error);
      }
      return c;
    }
  }
  const search::Candidate& best = r.ranked[0];
  plan::MadePlan made = search::candidate_plan(in, best);
  if (!made.feasibility.ok) throw RuntimeFailure("sim: the chosen layout " + best.label() + " cannot be made");
  PlanChoice c;
  c.plan = std::move(made.plan);
  c.label = best.label();
  c.why = "searched " + std::to_string(r.stats.layouts) + " layouts (" + std::to_string(r.stats.feasible_layouts) +
          " feasible, " + std::to_string(r.ranked_total) + " ranked) for " + fmt("%.4g", in.load.rate_per_s) +
          " req/s: " + (best.meets_slo ? "meets the SLOs" : "misses the SLOs (" + best.violation + ")") +
          (r.objective == spec::Objective::kFewestGpus
               ? " with the fewest GPUs (" + std::to_string(best.gpus) + ")"
               : " with the best goodput (" + fmt("%.5g", best.goodput_tok_s_per_gpu) + " tok/s/GPU)");
  if (r.ranked.size() > 1)
    c.why += "; runner-up " + r.ranked[1].label() + ": " + search::why_lost(r.ranked[1], best, r.objective);
  return c;
}

std::optional<serve::WorkloadSpec> scenario_workload(const spec::Scenario& s, std::string& note) {
  note.clear();
  if (!s.workload) return std::nullopt;
  const auto& declared = s.search.workload_stats;
  const auto policy = s.workload->get("missing_trace");
  const bool substitute = policy && policy->as_enum({"error", "workload_stats"}) == "workload_stats";
  if (substitute && !declared)
    policy->fail("search.workload_stats in the scenario (missing_trace: workload_stats simulates them)",
                 "no search.workload_stats");
  for (const auto& [at, found] : search::referenced_traces(*s.workload)) {
    if (found) continue;
    if (!substitute) {
      const auto where = std::filesystem::path(at.file()).parent_path() / at.as_string();
      at.fail("a trace file at " + where.lexically_normal().string() +
                  " (the shared traces live in ../shared/traces beside the checkout: see that folder's README and "
                  "docs/workloads.md; `missing_trace: workload_stats` in the workload section simulates the declared "
                  "search.workload_stats instead)",
              "no such file");
    }
    // Keep the section's own cap, window end and seed; replace the arrivals and lengths by the declared statistics.
    serve::WorkloadSpec orig;
    orig.max_requests = -1;
    if (auto r = s.workload->get("requests")) orig.max_requests = r->as_int(1, int64_t{1} << 40);
    serve::WorkloadSpec w;
    w.kind = serve::WorkloadSpec::Kind::kSynthetic;
    w.arrival.kind = serve::ArrivalKind::kPoisson;
    w.arrival.rate_per_s = declared->rate_per_s;
    auto lengths = [](double mean) {
      serve::LengthSpec l;
      l.kind = serve::LengthKind::kLognormal;
      l.mean = mean;
      l.cv = 1.0;
      l.min = 1;
      l.max = 1 << 17;
      return l;
    };
    w.input = lengths(declared->input_mean);
    w.output = lengths(declared->output_mean);
    w.max_requests = orig.max_requests;
    note = "trace " + at.as_string() + " not found: simulating Poisson arrivals at " + fmt("%.4g", declared->rate_per_s) +
           " req/s with lognormal lengths (cv 1) of the declared means " + fmt("%.0f", declared->input_mean) + " / " +
           fmt("%.0f", declared->output_mean) + " tokens (search.workload_stats; workload.missing_trace: workload_stats)";
    return w;
  }
  return serve::load_workload(*s.workload);
}

}  // namespace parasol::sim

// `parasol plan SCENARIO [--objective O] [--verify K] [--top N] [--out DIR] [--json] [-v]`: search every layout of the
// scenario's model on its cluster under its workload and SLOs (core/search/search.hpp), print the ranking (why each
// runner-up lost), and write the chosen Plan (plan.yaml, parasol.plan/1) and the Pareto frontier (pareto.csv) to DIR.
// Objectives: the best goodput per GPU in the budget, the fewest GPUs that meet the SLOs at the workload's rate, or
// the highest rate the chosen deployment (or --plan FILE) sustains, searched in simulation (sim/rate_search.hpp;
// rate_curve.csv and rate_curve.svg). docs/search.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/plan/plan_io.hpp"
#include "core/search/planning_load.hpp"
#include "core/search/search.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/scenario.hpp"
#include "tools/calibration_option.hpp"
#include "tools/cli.hpp"
#ifdef PARASOL_HAVE_SIM
#include "sim/plan_verify.hpp"
#include "sim/rate_search.hpp"
#endif

namespace parasol::tools {
namespace {

void print_table(const spec::Scenario& s, const search::SearchResult& r, const std::string& source, int top,
                 int verbosity) {
  std::cout << "scenario " << s.name << ": " << s.model.name << " on " << s.cluster.name << " (" << r.gpu_budget
            << " x " << s.gpu_type << ")\n";
  std::cout << "load: " << format_number("%.4g", r.load.rate_per_s) << " req/s, mean prompt "
            << format_number("%.0f", r.load.input_mean) << " and output " << format_number("%.0f", r.load.output_mean)
            << " tokens, from " << source << "\n";
  std::cout << "SLOs:";
  if (s.slo.ttft_p99_s) std::cout << " TTFT p99 <= " << format_time(*s.slo.ttft_p99_s);
  if (s.slo.tpot_p99_s) std::cout << " TPOT p99 <= " << format_time(*s.slo.tpot_p99_s);
  if (s.slo.e2e_p99_s) std::cout << " E2E p99 <= " << format_time(*s.slo.e2e_p99_s);
  if (!s.slo.ttft_p99_s && !s.slo.tpot_p99_s && !s.slo.e2e_p99_s) std::cout << " none";
  if (s.search.objective == spec::Objective::kFewestGpus)
    std::cout << "\nobjective: meets the SLOs at this load with the fewest GPUs (each layout sized to the load), then "
                 "goodput (output tokens/s per GPU at the largest load meeting the SLOs), then tokens/s per user\n\n";
  else
    std::cout << "\nobjective: meets the SLOs at this load, then goodput (output tokens/s per GPU at the largest load "
                 "meeting the SLOs), then tokens/s per user\n\n";
  std::printf("%4s  %-52s %5s %10s %12s %10s %10s %10s  %s\n", "rank", "layout", "GPUs", "goodput", "tok/s/GPU",
              "tok/s/user", "TTFT p99", "TPOT p99", "verdict");
  std::printf("%4s  %-52s %5s %10s %12s %10s %10s %10s\n", "", "", "", "req/s", "(goodput)", "", "at load", "at load");
  for (size_t i = 0; i < r.ranked.size() && static_cast<int>(i) < top; ++i) {
    const auto& c = r.ranked[i];
    const std::string verdict = i == 0 ? (c.meets_slo ? "chosen" : "chosen (misses the SLOs: " + c.violation + ")")
                                       : "lost: " + search::why_lost(c, r.ranked[0], r.objective);
    std::printf("%4zu  %-52s %5d %10.4g %12.5g %10.4g %10s %10s  %s\n", i + 1, c.label().c_str(), c.gpus, c.goodput_rps,
                c.goodput_tok_s_per_gpu, c.tok_s_per_user, c.ttft_p99_s > 0 ? format_time(c.ttft_p99_s).c_str() : "-",
                c.tpot_p99_s > 0 ? format_time(c.tpot_p99_s).c_str() : "-", verdict.c_str());
  }
  std::cout << "\n"
            << r.stats.layouts << " layouts (" << r.stats.feasible_layouts << " feasible, " << r.infeasible.size()
            << " infeasible" << (verbosity >= 2 ? "" : ", -v lists them") << "), " << r.stats.candidates
            << " candidates, " << r.ranked_total << " ranked, "
            << (r.objective == spec::Objective::kFewestGpus ? std::string("no Pareto frontier under fewest_gpus")
                                                             : std::to_string(r.pareto.size()) + " on the Pareto frontier")
            << "; "
            << r.stats.step_evaluations << " steps costed for " << r.stats.step_lookups << " step-time queries over "
            << r.stats.stage_shapes << " stage shapes\n";
  if (verbosity >= 2 && !r.infeasible.empty()) {
    std::cout << "\ninfeasible layouts:\n";
    for (const auto& x : r.infeasible) {
      std::cout << "  " << x.config.label() << ":";
      for (size_t k = 0; k < x.reasons.size(); ++k) std::cout << (k ? "; " : " ") << x.reasons[k];
      std::cout << "\n";
    }
  }
}

struct PlanArgs {
  std::string scenario;
  std::string calibration;  // --calibration; else the scenario's `calibration:`
  std::string objective;  // --objective; else the scenario's search.objective
  std::string plan;       // --plan FILE: the deployment whose rate --objective max_rate searches
  int top = 0;
  int verify = 0;
  int64_t verify_requests = 2000;
};

#ifdef PARASOL_HAVE_SIM
std::string pct(double v) { return format_number("%+.0f%%", 100 * v); }

// The verified ranking: the estimate next to the simulation, and the estimator's error on the p99s.
void print_verified(const sim::Verification& v) {
  int64_t simulated = 0;
  for (const sim::Verified& x : v.verified) simulated = std::max(simulated, x.requests);
  std::cout << "\nverified by simulation (" << simulated << " requests of the workload, at most " << v.requests
            << "; analytic fidelity, the scenario's engine and serving knobs):\n";
  const bool fewest = v.objective == spec::Objective::kFewestGpus;
  if (fewest)
    std::cout << "(fewest GPUs: each candidate re-sized in simulation from the estimator's instance counts; GPUs "
                 "shows estimated -> simulated)\n";
  std::printf("%4s %4s  %-44s %9s %9s %11s %21s %21s  %s\n", "rank", "est", "layout", "GPUs", "SLO met",
              "goodput", "TTFT p99 est / sim", "TPOT p99 est / sim", "verdict");
  std::printf("%4s %4s  %-44s %9s %9s %11s\n", "", "rank", "", "", "(sim)", "req/s (sim)");
  for (size_t i = 0; i < v.verified.size(); ++i) {
    const sim::Verified& x = v.verified[i];
    const search::Candidate& c = x.candidate;
    if (!x.ok) {
      std::printf("%4zu %4d  %-44s %9d  simulation failed: %s\n", i + 1, x.estimator_rank, c.label().c_str(), c.gpus,
                  x.error.c_str());
      continue;
    }
    auto pair = [](double est, double sim) {
      return (est > 0 ? format_time(est) : std::string("-")) + " / " + format_time(sim) +
             (est > 0 ? " (" + pct(sim::estimate_error(est, sim)) + ")" : std::string());
    };
    std::string verdict = i == 0 ? "chosen" : "";
    if (!x.meets_slo) verdict += std::string(verdict.empty() ? "" : ", ") + "misses the SLOs in simulation";
    if (c.meets_slo != x.meets_slo)
      verdict += std::string(verdict.empty() ? "" : "; ") + "the estimator said it " + (c.meets_slo ? "meets" : "misses") +
                 " them";
    if (x.smaller_candidate)
      verdict += std::string(verdict.empty() ? "" : "; ") + std::to_string(x.smaller_candidate->gpus) +
                 " GPUs miss them (" +
                 format_number("%.1f", 100 * x.smaller.slo_fraction) + "% met)";
    const std::string gpus = fewest && x.estimated_gpus != c.gpus
                                 ? std::to_string(x.estimated_gpus) + "->" + std::to_string(c.gpus)
                                 : std::to_string(c.gpus);
    std::printf("%4zu %4d  %-44s %9s %8.1f%% %11.4g %21s %21s  %s\n", i + 1, x.estimator_rank, c.label().c_str(),
                gpus.c_str(), 100 * x.slo_fraction, x.goodput_rps, pair(c.ttft_p99_s, x.ttft_p99_s).c_str(),
                pair(c.tpot_p99_s, x.tpot_p99_s).c_str(), verdict.c_str());
  }
}

nlohmann::json verified_json(const sim::Verification& v) {
  nlohmann::json a = nlohmann::json::array();
  for (const sim::Verified& x : v.verified) {
    nlohmann::json j{{"layout", x.candidate.label()},
                     {"estimator_rank", x.estimator_rank},
                     {"gpus", x.candidate.gpus},
                     {"estimated_gpus", x.estimated_gpus},
                     {"simulations", x.simulations},
                     {"ok", x.ok}};
    if (!x.ok) {
      j["error"] = x.error;
    } else {
      j["simulated"] = {{"requests", x.requests},        {"duration_s", x.duration_s},
                        {"slo_fraction", x.slo_fraction}, {"goodput_rps", x.goodput_rps},
                        {"ttft_p99_s", x.ttft_p99_s},     {"tpot_p99_s", x.tpot_p99_s},
                        {"meets_slo", x.meets_slo}};
      if (x.smaller_candidate)
        j["smaller_missed"] = {{"layout", x.smaller_candidate->label()},
                               {"gpus", x.smaller_candidate->gpus},
                               {"slo_fraction", x.smaller.slo_fraction},
                               {"ttft_p99_s", x.smaller.ttft_p99_s},
                               {"tpot_p99_s", x.smaller.tpot_p99_s}};
      j["estimated"] = {{"ttft_p99_s", x.candidate.ttft_p99_s},
                        {"tpot_p99_s", x.candidate.tpot_p99_s},
                        {"meets_slo", x.candidate.meets_slo}};
    }
    a.push_back(std::move(j));
  }
  return {{"requests_per_candidate", v.requests}, {"objective", spec::to_string(v.objective)}, {"candidates", a}};
}

// The rate search's result: the bracket, then every simulated rate.
void print_rate_search(const sim::RateSearch& r, const std::string& label) {
  std::cout << "\nhighest rate " << label << " sustains within the SLOs (simulated, " << r.requests
            << " requests per rate; the workload's arrivals scaled in time):\n";
  std::printf("%12s %8s %9s %12s %12s %12s  %s\n", "rate req/s", "scale", "SLO met", "goodput", "TTFT p99", "TPOT p99",
              "verdict");
  for (const sim::RatePoint& p : r.curve) {
    if (!p.sim.ok) {
      std::printf("%12.4g %8.4g  simulation failed: %s\n", p.rate_rps, p.rate_scale, p.sim.error.c_str());
      continue;
    }
    std::printf("%12.4g %8.4g %8.1f%% %12.4g %12s %12s  %s\n", p.rate_rps, p.rate_scale, 100 * p.sim.slo_fraction,
                p.sim.goodput_rps, format_time(p.sim.ttft_p99_s).c_str(), format_time(p.sim.tpot_p99_s).c_str(),
                p.sim.meets_slo ? "meets the SLOs" : "misses them");
  }
  if (r.sustained_rps > 0 && r.missed_rps > 0)
    std::cout << "sustained: " << format_number("%.4g", r.sustained_rps) << " req/s (meets the SLOs; "
              << format_number("%.4g", r.missed_rps) << " req/s misses them)\n";
  else
    std::cout << "sustained: " << (r.sustained_rps > 0 ? format_number("%.4g", r.sustained_rps) + " req/s" : "none")
              << "\n";
  if (!r.note.empty()) std::cout << "note: " << r.note << "\n";
}

nlohmann::json rate_search_json(const sim::RateSearch& r, const std::string& label) {
  nlohmann::json c = nlohmann::json::array();
  for (const sim::RatePoint& p : r.curve)
    c.push_back({{"rate_rps", p.rate_rps},         {"rate_scale", p.rate_scale},
                 {"ok", p.sim.ok},                 {"requests", p.sim.requests},
                 {"slo_fraction", p.sim.slo_fraction}, {"goodput_rps", p.sim.goodput_rps},
                 {"ttft_p99_s", p.sim.ttft_p99_s}, {"tpot_p99_s", p.sim.tpot_p99_s},
                 {"meets_slo", p.sim.meets_slo}});
  return {{"plan", label},
          {"base_rate_rps", r.base_rate_rps},
          {"sustained_rps", r.sustained_rps},
          {"missed_rps", r.missed_rps},
          {"requests_per_rate", r.requests},
          {"note", r.note},
          {"curve", c}};
}
#endif

void add_verify_options(CLI::App* sub, PlanArgs& a) {
#ifdef PARASOL_HAVE_SIM
  sub->add_option("--verify", a.verify,
                  "Simulate the estimator's best N candidates on the scenario's workload and choose by the simulation "
                  "(0: the estimator's pick)")
      ->check(in_range(0, 64, "a count in [0, 64]"));
  sub->add_option("--verify-requests", a.verify_requests, "Requests of the workload each verification simulates")
      ->check(in_range(1, 10000000, "a count in [1, 10^7]"));
#else
  (void)sub;
  (void)a;
#endif
}

// The pick: the best simulated of the verified candidates (--verify N, a build with the simulator), else the
// estimator's best.
class Pick {
 public:
  Pick(const PlanArgs& a, const spec::Scenario& s, const search::SearchInput& in, const search::SearchResult& r,
       uint64_t seed)
      : chosen_(&r.ranked.at(0)) {
#ifdef PARASOL_HAVE_SIM
    if (a.verify > 0) {
      v_ = sim::verify_candidates(s, in, r, a.verify, a.verify_requests, seed);
      if (v_->verified.at(0).ok) chosen_ = &v_->verified[0].candidate;
    }
#else
    (void)a, (void)s, (void)in, (void)seed;
#endif
  }
  const search::Candidate& chosen() const {
    return *chosen_;
  }
  void add_json(nlohmann::json& j) const {
#ifdef PARASOL_HAVE_SIM
    if (v_) j["verified"] = verified_json(*v_);
#else
    (void)j;
#endif
  }
  void print() const {
#ifdef PARASOL_HAVE_SIM
    if (v_) print_verified(*v_);
#endif
  }

 private:
  const search::Candidate* chosen_;
#ifdef PARASOL_HAVE_SIM
  std::optional<sim::Verification> v_;
#endif
};

#ifdef PARASOL_HAVE_SIM
// --objective max_rate: the rate search on `deployment`, printed (or JSON) and, with --out, written as plan.yaml,
// rate_curve.csv and rate_curve.svg.
int run_rate_search(const spec::Scenario& s, const search::SearchInput& in, const plan::Plan& deployment,
                    const std::string& label, const PlanArgs& a, const CommonOptions& common) {
  plan::check_plan_fits(deployment, a.plan.empty() ? s.file : a.plan, s.model, s.cluster, s.gpu_type, s.file);
  sim::RateSearchOptions o;
  o.requests = a.verify_requests;
  const sim::RateSearch r = sim::search_max_rate(s, deployment, in.load.rate_per_s, common.seed, o);
  if (!common.out_dir.empty()) {
    write_file_atomic(common.out_dir, "plan.yaml", plan::to_yaml(deployment));
    write_file_atomic(common.out_dir, "rate_curve.csv", sim::rate_curve_csv(r));
    write_file_atomic(common.out_dir, "rate_curve.svg",
                      sim::rate_curve_svg(r, s.slo, s.name + ": " + label + ", p99 latencies against the rate"));
    write_run_json(common.out_dir, "plan", a.plan.empty() ? std::vector<std::string>{s.file}
                                                          : std::vector<std::string>{s.file, a.plan},
                   common.seed);
  }
  if (common.json) {
    nlohmann::json j{{"scenario", s.name}, {"objective", "max_rate"}, {"max_rate", rate_search_json(r, label)}};
    if (!common.out_dir.empty()) j["files"] = {"plan.yaml", "rate_curve.csv", "rate_curve.svg"};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  if (common.verbosity == 0) return 0;
  print_rate_search(r, label);
  if (!common.out_dir.empty())
    std::cout << "wrote " << common.out_dir << "/plan.yaml, rate_curve.csv and rate_curve.svg\n";
  return 0;
}
#endif

void add_objective_options(CLI::App* sub, PlanArgs& a) {
  sub->add_option("--objective", a.objective,
                  "goodput_per_gpu (the best goodput per GPU in the budget), fewest_gpus (the fewest GPUs meeting the "
                  "SLOs at the workload's rate) or max_rate (the highest rate the chosen deployment sustains, in "
                  "simulation); default: the scenario's search.objective")
      ->check(CLI::IsMember({"goodput_per_gpu", "fewest_gpus", "max_rate"}));
#ifdef PARASOL_HAVE_SIM
  sub->add_option("--plan", a.plan, "With --objective max_rate: the deployment (a plan.yaml) whose rate to search");
#endif
}

int plan_main(PlanArgs& a, const CommonOptions& common) {
  spec::Scenario s = spec::load_scenario_file(resolve_data_path(a.scenario));
  if (!a.objective.empty()) s.search.objective = *spec::objective_named(a.objective);
  if (!a.plan.empty() && s.search.objective != spec::Objective::kMaxRate)
    throw ConfigError("--plan: expected --objective max_rate (the deployment whose rate to search), found the "
                      "objective " + spec::to_string(s.search.objective));
  activate_calibration(!a.calibration.empty() ? a.calibration : s.calibration.value_or(""), common.verbosity);
  std::string source;
  search::SearchInput in = search::scenario_search_input(s, common.seed, source);
#ifdef PARASOL_HAVE_SIM
  if (s.search.objective == spec::Objective::kMaxRate && !a.plan.empty())
    return run_rate_search(s, in, plan::load_plan_file(a.plan), "the plan " + a.plan, a, common);
#endif
  const int top = a.top > 0 ? a.top : s.search.top_n;
  // The rows printed (and in --json) and the candidates to verify; the frontier is kept whatever its ranks.
  in.keep_top = std::max(top, a.verify);
  const search::SearchResult r = search::search(in);
  if (r.ranked.empty())
    throw ConfigError(s.file, 0, 0, "search", "at least one feasible layout with a non-zero goodput",
                      "none (run with -v for the infeasible layouts and their reasons)");
  const Pick pick(a, s, in, r, common.seed);
  const search::Candidate* chosen = &pick.chosen();
  const plan::MadePlan made = search::candidate_plan(in, *chosen);
  if (!made.feasibility.ok)
    throw RuntimeFailure("plan: the chosen layout " + chosen->label() + " cannot be made");
#ifdef PARASOL_HAVE_SIM
  if (s.search.objective == spec::Objective::kMaxRate) {
    if (common.verbosity > 0 && !common.json) {
      print_table(s, r, source, top, common.verbosity);
      pick.print();
    }
    return run_rate_search(s, in, made.plan, "the chosen plan " + chosen->label(), a, common);
  }
#else
  if (s.search.objective == spec::Objective::kMaxRate)
    throw ConfigError("--objective max_rate: expected a build with the simulator (SimGrid), found none");
#endif
  // The frontier belongs to the goodput-per-GPU objective (every candidate filling the budget).
  const bool frontier = r.objective != spec::Objective::kFewestGpus;
  if (!common.out_dir.empty()) {
    write_file_atomic(common.out_dir, "plan.yaml", plan::to_yaml(made.plan));
    if (frontier) write_file_atomic(common.out_dir, "pareto.csv", search::pareto_csv(r));
    write_run_json(common.out_dir, "plan", {s.file}, common.seed);
  }
  if (common.json) {
    nlohmann::json j = search::to_json(r, top);
    j["scenario"] = s.name;
    j["load_source"] = source;
    j["chosen"] = chosen->label();
    pick.add_json(j);
    if (!common.out_dir.empty())
      j["files"] = frontier ? nlohmann::json{"plan.yaml", "pareto.csv"} : nlohmann::json{"plan.yaml"};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  if (common.verbosity == 0) return 0;
  print_table(s, r, source, top, common.verbosity);
  pick.print();
  if (!common.out_dir.empty())
    std::cout << "wrote " << common.out_dir << "/plan.yaml (" << chosen->label() << ")"
              << (frontier ? " and " + common.out_dir + "/pareto.csv" : std::string()) << "\n";
  else
    std::cout << (frontier ? "(--out DIR writes the chosen plan.yaml and the Pareto frontier pareto.csv)\n"
                           : "(--out DIR writes the chosen plan.yaml)\n");
  return 0;
}

}  // namespace

PARASOL_COMMAND("plan", 15, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* sub = app.add_subcommand("plan", "Search parallel layouts for a scenario, rank them, write the best plan");
  sub->add_option("scenario", args->scenario, "Scenario YAML (parasol.scenario/1)")->required();
  sub->add_option("--top", args->top, "How many ranked layouts to print (default: the scenario's search.top_n)")
      ->check(in_range(1, 100000, "a count in [1, 100000]"));
  add_verify_options(sub, *args);
  add_objective_options(sub, *args);
  sub->add_option("--calibration", args->calibration,
                  "Measured tables used where they cover an op (CSV, folder, AIConfigurator GPU folder; overrides the "
                  "scenario's calibration:)");
  add_common_options(sub, common);
  sub->footer(
      "Writes DIR/plan.yaml (the chosen plan, for `parasol sim --plan` / `parasol exec --plan`) and DIR/pareto.csv "
      "(goodput tokens/s/GPU vs tokens/s/user) when --out DIR is given. Example:\n"
      "  parasol plan scenarios/llama70b-chat-dgx.yaml --top 5 --out out/llama70b");
  return [args, &common]() -> int { return plan_main(*args, common); };
});

}  // namespace parasol::tools

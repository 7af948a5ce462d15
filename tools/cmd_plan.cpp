// `parasol plan SCENARIO [--top N] [--out DIR] [--json] [-v]`: search every layout of the scenario's model on its
// cluster under its workload and SLOs (core/plan/search.hpp), print the ranking (why each runner-up lost), and write
// the chosen Plan (plan.yaml, parasol.plan/1) and the Pareto frontier (pareto.csv) to DIR. docs/search.md.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/plan/plan_io.hpp"
#include "core/plan/planning_load.hpp"
#include "core/plan/search.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/scenario.hpp"
#include "tools/calibration_option.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {
namespace {

void print_table(const spec::Scenario& s, const plan::SearchResult& r, const std::string& source, int top,
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
  std::cout << "\nobjective: meets the SLOs at this load, then goodput (output tokens/s per GPU at the largest load "
               "meeting the SLOs), then tokens/s per user\n\n";
  std::printf("%4s  %-52s %5s %10s %12s %10s %10s %10s  %s\n", "rank", "layout", "GPUs", "goodput", "tok/s/GPU",
              "tok/s/user", "TTFT p99", "TPOT p99", "verdict");
  std::printf("%4s  %-52s %5s %10s %12s %10s %10s %10s\n", "", "", "", "req/s", "(goodput)", "", "at load", "at load");
  for (size_t i = 0; i < r.ranked.size() && static_cast<int>(i) < top; ++i) {
    const auto& c = r.ranked[i];
    const std::string verdict = i == 0 ? (c.meets_slo ? "chosen" : "chosen (misses the SLOs: " + c.violation + ")")
                                       : "lost: " + plan::why_lost(c, r.ranked[0]);
    std::printf("%4zu  %-52s %5d %10.4g %12.5g %10.4g %10s %10s  %s\n", i + 1, c.label().c_str(), c.gpus, c.goodput_rps,
                c.goodput_tok_s_per_gpu, c.tok_s_per_user, c.ttft_p99_s > 0 ? format_time(c.ttft_p99_s).c_str() : "-",
                c.tpot_p99_s > 0 ? format_time(c.tpot_p99_s).c_str() : "-", verdict.c_str());
  }
  std::cout << "\n"
            << r.stats.layouts << " layouts (" << r.stats.feasible_layouts << " feasible, " << r.infeasible.size()
            << " infeasible" << (verbosity >= 2 ? "" : ", -v lists them") << "), " << r.stats.candidates
            << " candidates, " << r.ranked_total << " ranked, " << r.pareto.size() << " on the Pareto frontier; "
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
  int top = 0;
};

}  // namespace

PARASOL_COMMAND("plan", 15, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* sub = app.add_subcommand("plan", "Search parallel layouts for a scenario, rank them, write the best plan");
  sub->add_option("scenario", args->scenario, "Scenario YAML (parasol.scenario/1)")->required();
  sub->add_option("--top", args->top, "How many ranked layouts to print (default: the scenario's search.top_n)")
      ->check(in_range(1, 100000, "a count in [1, 100000]"));
  sub->add_option("--calibration", args->calibration,
                  "Measured tables used where they cover an op (CSV, folder, AIConfigurator GPU folder; overrides the "
                  "scenario's calibration:)");
  add_common_options(sub, common);
  sub->footer(
      "Writes DIR/plan.yaml (the chosen plan, for `parasol sim --plan` / `parasol exec --plan`) and DIR/pareto.csv "
      "(goodput tokens/s/GPU vs tokens/s/user) when --out DIR is given. Example:\n"
      "  parasol plan scenarios/llama70b-chat-dgx.yaml --top 5 --out out/llama70b");
  return [args, &common]() -> int {
    const spec::Scenario s = spec::load_scenario_file(resolve_data_path(args->scenario));
    activate_calibration(!args->calibration.empty() ? args->calibration : s.calibration.value_or(""), common.verbosity);
    std::string source;
    plan::SearchInput in = plan::scenario_search_input(s, common.seed, source);
    const int top = args->top > 0 ? args->top : s.search.top_n;
    in.keep_top = top;  // the rows printed (and in --json); the frontier is kept whatever its ranks
    const plan::SearchResult r = plan::search(in);
    if (r.ranked.empty())
      throw ConfigError(s.file, 0, 0, "search", "at least one feasible layout with a non-zero goodput",
                        "none (run with -v for the infeasible layouts and their reasons)");
    const plan::MadePlan made = plan::candidate_plan(in, r.ranked[0]);
    if (!made.feasibility.ok)
      throw RuntimeFailure("plan: the chosen layout " + r.ranked[0].label() + " cannot be made");
    if (!common.out_dir.empty()) {
      write_file_atomic(common.out_dir, "plan.yaml", plan::to_yaml(made.plan));
      write_file_atomic(common.out_dir, "pareto.csv", plan::pareto_csv(r));
      write_run_json(common.out_dir, "plan", {s.file}, common.seed);
    }
    if (common.json) {
      nlohmann::json j = plan::to_json(r, top);
      j["scenario"] = s.name;
      j["load_source"] = source;
      j["chosen"] = r.ranked[0].label();
      if (!common.out_dir.empty()) j["files"] = {"plan.yaml", "pareto.csv"};
      std::cout << j.dump(2) << "\n";
      return 0;
    }
    if (common.verbosity == 0) return 0;
    print_table(s, r, source, top, common.verbosity);
    if (!common.out_dir.empty())
      std::cout << "wrote " << common.out_dir << "/plan.yaml (" << r.ranked[0].label() << ") and " << common.out_dir
                << "/pareto.csv\n";
    else
      std::cout << "(--out DIR writes the chosen plan.yaml and the Pareto frontier pareto.csv)\n";
    return 0;
  };
});

}  // namespace parasol::tools

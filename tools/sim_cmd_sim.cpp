// `parasol sim [SCENARIO]`: serve a scenario's workload with a Plan on the simulated cluster (sim/serving.hpp) and
// report the metrics (core/serve MetricsCollector): a human summary, or JSON with --json; with --out DIR the files
// summary.json, requests.csv, trace.json (Chrome/Perfetto) and links.csv (bytes and mean utilization per link
// direction). With no SCENARIO it runs the embedded default (scenarios/default.yaml compiled in). A progress line on
// stderr when it is a terminal. Output files are byte-identical for the same inputs and seed.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/error.hpp"
#include "core/common/hash.hpp"
#include "core/common/units.hpp"
#include "core/plan/placement.hpp"
#include "core/plan/plan_io.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
#include "core/serve/scheduler.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/scenario.hpp"
#include "sim/collectives.hpp"
#include "sim/default_scenario.hpp"
#include "sim/plan_choice.hpp"
#include "sim/serving.hpp"
#include "tools/calibration_option.hpp"
#include "tools/cli.hpp"
#include "tools/serving_outputs.hpp"
#include "tools/signals.hpp"
#include "tools/version.hpp"

namespace parasol::tools {
namespace {

// A synthetic workload with neither a cap nor a window end, and no simulated duration either: serve this many.
constexpr int64_t kDefaultSyntheticCap = 10000;

struct SimArgs {
  std::string scenario;
  std::string plan;
  std::string trace;
  std::string trace_format = "azure";
  std::string fidelity;
  std::string router;  // --router: overrides the scenario's serving.router policy
  std::string algo = "auto";
  std::string policy;
  std::string calibration;  // --calibration; else the scenario's `calibration:`
  int64_t requests = -1;
  int trace_replicas = 8;  // replicas whose iterations trace.json shows (0: all)
  int verify = 0;          // no plan given: simulate the search's best N and take the best simulated
  int64_t verify_requests = 2000;
  bool timing = false;
};

// Process CPU seconds (user + system) and peak RSS, for --timing (stderr only: never in an output file).
struct Usage {
  double cpu_s = 0;
  double max_rss_mb = 0;
};
Usage usage() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  Usage u;
  u.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            1e-6 * static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  u.max_rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;
  return u;
}
double wall_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string plan_label(const plan::Plan& p) {
  std::string out;
  for (const auto& pool : p.pools) out += (out.empty() ? "" : " + ") + pool.role + " " + pool.config.label();
  return out;
}

// The plan to simulate and one line saying where it came from: --plan, the scenario's `plan:`, or the search.
struct ChosenPlan {
  plan::Plan plan;
  std::string line;
};

ChosenPlan resolve_plan(const spec::Scenario& sc, const SimArgs& a, uint64_t seed) {
  const std::string scenario_file = sc.file.empty() ? "default (embedded)" : sc.file;
  if (!a.plan.empty()) {
    plan::Plan p = plan::load_plan_file(a.plan);
    plan::check_plan_fits(p, a.plan, sc.model, sc.cluster, sc.gpu_type, scenario_file);
    return {p, "plan " + plan_label(p) + ": from --plan " + a.plan};
  }
  if (sc.plan_path) {
    plan::Plan p = plan::load_plan_file(*sc.plan_path);
    plan::check_plan_fits(p, *sc.plan_path, sc.model, sc.cluster, sc.gpu_type, scenario_file);
    return {p, "plan " + plan_label(p) + ": from the scenario's plan: " + *sc.plan_path};
  }
  sim::PlanChoice c = sim::choose_plan(sc, seed, a.verify, a.verify_requests);
  return {std::move(c.plan), "plan " + c.label + ": chosen by the search (no --plan), " + c.why};
}

int run(const SimArgs& a, const CommonOptions& common) {
  const double wall0 = wall_s();
  const Usage use0 = usage();
  spec::Scenario sc;
  serve::RunInfo run_info;
  run_info.command = "sim";
  run_info.parasol_version = build_version();
  run_info.commit = build_commit();
  run_info.seed = common.seed;
  if (a.scenario.empty()) {
    const std::string text = sim::default_scenario_yaml();
    if (text.empty()) throw ConfigError("no SCENARIO given and this build has no embedded default scenario");
    // Named after the file it was compiled from, so its relative model/cluster references resolve from any directory.
    sc = spec::load_scenario(yaml::load_string(text, std::string(PARASOL_DATA_DIR) + "/scenarios/default.yaml"));
    run_info.scenario = "default (embedded)";
    run_info.scenario_hash = hex64(fnv1a64(text));
  } else {
    const std::string path = resolve_data_path(a.scenario);
    sc = spec::load_scenario_file(path);
    run_info.scenario = path;
    run_info.scenario_hash = file_hash(path);
  }
  activate_calibration(!a.calibration.empty() ? a.calibration : sc.calibration.value_or(""), common.verbosity);
  // The workload before the plan: an absent trace is an error before any search runs.
  serve::WorkloadSpec ws;
  std::string workload_note;
  if (!a.trace.empty()) {
    ws.kind = serve::WorkloadSpec::Kind::kTrace;
    ws.trace.path = a.trace;
    ws.trace.format = serve::parse_trace_format(a.trace_format);
  } else if (auto w = sim::scenario_workload(sc, workload_note)) {
    ws = *w;
  } else {
    throw ConfigError(sc.file, 0, 0, "workload", "a workload section (or --trace FILE)", "none");
  }
  // A substituted workload changes every figure: said on stderr whatever -q or --json, and in the summary.
  if (!workload_note.empty()) std::cerr << "parasol: warning: workload: " << workload_note << "\n";
  const ChosenPlan chosen = resolve_plan(sc, a, common.seed);
  const plan::Plan& plan = chosen.plan;
  if (a.requests >= 0) ws.max_requests = a.requests;
  if (ws.kind == serve::WorkloadSpec::Kind::kSynthetic && ws.max_requests < 0 && ws.window_end_s >= 1e300) {
    if (sc.sim.duration_s)
      ws.window_end_s = *sc.sim.duration_s;
    else
      ws.max_requests = kDefaultSyntheticCap;
  }
  int64_t expected_requests = -1;
  auto source = serve::make_source(ws, common.seed, &expected_requests);

  // The scenario's engine (default vllm), serving knobs and router; the command line over them.
  sim::ServeOptions o = sim::serve_options(sc, plan, common.seed);
  o.fidelity = sc.sim.fidelity;
  if (!a.fidelity.empty()) {
    if (a.fidelity != "analytic" && a.fidelity != "network")
      throw ConfigError("", 0, 0, "--fidelity", "analytic or network", a.fidelity);
    o.fidelity = a.fidelity == "network" ? spec::Fidelity::kNetwork : spec::Fidelity::kAnalytic;
  }
  if (!a.router.empty()) o.router.policy = serve::parse_router_policy(a.router);
  if (!a.policy.empty() && a.policy != "prefill_first" && a.policy != "chunked")
    throw ConfigError("", 0, 0, "--policy", "prefill_first or chunked", a.policy);
  if (!a.policy.empty())
    for (serve::SchedulerConfig& c : o.schedulers)
      c.policy = a.policy == "prefill_first" ? serve::BatchPolicy::kPrefillFirst : serve::BatchPolicy::kChunked;
  o.algo = sim::parse_algo(a.algo);
  if (sc.faults.any()) o.faults = sim::fault_policy(sc.faults, plan, sc.file);
  if (sc.sim.duration_s) o.duration_s = *sc.sim.duration_s;
  if (sc.sim.max_requests) o.max_requests = *sc.sim.max_requests;
  // Progress on stderr (never in an output file): on a terminal one line rewritten at most 5 times a second, in a log a
  // line every 10 s; the fraction done is the larger of requests done / expected and simulated time / duration, when
  // either is known, with an ETA from the wall time so far. -q and --json silence it.
  const bool tty = common.verbosity > 0 && !common.json && ::isatty(2);
  if (common.verbosity > 0 && !common.json) {
    if (o.max_requests >= 0 && (expected_requests < 0 || o.max_requests < expected_requests))
      expected_requests = o.max_requests;
    auto state = std::make_shared<std::pair<double, double>>(wall_s(), 0.0);  // start, last print
    const double duration_s = o.duration_s;
    o.progress_every = 1000;
    o.progress = [state, tty, duration_s, total = expected_requests](double now_s, int64_t done) {
      const double wall = wall_s(), elapsed = wall - state->first;
      if (wall - state->second < (tty ? 0.2 : 10.0)) return;
      state->second = wall;
      double f = -1;
      if (total > 0) f = static_cast<double>(done) / static_cast<double>(total);
      if (std::isfinite(duration_s) && duration_s > 0) f = std::max(f, now_s / duration_s);
      f = std::min(f, 1.0);
      std::string line = "[sim] ";
      if (f > 0) line += format_number("%.0f", 100 * f) + "%, ";
      line += std::to_string(done) + (total > 0 ? " / " + std::to_string(total) : std::string()) +
              " requests done, simulated " + format_time(now_s);
      if (f > 0.001) line += ", ETA " + format_time(elapsed * (1 - f) / f);
      std::fprintf(stderr, tty ? "\r%s\033[K" : "%s\n", line.c_str());
      std::fflush(stderr);
    };
  }

  serve::MetricsConfig mc;
  int replicas = 0;
  for (const auto& p : plan.pools) replicas += static_cast<int>(p.placement.size());
  mc.replicas = replicas;
  mc.gpus_per_replica = plan.pools[0].config.instance_size();
  if (auto it = sc.cluster.gpu_types.find(plan.gpu_type); it != sc.cluster.gpu_types.end()) {
    mc.peak_flops_per_gpu = it->second.peak(plan.weight_dtype);
    mc.peak_bw_per_gpu = it->second.hbm_bw_Bps;
  }
  mc.trace_replicas = a.trace_replicas;
  // From here the first SIGINT/SIGTERM stops the arrivals and the run ends with a partial summary (signals.hpp).
  auto graceful = std::make_unique<GracefulSection>();
  ServingOutputs outputs(common.out_dir, mc, sc);
  serve::MetricsCollector& metrics = outputs.metrics();
  const double wall1 = wall_s();
  const Usage use1 = usage();
  o.stop = &stop_flag();
  const sim::ServeResult res = sim::simulate_serving(plan, sc.cluster, *source, metrics, o);
  graceful.reset();  // a signal while the files are written stops at once and leaves none
  metrics.add_trace_events(res.flow_trace_events);
  serve::Summary sum = metrics.finish(res.end_s);
  run_info.plan = plan_label(plan);
  run_info.plan_source = !a.plan.empty() ? "--plan " + a.plan : sc.plan_path ? "scenario plan: " + *sc.plan_path : "search";
  run_info.replicas = replicas;
  run_info.gpus = 0;
  for (const auto& p : plan.pools)
    run_info.gpus += static_cast<int64_t>(p.placement.size()) * p.config.instance_size();
  run_info.engine = sc.engine.name;
  run_info.fidelity = o.fidelity == spec::Fidelity::kNetwork ? "network" : "analytic";
  run_info.workload = source->describe();
  for (size_t p = 0; p < o.schedulers.size(); ++p)
    run_info.serving += (p ? "; " : "") + (plan.disaggregated() ? plan.pools[p].role + ": " : std::string()) +
                        serve::describe(o.schedulers[p]);
  run_info.serving += "; router " + std::string(serve::to_string(o.router.policy));
  sum.run = run_info;
  if (!workload_note.empty()) sum.notes.push_back("workload: " + workload_note);
  if (res.stopped_by)
    sum.notes.push_back("partial: " + signal_name(res.stopped_by) + " at simulated " + format_time(res.stopped_at_s) +
                        " stopped the arrivals; the " + std::to_string(res.requests) +
                        " requests that had arrived ran to their end, the rest of the workload was not simulated");
  if (a.timing) {
    const double wall2 = wall_s();
    const Usage use2 = usage();
    // One line, key=value, for scripts/bench-sim.sh. Wall-clock figures go to stderr only, never into output files.
    std::fprintf(stderr,
                 "timing: setup_wall_s=%.4f setup_cpu_s=%.4f sim_wall_s=%.4f sim_cpu_s=%.4f steps=%lld "
                 "steps_per_cpu_s=%.0f requests=%lld replicas=%d gpus=%d sim_time_s=%.3f memo_hits=%lld "
                 "memo_misses=%lld max_rss_mb=%.1f\n",
                 wall1 - wall0, use1.cpu_s - use0.cpu_s, wall2 - wall1, use2.cpu_s - use1.cpu_s,
                 static_cast<long long>(res.iterations),
                 use2.cpu_s > use1.cpu_s ? static_cast<double>(res.iterations) / (use2.cpu_s - use1.cpu_s) : 0.0,
                 static_cast<long long>(res.requests), res.replicas,
                 res.replicas * plan.pools[0].config.instance_size(), res.end_s,
                 static_cast<long long>(res.memo_hits), static_cast<long long>(res.memo_misses), use2.max_rss_mb);
  }
  if (tty) std::fprintf(stderr, "\n");
  const int rc = res.stopped_by ? 128 + res.stopped_by : 0;

  // The summary first (a failure to write the files below cannot lose it), then every file staged and only then
  // renamed into place: an I/O error (named with its errno) leaves none of them, half-written or not.
  std::ostringstream js;
  serve::MetricsCollector::write_summary_json(sum, js);
  if (common.json) {
    std::cout << js.str() << "\n";
  } else if (common.verbosity > 0) {
    std::cout << chosen.line << "\n";
    std::cout << "scenario " << (sc.name.empty() ? sc.file : sc.name) << ": " << sc.model.name << " on "
              << sc.cluster.name << ", " << replicas << " replica(s), fidelity "
              << (o.fidelity == spec::Fidelity::kNetwork ? "network" : "analytic") << ", " << source->describe()
              << "\n";
    std::cout << "serving " << sum.run.serving << "\n";
    std::cout << serve::MetricsCollector::summary_text(sum);
    std::cout << "simulated " << format_time(res.end_s) << ": " << res.iterations << " iterations, " << res.flows
              << " flows, " << res.kv_transfers << " KV transfers\n";
    if (o.faults.any())
      std::cout << "faults    " << res.failures << " replica failures; " << res.retried << " requests sent again, "
                << res.failed_requests << " failed by them; " << res.lost_prefill_tokens
                << " prefill tokens lost with the failed replicas\n";
  }
  std::cout.flush();
  if (!common.out_dir.empty()) {
    std::ostream& links = outputs.extra("links.csv");
    links << "link,bw_Bps,bytes,mean_utilization\n";
    for (const auto& l : res.links)
      links << l.name << "," << serve::format_number(l.bw_Bps) << "," << serve::format_number(l.bytes) << ","
            << serve::format_number(res.end_s > 0 ? l.bytes / (l.bw_Bps * res.end_s) : 0) << "\n";
    outputs.extra("link_usage.csv") << res.link_usage_csv;
    std::vector<std::string> inputs;
    if (!a.scenario.empty()) inputs.push_back(run_info.scenario);
    if (!a.plan.empty()) inputs.push_back(a.plan);
    if (!a.trace.empty()) inputs.push_back(a.trace);
    outputs.commit(js.str(), "sim", inputs, common.seed);
    if (!common.json && common.verbosity > 0)
      std::cout << "wrote " << common.out_dir << "/{summary.json,requests.csv,trace.json,links.csv,link_usage.csv}\n";
  }
  return rc;
}

}  // namespace

PARASOL_COMMAND("sim", 20, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto a = std::make_shared<SimArgs>();
  auto* sub = app.add_subcommand("sim", "Simulate serving a scenario (SimGrid): latency, throughput, utilization");
  sub->add_option("SCENARIO", a->scenario, "Scenario file (parasol.scenario/1); default: the embedded default");
  sub->add_option("--plan", a->plan, "Plan file (parasol.plan/1) from `parasol plan`");
  sub->add_option("--trace", a->trace, "Replay this trace instead of the scenario's workload");
  sub->add_option("--trace-format", a->trace_format, "azure | mooncake | burstgpt | parasol (default azure)");
  sub->add_option("--fidelity", a->fidelity, "analytic (cost model) or network (collectives as flows)");
  sub->add_option("--router", a->router,
                  "Router policy (overrides serving.router): round_robin | least_outstanding_tokens | "
                  "least_outstanding_requests | power_of_two | prefix_aware | session_affinity (docs/routing.md)");
  sub->add_option("--algo", a->algo, "Network mode: force a collective algorithm (auto, ring, tree, nvls, ...)");
  sub->add_option("--requests", a->requests, "Serve at most this many requests")->check(non_negative_count());
  sub->add_option("--calibration", a->calibration,
                  "Measured tables used where they cover an op (CSV, folder, AIConfigurator GPU folder; overrides the "
                  "scenario's calibration:)");
  sub->add_option("--verify", a->verify,
                  "Without a plan: simulate the search's best N candidates and take the best simulated (0: the "
                  "estimator's pick)")
      ->check(in_range(0, 64, "a count in [0, 64]"));
  sub->add_option("--verify-requests", a->verify_requests, "Requests of the workload each verification simulates")
      ->check(in_range(1, 10000000, "a count in [1, 10^7]"));
  sub->add_option("--trace-replicas", a->trace_replicas,
                  "Replicas whose iterations trace.json shows, the first N (default 8; 0: all, up to the 200,000-step "
                  "cap)")
      ->check(non_negative_count());
  sub->add_flag("--timing", a->timing,
                "Print setup / simulation wall and CPU time, steps/s and peak RSS to stderr (benchmarks)");
  sub->add_option("--policy", a->policy,
                  "Batching: prefill_first (vLLM v0-like) or chunked (Sarathi-like chunked prefill; the default)");
  add_common_options(sub, common);
  sub->footer("Example: parasol sim scenarios/default.yaml --out /tmp/run --seed 7");
  return [a, &common] { return run(*a, common); };
});

}  // namespace parasol::tools

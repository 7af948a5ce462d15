// `parasol exec`: run a model for real on the executor (exec/).
//   Generation mode:  parasol exec --model builtin:test-mixtral --layout tp2.pp1.ep2.adp1.dp1 [--comm local|mpi]
//                     [--weights synthetic|CHECKPOINT_DIR] [--prompts N] [--decode N] [--logits-out FILE]
//     greedy generation over synthetic prompts; every rank of the instance runs as a thread (local) or as an MPI
//     process (mpirun -np <instance size> parasol exec ... --comm mpi). --logits-out writes tokens and logits (JSON)
//     from rank 0, for comparing layouts.
//   Serving mode:     parasol exec --plan PLAN.yaml --workload SCENARIO.yaml [--comm local|mpi] [--backend cpu]
//                     [--out DIR] [--profile FILE.csv]
//     serves the scenario's workload with the plan's layout through core/serve on a wall clock, writing the files of
//     `parasol sim` (summary.json, requests.csv, trace.json) and per-op times in the calibration CSV format.
// A failed or stalled peer ends the run within --timeout seconds with an error naming the rank and the op (mpi: the
// whole job is aborted). --fault-stall-rank / --fault-exit-rank inject such failures for tests.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/plan/parallel_config.hpp"
#include "core/plan/plan_io.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
#include "core/serve/scheduler.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/model.hpp"
#include "core/spec/scenario.hpp"
#include "exec/generate.hpp"
#include "exec/plugin.hpp"
#include "exec/serving.hpp"
#include "exec/test_models.hpp"
#include "tools/cli.hpp"
#include "tools/serving_outputs.hpp"
#include "tools/version.hpp"

namespace parasol::tools {
namespace {

struct ExecOptions {
  std::string plan_path, model, layout = "tp1.pp1.ep1.adp1.dp1", comm = "local", backend = "cpu";
  std::string weights = "synthetic", weight_dtype = "fp32", logits_out, workload, profile_out, profile_gpu;
  int64_t requests = -1;
  int prompts = 4, decode = 8;
  int64_t prompt_min = 8, prompt_max = 16, kv_blocks = 512, prefill_chunk = 0;
  double timeout_s = 60.0;
  int stall_rank = -1, exit_rank = -1;
  double stall_s = 3600.0;
};

spec::Model load_exec_model(const std::string& m) {
  if (m.rfind("builtin:", 0) == 0) return exec::test_model(m.substr(8));
  return spec::load_model_file(resolve_data_path(m));
}

std::string source_description(const serve::WorkloadSpec& ws, uint64_t seed) {
  return serve::make_source(ws, seed)->describe();
}

std::unique_ptr<exec::WeightSource> make_weights(const std::string& w, uint64_t seed) {
  if (w == "synthetic") return std::make_unique<exec::SyntheticWeights>(seed);
  return std::make_unique<exec::SafetensorsCheckpoint>(w);
}

nlohmann::json result_json(const exec::GenerateResult& r) {
  nlohmann::json j;
  j["tokens"] = r.tokens;
  j["last_logits"] = r.last_logits;
  j["prompt_logits"] = r.prompt_logits;
  j["steps"] = r.steps;
  return j;
}

// One rank's whole run. Returns the rank's result.
exec::GenerateResult run_rank(const ExecOptions& o, const spec::Model& m, const plan::ParallelConfig& cfg, int rank,
                              exec::Communicator& comm, const exec::WeightSource& weights, uint64_t seed) {
  auto be = exec::make_backend(o.backend, {0, 1});
  exec::RankLayout layout = exec::RankLayout::make(m, cfg, {}, rank);
  exec::RunnerOptions ro;
  ro.weight_type = exec::elem_type(*parse_dtype(o.weight_dtype));
  ro.kv_blocks = o.kv_blocks;
  ro.all_logits = !o.logits_out.empty();
  exec::ModelRunner runner(m, layout, *be, comm, weights, ro);
  if (rank == o.stall_rank) std::this_thread::sleep_for(std::chrono::duration<double>(o.stall_s));
  if (rank == o.exit_rank) std::_Exit(3);
  exec::GenerateSpec spec;
  spec.prompts = exec::synthetic_prompts(o.prompts, o.prompt_min, o.prompt_max, m.vocab, seed);
  spec.decode_steps = o.decode;
  spec.prefill_chunk = o.prefill_chunk;
  spec.prompt_logits = ro.all_logits;
  return exec::generate(runner, comm, spec, m.vocab);
}

// Runs `body(rank, comm)` for every rank of an instance of `n` ranks: as threads (--comm local), or as this process's
// rank of an MPI world of exactly n processes (--comm mpi, under mpirun -np n). `prepare_root` runs once, before rank 0's
// body, on the process that reports. A communication failure under MPI aborts the whole job (exec::mpi_abort); the
// error names the rank and the op. Returns whether this process is the one that reports (rank 0).
// `what` names the layout for the error when the MPI world's size is not n: {file, key, the layout as given}.
struct LayoutSource {
  std::string file, key, found;
};
bool run_instance(const ExecOptions& o, int n, const LayoutSource& what, const std::function<void()>& prepare_root,
                  const std::function<void(int, exec::Communicator&)>& body) {
  if (o.comm == "local") {
    prepare_root();
    exec::run_local(n, o.timeout_s, body);
    return true;
  }
  if (o.comm != "mpi") throw ConfigError("", 0, 0, "--comm", "local or mpi", "'" + o.comm + "'");
#ifdef PARASOL_HAVE_MPI
  auto world = exec::make_mpi_world(o.timeout_s);
  if (world->size() != n)
    throw ConfigError(what.file, 0, 0, what.key,
                      "an instance of " + std::to_string(world->size()) + " ranks (mpirun -np)",
                      what.found + " (" + std::to_string(n) + " ranks)");
  const bool is_root = world->rank() == 0;
  try {
    if (is_root) prepare_root();
    body(world->rank(), *world);
    world->barrier("exec.end");
  } catch (const exec::CommError& e) {
    std::cerr << "parasol: failed: " << e.what() << "\n" << std::flush;
    exec::mpi_abort(1);
  }
  return is_root;
#else
  (void)what;
  (void)body;
  throw ConfigError("", 0, 0, "--comm", "local (this build has no MPI)", "mpi");
#endif
}

// Serving mode: rank 0 drives core/serve on a wall clock (exec/serving.hpp), every rank runs its share of each step.
int run_exec_serve(const ExecOptions& o, const CommonOptions& common) {
  const plan::Plan plan = plan::load_plan_file(resolve_data_path(o.plan_path));
  if (plan.model.sliding_window > 0)
    throw ConfigError(o.plan_path, 0, 0, "model.sliding_window",
                      "a model with full attention (the executor's attention kernels have no sliding window)",
                      std::to_string(plan.model.sliding_window));
  const plan::ParallelConfig& cfg = plan.pools[0].config;
  if (o.workload.empty())
    throw ConfigError("", 0, 0, "--workload", "a scenario file with a workload section (--plan needs one)", "none");
  const spec::Scenario sc = spec::load_scenario_file(resolve_data_path(o.workload));
  if (!sc.workload) throw ConfigError(sc.file, 0, 0, "workload", "a workload section", "none");
  serve::WorkloadSpec ws = serve::load_workload(*sc.workload);
  if (o.requests >= 0) ws.max_requests = o.requests;

  // One configuration per pool: the scenario's serving knobs over the pool's limits.
  std::vector<exec::ServeConfig> configs;
  int world = 0, instances = 0;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    const serve::SchedulerConfig knobs = serve::scheduler_config(plan, static_cast<int>(p), sc);
    exec::ServeConfig c = exec::make_serve_config(plan, static_cast<int>(p), o.kv_blocks, &knobs);
    c.backend = o.backend;
    c.runner.profile = !o.profile_out.empty();
    c.profile_gpu = o.profile_gpu.empty() ? o.backend : o.profile_gpu;
    c.seed = common.seed;
    c.router = serve::router_config(sc, common.seed);  // how requests reach the instances
    configs.push_back(std::move(c));
    const int dp = std::max(1, plan.pools[p].config.dp);
    world += plan.pools[p].config.instance_size() * dp;
    instances += dp;
  }
  const exec::ServeConfig& sc_cfg = configs[0];
  auto weights = make_weights(o.weights, common.seed);
  const int n = cfg.instance_size();
  if (!o.profile_out.empty() && instances > 1)
    throw ConfigError(o.plan_path, 0, 0, "--profile", "a plan with one instance (profile one instance)",
                      std::to_string(instances) + " instances");

  // Rank 0's outputs: metrics (with the streamed per-request CSV and trace) and the profile.
  std::unique_ptr<ServingOutputs> outputs;
  std::unique_ptr<serve::RequestSource> source;
  auto open_outputs = [&] {
    serve::MetricsConfig mc;
    mc.replicas = instances;
    mc.gpus_per_replica = n;
    outputs = std::make_unique<ServingOutputs>(common.out_dir, mc, sc);
    source = serve::make_source(ws, common.seed);
  };

  exec::ServeResult result;
  std::string layouts;
  for (const auto& pool : plan.pools) layouts += (layouts.empty() ? "" : " + ") + pool.role + " " + pool.config.label();
  const LayoutSource what{o.plan_path, "pools", layouts};
  const bool is_root = run_instance(o, world, what, open_outputs, [&](int rank, exec::Communicator& comm) {
    exec::ServeResult r = exec::serve_rank(plan, *weights, comm, configs, rank == 0 ? source.get() : nullptr,
                                           rank == 0 ? &outputs->metrics() : nullptr);
    if (rank == 0) result = std::move(r);
  });
  if (!is_root) return 0;

  serve::Summary sum = outputs->metrics().finish(result.end_s);
  sum.run.command = "exec";
  sum.run.parasol_version = build_version();
  sum.run.commit = build_commit();
  sum.run.scenario = resolve_data_path(o.workload);
  sum.run.scenario_hash = file_hash(sum.run.scenario);
  sum.run.plan = layouts;
  sum.run.plan_source = "--plan " + o.plan_path;
  sum.run.replicas = instances;
  sum.run.gpus = world;
  sum.run.engine = "parasol exec";
  sum.run.fidelity = "executed";
  sum.run.serving = serve::describe(sc_cfg.scheduler);
  sum.run.seed = common.seed;
  std::ostringstream js;
  serve::MetricsCollector::write_summary_json(sum, js);
  outputs->commit(js.str(), "exec", {resolve_data_path(o.plan_path), sum.run.scenario}, common.seed);
  if (!o.profile_out.empty()) {
    std::ofstream out(o.profile_out);
    out << result.profile_csv;
    if (!out) throw RuntimeFailure("writing " + o.profile_out + " failed");
  }
  if (common.json) {
    serve::MetricsCollector::write_summary_json(sum, std::cout);
    std::cout << "\n";
    return 0;
  }
  if (common.verbosity == 0) return 0;
  std::cout << "exec: " << plan.model.name << " " << layouts << " on " << world << " " << o.comm << " rank(s) ("
            << o.backend << "), " << source_description(ws, common.seed) << "\n";
  std::cout << serve::MetricsCollector::summary_text(sum);
  std::cout << "served in " << format_time(result.end_s) << ": " << result.iterations << " iterations, "
            << result.generated_tokens << " tokens sampled";
  if (plan.disaggregated()) std::cout << ", " << result.kv_transfers << " KV transfers";
  std::cout << "\n";
  if (!common.out_dir.empty()) std::cout << "wrote " << common.out_dir << "/{summary.json,requests.csv,trace.json}\n";
  if (!o.profile_out.empty()) std::cout << "wrote " << o.profile_out << " (per-op times, calibration CSV)\n";
  return 0;
}

int run_generation(const ExecOptions& o, const CommonOptions& common) {
  spec::Model m = load_exec_model(o.model);
  if (m.sliding_window > 0)
    throw ConfigError(o.model, 0, 0, "sliding_window",
                      "a model with full attention (the executor's attention kernels have no sliding window)",
                      std::to_string(m.sliding_window));
  auto cfg = plan::ParallelConfig::parse_label(o.layout);
  if (!cfg) throw ConfigError("", 0, 0, "--layout", "a label like tp2.pp1.ep1.adp1.dp1", "'" + o.layout + "'");
  if (cfg->dp != 1) throw ConfigError("", 0, 0, "--layout", "dp1 (generation mode runs one instance)", o.layout);
  if (!parse_dtype(o.weight_dtype)) throw ConfigError("", 0, 0, "--weight-dtype", "fp32, bf16 or fp16", o.weight_dtype);
  auto weights = make_weights(o.weights, common.seed);
  const int n = cfg->instance_size();
  exec::GenerateResult result;
  auto start = std::chrono::steady_clock::now();
  std::mutex mu;
  const LayoutSource what{"", "--layout", o.layout};
  const bool is_root = run_instance(o, n, what, [] {}, [&](int rank, exec::Communicator& comm) {
    exec::GenerateResult r = run_rank(o, m, *cfg, rank, comm, *weights, common.seed);
    std::lock_guard<std::mutex> lk(mu);
    if (rank == 0) result = std::move(r);
  });
  double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!is_root) return 0;
  if (!o.logits_out.empty()) {
    std::ofstream out(o.logits_out);
    out << result_json(result).dump() << "\n";
    if (!out) throw RuntimeFailure("writing " + o.logits_out + " failed");
  }
  int64_t generated = 0;
  for (const auto& t : result.tokens) generated += static_cast<int64_t>(t.size());
  if (common.json) {
    nlohmann::json j{{"model", m.name},        {"layout", o.layout},    {"comm", o.comm},
                     {"backend", o.backend},   {"steps", result.steps}, {"generated_tokens", generated},
                     {"tokens", result.tokens}};
    std::cout << j.dump(2) << "\n";
  } else if (common.verbosity > 0) {
    std::cout << "exec: " << m.name << " " << o.layout << " on " << n << " " << o.comm << " rank(s), " << result.steps
              << " steps, " << generated << " tokens generated in " << wall_s << " s\n";
    for (size_t i = 0; i < result.tokens.size(); ++i) {
      std::cout << "  seq " << i << ":";
      for (int32_t t : result.tokens[i]) std::cout << " " << t;
      std::cout << "\n";
    }
  }
  return 0;
}

PARASOL_COMMAND("exec", 60, [](CLI::App& app, CommonOptions& common) {
  auto o = std::make_shared<ExecOptions>();
  CLI::App* sub = app.add_subcommand("exec", "Run a model for real: greedy generation, or serve a plan's workload");
  add_common_options(sub, common);
  sub->add_option("--plan", o->plan_path, "Plan YAML (parasol plan output): serve a workload");
  sub->add_option("--workload", o->workload, "Scenario YAML whose workload (and SLOs) --plan serves");
  sub->add_option("--requests", o->requests, "Serve at most this many requests of the workload")
      ->check(non_negative_count());
  sub->add_option("--profile", o->profile_out, "Per-op timings CSV (calibration format, docs/cost-model.md)");
  sub->add_option("--profile-gpu", o->profile_gpu, "The profile rows' gpu column (default: the backend's name)");
  sub->add_option("--model", o->model, "Model YAML / HF config.json, or builtin:NAME (test-llama, test-mixtral, ...)");
  sub->add_option("--layout", o->layout, "Parallel layout label, e.g. tp2.pp1.ep2.adp1.dp1")->capture_default_str();
  sub->add_option("--comm", o->comm, "Communicator: local (threads) or mpi (under mpirun)")->capture_default_str();
  sub->add_option("--backend", o->backend, "Backend: cpu (or cuda when built)")->capture_default_str();
  sub->add_option("--weights", o->weights, "synthetic, or a HF checkpoint directory")->capture_default_str();
  sub->add_option("--weight-dtype", o->weight_dtype, "Weight storage: fp32, bf16, fp16")->capture_default_str();
  sub->add_option("--prompts", o->prompts, "Number of synthetic prompts")->capture_default_str()->check(positive_count());
  sub->add_option("--prompt-min", o->prompt_min, "Shortest prompt (tokens)")->capture_default_str()->check(positive_count());
  sub->add_option("--prompt-max", o->prompt_max, "Longest prompt (tokens)")->capture_default_str()->check(positive_count());
  sub->add_option("--decode", o->decode, "Decode steps after the prefill")->capture_default_str()->check(non_negative_count());
  sub->add_option("--prefill-chunk", o->prefill_chunk, "Chunked prefill size (0: whole prompts)")
      ->check(non_negative_count());
  sub->add_option("--kv-blocks", o->kv_blocks, "KV blocks per rank (--plan: the scheduler's KV capacity cap)")
      ->capture_default_str();
  sub->add_option("--logits-out", o->logits_out, "Write tokens and logits (JSON) from rank 0");
  sub->add_option("--timeout", o->timeout_s, "Seconds a rank waits for its peers before failing")
      ->capture_default_str();
  sub->add_option("--fault-stall-rank", o->stall_rank, "Test: this rank stalls before its first step");
  sub->add_option("--fault-stall-s", o->stall_s, "Test: how long the stalled rank sleeps");
  sub->add_option("--fault-exit-rank", o->exit_rank, "Test: this rank exits before its first step");
  set_examples(
      sub, {"parasol exec --model builtin:test-mixtral --layout tp2.pp1.ep2.adp1.dp1 --decode 16  # 2 x 2 ranks as threads",
            "parasol exec --plan scenarios/exec/tiny-llama-tp2.plan.yaml --workload scenarios/exec/tiny-llama-tp2.yaml "
            "--out /tmp/exec  # serve a workload",
            "mpirun -np 4 parasol exec --model builtin:test-deepseek --layout tp1.pp1.ep2.adp2.dp1 --comm mpi  # MPI ranks",
            "parasol exec --model builtin:test-llama --layout tp1.pp2.ep1.adp1.dp1 --logits-out /tmp/pp2.json  # compare "
            "layouts",
            "parasol exec --plan PLAN.yaml --workload SCENARIO.yaml --profile ops.csv  # per-op times (calibration CSV)"});
  return [o, &common]() -> int {
    // The cuda backend is a plugin (exec/plugin.hpp): load it before any rank starts, so that a missing or broken
    // libparasol_cuda.so is one clear error (exit 2), not one per rank thread.
    if (o->backend == "cuda") exec::cuda_plugin();
    if (!o->plan_path.empty()) return run_exec_serve(*o, common);
    if (o->model.empty()) throw ConfigError("", 0, 0, "exec", "--plan PLAN or --model MODEL", "neither");
    return run_generation(*o, common);
  };
});

}  // namespace
}  // namespace parasol::tools

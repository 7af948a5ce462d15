// Serving a Plan for real: core/serve's serving loop (serving_loop.hpp, the same loop `parasol sim` runs) on a wall
// clock (serve::WallClock, steady_clock) or a virtual one (ServeConfig::timer), each iteration run by ExecStepRunner
// on every rank of the instance through ModelRunners — the same Scheduler, StepRunner contract and metrics schema as
// `parasol sim`, so the two write the same files.
//
// Rank 0 drives: it owns the request source, the Scheduler, the metrics and the token ids of every sequence
// (prompts are synthetic, drawn per request from the seed; generated tokens are the greedy ones). For each
// iteration it sends the step's request over the instance communicator to the other ranks (a small control message,
// outside the Step), and every rank runs ModelRunner::step — build_step's program for that rank. The other ranks run
// serve_worker() until rank 0 says stop. While idle between arrivals rank 0 sends keep-alive messages so that the
// workers' receive timeout only fires when rank 0 is really gone. With attention-DP, a sequence is served by the group the
// scheduler put it in (SeqWork::attn_group: least outstanding tokens when it arrived). Per-op times (RunnerOptions::profile) become executor-profile rows (calibration CSV plus rank, iteration
// and per-sequence lengths: core/cost/profile_samples.hpp), gathered on rank 0 at the end.
// Thread behaviour: each function runs on its rank's thread; the objects passed in are used during the call only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/cost/profile_samples.hpp"
#include "core/plan/plan.hpp"
#include "core/serve/clock.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/scheduler.hpp"
#include "core/serve/serving_loop.hpp"
#include "core/serve/step_runner.hpp"
#include "core/serve/workload.hpp"
#include "exec/backend.hpp"
#include "exec/communicator.hpp"
#include "exec/model_runner.hpp"
#include "exec/weights.hpp"

namespace parasol::exec {

struct ServeConfig {
  int pool = 0;  // the plan's pool to serve (one instance of it)
  std::string backend = "cpu";
  serve::SchedulerConfig scheduler;  // kv_blocks already capped to what the runners hold (see make_serve_config)
  RunnerOptions runner;              // weight / KV types, KV blocks per rank, profile
  std::string profile_gpu = "cpu";   // the calibration rows' gpu column
  uint64_t seed = 1;                 // synthetic prompt tokens
  // Virtual clock: when set, every step takes this runner's time (the cost model's, e.g. sim's AnalyticStepRunner)
  // instead of the wall time, and the loop jumps from event to event; the tokens are still computed for real. Not
  // owned. Makes exec's schedule comparable iteration by iteration with sim's.
  serve::StepRunner* timer = nullptr;
};

// The configuration for serving pool `pool` of `plan`: scheduler limits from the pool (KV capacity capped at
// `max_kv_blocks` blocks), weights and KV stored in the plan's dtypes (fp32 / bf16 / fp16), runners holding twice the
// scheduler's KV blocks plus one per batch slot (so blocks of a sequence preempted by recompute, freed on the
// runners only when it restarts, never starve the others). Prefix caching is off (the runners' KV is per sequence).
// `scheduler` (e.g. serve::scheduler_config of the scenario's serving knobs) replaces the pool's limits when given;
// its KV capacity is capped the same way and prefix caching stays off.
ServeConfig make_serve_config(const plan::Plan& plan, int pool, int64_t max_kv_blocks,
                              const serve::SchedulerConfig* scheduler = nullptr);

struct ServeResult {
  double end_s = 0;  // wall clock when the last request left
  int64_t iterations = 0;
  int64_t requests = 0;          // records produced (== arrived)
  int64_t generated_tokens = 0;  // sampled over the run (recomputed ones included)
  std::string profile_csv;       // rank 0: every rank's calibration rows, header first (empty without profile)
  // rank 0: every request's generated token ids, by request id
  std::map<int64_t, std::vector<int32_t>> outputs;
};

// The StepRunner of rank 0: run() sends the batch to the other ranks, runs rank 0's share and returns the wall time
// (clock_advanced: the clock moved by itself). Sequences must be registered with add_request() before their first
// batch and released after they finish.
class ExecStepRunner final : public serve::StepRunner {
 public:
  ExecStepRunner(ModelRunner& runner, Communicator& instance, const serve::Clock& clock, const ServeConfig& config);
  ~ExecStepRunner() override;
  serve::StepTiming run(int replica, const plan::Batch& batch) override;
  std::string name() const override { return "exec"; }

  void add_request(const serve::Request& r);  // draws its prompt tokens
  void release(int64_t seq_id);               // on every rank (sent with the next message)
  void keep_alive();                          // tells the workers rank 0 is alive
  void stop();                                // ends serve_worker() on the other ranks

  int64_t generated_tokens() const { return generated_; }
  std::map<int64_t, std::vector<int32_t>>& outputs() { return outputs_; }
  std::string& profile() { return profile_; }

 private:
  struct Seq {
    std::vector<int32_t> tokens;  // prompt + generated
    int64_t prompt = 0;
  };
  ModelRunner& runner_;
  Communicator& comm_;
  const serve::Clock& clock_;
  ServeConfig config_;
  std::map<int64_t, Seq> seqs_;
  std::vector<int64_t> releases_;
  std::map<int64_t, std::vector<int32_t>> outputs_;
  std::string profile_;
  int64_t generated_ = 0;
  int64_t iteration_ = 0;  // run() calls so far: the profile rows' iteration
};

// Rank 0: serves `source` to exhaustion on a wall clock, feeding `metrics`. Every other rank calls serve_worker()
// at the same time. Both construct their ModelRunner (collective) inside.
// `loop_options`: limits and hooks of the serving loop (core/serve/serving_loop.hpp); its on_arrival and on_record
// run after the executor's own.
ServeResult serve_driver(const plan::Plan& plan, const WeightSource& weights, Communicator& instance,
                         const ServeConfig& config, serve::RequestSource& source, serve::MetricsCollector& metrics,
                         const serve::LoopOptions& loop_options = {});
ServeResult serve_worker(const plan::Plan& plan, const WeightSource& weights, Communicator& instance,
                         const ServeConfig& config);

// Executor-profile rows (no header) of a step's ops measured on `gpu` (ops with no measured time are left out).
std::string profile_rows(const std::vector<OpRecord>& ops, const std::string& gpu, const cost::ProfileContext& ctx);

}  // namespace parasol::exec

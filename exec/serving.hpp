// Serving a Plan for real: core/serve's serving loop (serving_loop.hpp, the same loop `parasol sim` runs) on a wall
// clock (serve::WallClock, steady_clock) or a virtual one (ServeConfig::timer), each iteration run by ExecStepRunner
// on every rank of the instance through ModelRunners — the same Scheduler, StepRunner contract and metrics schema as
// `parasol sim`, so the two write the same files.
//
// World rank 0 drives: it owns the request source, the serving loop (router, one Scheduler per instance), the metrics
// and the token ids of every sequence (prompts are synthetic, drawn per request from the seed; generated tokens are
// the greedy ones). A plan with dp instances runs on dp x n ranks: for each iteration of instance 0, rank 0 sends the
// step's request over the instance communicator to the instance's other ranks (a small control message, outside the
// Step) and every rank runs ModelRunner::step — build_step's program for that rank; an iteration of instance i > 0
// goes to that instance's rank 0 (serve_leader) over the world communicator, which does the same on its instance and
// answers with the sampled tokens. Steps of different instances run one after another (rank 0 waits for each). A
// pipelined instance (pp > 1, wall clock) takes the next micro-batch as soon as its first stage is done with the
// previous one: the last stage sends the sampled tokens to instance rank 0, which collects them when the serving
// loop next waits (oldest first; it waits for them there), so up to pp micro-batches are in flight per instance. The
// other ranks run serve_worker() until stopped. While idle between arrivals rank 0 sends keep-alive messages so that
// receive timeouts only fire when rank 0 is really gone. With attention-DP, a sequence is served by the group the
// scheduler put it in (SeqWork::attn_group: least outstanding tokens when it arrived). Per-op times
// (RunnerOptions::profile, dp 1) become executor-profile rows (calibration CSV plus rank, iteration and per-sequence
// lengths: core/cost/profile_samples.hpp), gathered on rank 0 at the end.
// Thread behaviour: each function runs on its rank's thread; the objects passed in are used during the call only.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/cost/profile_samples.hpp"
#include "core/plan/plan.hpp"
#include "core/serve/clock.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
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
  // Virtual clock: when set, every step takes this runner's time (the cost model's, e.g. serve::AnalyticStepRunner)
  // instead of the wall time, and the loop jumps from event to event; the tokens are still computed for real. Not
  // owned. Makes exec's schedule comparable iteration by iteration with sim's.
  serve::StepRunner* timer = nullptr;
  serve::RouterConfig router;  // dp > 1: how requests reach the instances
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
  int64_t kv_transfers = 0;      // P/D: KV moves from prefill to decode instances
  std::string profile_csv;       // rank 0: every rank's calibration rows, header first (empty without profile)
  // rank 0: every request's generated token ids, by request id
  std::map<int64_t, std::vector<int32_t>> outputs;
};

// Where one replica's steps run, seen from world rank 0: the instance it leads (local), or another instance through
// that instance's leader (remote). begin() carries the sequences to release first and the step request; every rank of
// the instance runs its share; it returns when the instance's first stage is done with it (the rest of the pipeline
// goes on: ModelRunner::submit). collect() returns the oldest begun step's sampled token per sequence (-1: none) and
// its work, waiting for its last stage. A pipelined replica begins up to pp steps before collecting the first.
struct TargetResult {
  std::vector<int32_t> next_tokens;
  double flops = 0, bytes = 0;
  std::vector<OpRecord> ops;  // local, with profiling: rank 0's measured ops
};
class StepTarget {
 public:
  virtual ~StepTarget() = default;
  virtual void begin(const std::vector<int64_t>& releases, const StepRequest& request) = 0;
  virtual TargetResult collect() = 0;
  TargetResult run(const std::vector<int64_t>& releases, const StepRequest& request) {
    begin(releases, request);
    return collect();
  }
  virtual void keep_alive() = 0;
  virtual void stop() = 0;                    // ends the instance's workers (and leader)
  virtual std::string gather_profile() = 0;  // after stop(): the other ranks' profile rows
  virtual void kv(const std::vector<int32_t>& message) = 0;  // P/D: its ranks' part of a KV move
};

// The StepRunner of world rank 0, for every replica of the pool (replica i runs on targets[i]): run() builds the
// step's request from each sequence's tokens, runs it on the replica's instance and returns the wall time
// (clock_advanced), or the timer's (ServeConfig::timer). begin() and collect() split run() for pipelined replicas:
// the next micro-batch begins while earlier ones are still in later stages, results come back in begin order. Sequences are registered with add_request() when they arrive
// and released when they leave; a sequence's KV is released on its instance with its next step there.
class ExecStepRunner final : public serve::StepRunner {
 public:
  // `bases[i]`: the world rank of targets[i]'s instance rank 0 (where KV moves between instances go).
  ExecStepRunner(std::vector<StepTarget*> targets, std::vector<int> bases, int64_t vocab, const serve::Clock& clock,
                 const ServeConfig& config);
  ~ExecStepRunner() override;
  serve::StepTiming run(int replica, const plan::Batch& batch) override;
  std::string name() const override { return "exec"; }
  void begin(int replica, const plan::Batch& batch);
  serve::StepTiming collect(int replica);  // wall-clock timing of the replica's oldest begun step

  void add_request(const serve::Request& r);  // draws its prompt tokens
  void release(int64_t seq_id);               // its outputs are kept; its KV goes with the next step
  void keep_alive();                          // tells every instance rank 0 is alive
  void stop();                                // ends serve_worker() / serve_leader() everywhere
  std::string gather_profiles();              // after stop(): every other rank's profile rows
  // P/D: the KV of the sequence's first `tokens` tokens moves from replica `from` to `to` (each rank of the one to
  // the same rank of the other), and the sequence continues there.
  void transfer_kv(int64_t seq_id, int64_t tokens, int from, int to);

  int64_t generated_tokens() const { return generated_; }
  std::map<int64_t, std::vector<int32_t>>& outputs() { return outputs_; }
  std::string& profile() { return profile_; }

 private:
  struct Seq {
    std::vector<int32_t> tokens;  // prompt + generated
    int64_t prompt = 0;
    int replica = -1;             // the instance that holds its KV (-1: not run yet)
  };
  std::vector<StepTarget*> targets_;
  std::vector<int> bases_;
  int64_t vocab_;
  const serve::Clock& clock_;
  ServeConfig config_;
  struct Started {
    StepRequest request;
    double t0 = 0;
  };
  StepRequest request_for(int replica, const plan::Batch& batch);
  serve::StepTiming finish(int replica, const plan::Batch* timer_batch);
  std::map<int64_t, Seq> seqs_;
  std::vector<std::vector<int64_t>> releases_;  // per replica, sent with its next step
  std::vector<std::deque<Started>> started_;    // per replica: begun, not collected, oldest first
  std::map<int64_t, std::vector<int32_t>> outputs_;
  std::string profile_;
  int64_t generated_ = 0;
  int64_t iteration_ = 0;  // run() calls so far: the profile rows' iteration
};

// World rank 0: serves `source` to exhaustion through the serving loop, feeding `metrics`, over the pool's dp
// instances (world ranks [i x n, (i + 1) x n) form instance i; `instance` is rank 0's). The other instances' rank 0
// run serve_leader(), every other rank serve_worker(), at the same time; each constructs its ModelRunner (collective)
// inside. `loop_options`: limits and hooks of the serving loop (core/serve/serving_loop.hpp); its on_arrival and
// on_record run after the executor's own.
ServeResult serve_driver(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                         Communicator& instance, const std::vector<ServeConfig>& configs,
                         serve::RequestSource& source, serve::MetricsCollector& metrics,
                         const serve::LoopOptions& loop_options = {});
// Rank 0 of instance i > 0: runs the steps world rank 0 sends over `world` on its instance and answers with the tokens.
ServeResult serve_leader(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                         Communicator& instance, const ServeConfig& config);
ServeResult serve_worker(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                         Communicator& instance, const ServeConfig& config);

// Any rank of the world of the plan's instances (pool after pool, each pool's dp instances of n ranks): splits the
// world into instances and runs this rank's part
// (serve_driver on world rank 0, with `source` and `metrics`; serve_leader on the other instances' rank 0;
// serve_worker elsewhere). Returns this rank's result (rank 0's carries the run's).
// `configs`: one per pool of the plan (ServeConfig::pool), the first one's backend, router, timer and profile
// settings for the whole run. P/D plans need equal tp, pp and stage layers in both pools and attention-DP 1.
ServeResult serve_rank(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                       const std::vector<ServeConfig>& configs, serve::RequestSource* source,
                       serve::MetricsCollector* metrics, const serve::LoopOptions& loop_options = {});

// Executor-profile rows (no header) of a step's ops measured on `gpu` (ops with no measured time are left out).
std::string profile_rows(const std::vector<OpRecord>& ops, const std::string& gpu, const cost::ProfileContext& ctx);

}  // namespace parasol::exec

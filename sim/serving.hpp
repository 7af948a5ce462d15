// The serving simulation: a Plan served on the SimGrid platform of its cluster, by core/serve's one serving loop
// (core/serve/serving_loop.hpp: routing, each replica's Scheduler with up to pp micro-batches in flight, P/D
// hand-offs, metrics) with a SimGrid host. Steps are costed by the pool's StepRunner: the cost
// model (analytic fidelity: the loop jumps from event to event, no SimGrid activity at all), or flows on the platform
// (network fidelity: each micro-batch runs in its own short-lived actor and its collectives share links with
// everything else in flight). With prefill/decode disaggregation a prefill replica hands each finished prefill to a
// decode replica (same router policy) after its KV cache travels as SimGrid flows from the prefill instance's GPUs
// to the decode instance's GPUs over the real routes (in both fidelity modes). Actors: the loop, plus one short-lived
// actor per network step or KV transfer. Every record, iteration and ITL sample goes to the caller's
// MetricsCollector. Deterministic: SimGrid's event loop is sequential and nothing here iterates unordered state.
// Thread behaviour: simulate_serving creates this process's SimGrid engine; call it once per process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/plan/plan.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
#include "core/serve/scheduler.hpp"
#include "core/serve/serving_loop.hpp"
#include "core/serve/step_runner.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/scenario.hpp"
#include "sim/link_usage.hpp"

namespace parasol::sim {

struct ServeOptions {
  spec::Fidelity fidelity = spec::Fidelity::kAnalytic;
  std::vector<serve::SchedulerConfig> schedulers;  // one per pool of the plan; empty: SchedulerConfig::from_pool
  serve::RouterConfig router;  // one router of this policy per pool (the decode pool's picks the decode instance)
  // P/D plans: the first token is delivered by the decode instance when its first decode iteration starts (TTFT
  // includes the KV transfer and decode-side queueing), else at the end of the prefill (scenario `sim.first_token`).
  bool first_token_at_decode = true;
  plan::CollectiveAlgo algo = plan::CollectiveAlgo::kAuto;  // network mode: force one collective algorithm
  // The serving engine around the kernels (the scenario's `engine:`; not owned); null: the bare GPU program.
  const spec::Engine* engine = nullptr;
  double duration_s = std::numeric_limits<double>::infinity();  // no arrivals admitted at or after this time
  int64_t max_requests = -1;                                    // stop admitting after this many (-1: no cap)
  std::function<void(double now_s, int64_t done)> progress;     // every progress_every records
  int64_t progress_every = 10000;
  // Polled before each arrival: nonzero (a signal number) stops admitting; what arrived runs to its end, and the
  // result says where it stopped (ServeResult::stopped_by). nullptr: never.
  const std::atomic<int>* stop = nullptr;
  bool verbose = false;                                         // SimGrid's own logging
  // Tests: one runner per pool, used instead of the fidelity's runner (nullptr entries keep it). Not owned.
  std::vector<serve::StepRunner*> runners;
  // Called at the end of every iteration and for every record (tests comparing schedules); empty: never.
  std::function<void(const serve::IterationView&)> on_iteration;
  std::function<void(const serve::RequestRecord&)> on_record;
  serve::FaultPolicy faults;  // replica failures to inject (fault_policy() of the scenario's faults:)
};

// The options that serve `plan` as the scenario says: its engine, one scheduler per pool under its serving knobs
// (serve::scheduler_config), its router (serve::router_config, draws from `seed`) and when a P/D request's first
// token counts. Fidelity, limits and faults are the caller's.
ServeOptions serve_options(const spec::Scenario& scenario, const plan::Plan& plan, uint64_t seed);

// The scenario's `faults:` for this plan: GPUs mapped to the replicas holding them (a GPU no replica holds is a
// ConfigError naming the event), the per-GPU MTBF turned into the replica's (its GPUs fail independently).
serve::FaultPolicy fault_policy(const spec::Faults& faults, const plan::Plan& plan, const std::string& scenario_file);

struct ServeResult {
  int stopped_by = 0;       // ServeOptions::stop's value when it stopped the arrivals (0: the workload ran out)
  double stopped_at_s = 0;  // the simulated time it did
  double end_s = 0;
  int64_t iterations = 0;
  int64_t requests = 0;  // records emitted (== arrived)
  int64_t kv_transfers = 0;
  double kv_bytes = 0;
  int64_t flows = 0;          // SimGrid comms started (KV transfers + network-mode collectives)
  double flow_bytes = 0;
  int64_t collectives = 0;    // network mode
  int64_t memo_hits = 0, memo_misses = 0;  // analytic mode
  int64_t failures = 0, retried = 0, failed_requests = 0, lost_prefill_tokens = 0;  // faults (serving_loop.hpp)
  int replicas = 0;
  // Per link direction of the cluster graph: name, nominal bandwidth and bytes carried (only those that carried any).
  struct LinkUse {
    std::string name;
    double bw_Bps = 0;
    double bytes = 0;
  };
  std::vector<LinkUse> links;
  // Network outputs (sim/link_usage.hpp): link_usage.csv (bytes per link per time bucket) and the flow groups as
  // Chrome trace events (appended to trace.json).
  std::string link_usage_csv;
  std::string flow_trace_events;
  // Per replica (global index), at the end of the run: for conservation checks.
  struct ReplicaEnd {
    int pool = 0;
    int64_t kv_used_blocks = 0;  // referenced KV blocks (0 when every request left)
    int64_t kv_total_blocks = 0;
    int64_t outstanding_requests = 0;
    serve::SchedulerStats stats;
  };
  std::vector<ReplicaEnd> replica_end;
};

ServeResult simulate_serving(const plan::Plan& plan, const spec::Cluster& cluster, serve::RequestSource& source,
                             serve::MetricsCollector& metrics, const ServeOptions& options);

}  // namespace parasol::sim

// ServingLoop: the one serving loop of parasol, shared by `sim` and `exec`. It pulls requests from a source as their
// arrival time comes, routes them to a replica of the entry pool (core/serve Router), runs each replica's iterations
// (Scheduler -> StepRunner -> Scheduler::complete, up to pp micro-batches in flight per replica, the next one started
// when stage 0 is free), hands finished prefills of a prefill pool to a decode pool (P/D disaggregation: routed, then
// their KV moved by the host) and feeds every record and iteration to a MetricsCollector. What differs between sim
// and exec is the LoopHost: where time comes from and what runs asynchronously.
//   - A virtual host (ManualHost, tests and exec on a virtual clock; sim/'s SimGrid host): time jumps from event to
//     event; steps are costed synchronously by the pool's StepRunner.
//   - The SimGrid host (sim/serving.cpp) also runs network-fidelity steps and KV transfers as flows on the platform:
//     it starts them (start_step, transfer_kv) and posts their completion back (post_stage0, post_step_done,
//     post_kv_arrived); while any is in flight the loop lets the host's clock run (wait_until) instead of jumping.
//   - A wall-clock host (exec): wait_until sleeps; a step's run() takes real time (StepTiming::clock_advanced).
// Replica failures (LoopOptions::faults, a scenario's `faults:`): an instance stops, what it computed is lost, and at
// detection its requests are sent again or fail with the reason (FaultPolicy); nothing is lost.
// Order at one instant: every event that ends at t (iteration ends by replica, stage-0 releases, KV arrivals), then
// every arrival at t, then the replicas touched schedule their next iterations (lowest index first). So freed KV and
// simultaneous arrivals are visible to the iteration that starts at t. Deterministic: one thread, ordered events.
// Thread behaviour: run() runs on the calling thread (a SimGrid actor in sim); post_* are called by the host from
// activities that run on the same thread (SimGrid actors are cooperative) or, for a real host, under its own lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
#include "core/serve/scheduler.hpp"
#include "core/serve/step_runner.hpp"
#include "core/serve/workload.hpp"

namespace parasol::serve {

class ServingLoop;

// Where time comes from, and the activities a driver runs itself.
class LoopHost {
 public:
  virtual ~LoopHost() = default;
  // True: the loop may move time forward by itself when nothing asynchronous is in flight (discrete events).
  virtual bool virtual_time() const = 0;
  virtual double now_s() = 0;
  // Lets time pass until t_s (infinity: until something is posted) or until an asynchronous activity posts an
  // event, whichever comes first; returns the clock then.
  virtual double wait_until(double t_s) = 0;
  // Runs micro-batch `slot` of a replica asynchronously: returns true when it started one (and then posts
  // post_stage0 at most once and post_step_done exactly once); false: the loop runs the pool's StepRunner itself.
  // `batch` stays valid until post_step_done. `now_s` is the loop's time (the host's clock may lag behind it).
  virtual bool start_step(ServingLoop& /*loop*/, int /*global_replica*/, int /*slot*/, const plan::Batch& /*batch*/,
                          double /*now_s*/) {
    return false;
  }
  // P/D: moves the KV of `handoff` (`bytes`) from one replica to another (global indices), then posts
  // post_kv_arrived(ticket). A host without a transport may post it at once.
  virtual void transfer_kv(ServingLoop& loop, int from_replica, int to_replica, const Handoff& handoff, double bytes,
                           uint64_t ticket, double now_s);
};

// Virtual time with nothing asynchronous: tests, benchmarks and exec on a virtual clock.
class ManualHost final : public LoopHost {
 public:
  bool virtual_time() const override { return true; }
  double now_s() override { return now_; }
  double wait_until(double t_s) override;
  void set(double t_s) { now_ = t_s; }

 private:
  double now_ = 0;
};

// One pool of a plan: its replicas' schedulers (caller-owned, all of one role), its router and its step runner.
struct LoopPool {
  std::vector<Scheduler*> schedulers;
  Router* router = nullptr;
  StepRunner* runner = nullptr;  // the synchronous runner (a host's start_step may take over)
  int pp = 1;                    // micro-batches in flight per replica
};

// One iteration as it ended (LoopOptions::on_iteration): for tests that compare schedules and for traces.
struct IterationView {
  int replica = 0;      // global index
  int64_t index = 0;    // 0, 1, 2, ... per replica
  double start_s = 0, end_s = 0;
  const Iteration* it = nullptr;
};

// Instance failures. A replica (global index) stops at at_s: what it was computing is lost; the failure is detected
// detect_s later (until then the router still sends it requests), when every request it holds is sent again (at most
// `retries` times per request, after backoff_s; the prefill it had done is redone) or ends failed with the reason;
// the replica serves again at at_s + max(repair_s, detect_s) (infinity: never). Random failures: each replica fails
// after an exponential time of mean mtbf_s from the start or from its last repair, and is repaired mttr_s later.
struct Fault {
  double at_s = 0;
  int replica = 0;
  double repair_s = std::numeric_limits<double>::infinity();
};
struct FaultPolicy {
  std::vector<Fault> events;
  double detect_s = 0;
  int retries = 0;
  double backoff_s = 0;
  double mtbf_s = 0;  // per replica; 0: no random failures
  double mttr_s = 0;
  uint64_t seed = 0;
  bool any() const { return !events.empty() || mtbf_s > 0; }
};

struct LoopOptions {
  double duration_s = std::numeric_limits<double>::infinity();  // no arrival admitted at or after this time
  int64_t max_requests = -1;                                    // stop admitting after this many (-1: no cap)
  // Polled before each arrival: nonzero (a signal number) stops admitting; what arrived runs to its end.
  const std::atomic<int>* stop = nullptr;
  std::function<void(double now_s, int64_t done)> progress;     // every progress_every records
  int64_t progress_every = 10000;
  double kv_bytes_per_token = 0;  // P/D: KV bytes moved per prompt token
  // Hooks (empty: none): a request before its scheduler sees it; every record as it is emitted; every iteration.
  std::function<void(const Request&)> on_arrival;
  std::function<void(const RequestRecord&)> on_record;
  std::function<void(const IterationView&)> on_iteration;
  FaultPolicy faults;
};

struct LoopResult {
  double end_s = 0;  // time of the last event (the last request's end)
  int64_t iterations = 0;
  int64_t requests = 0;  // records emitted (== arrived)
  int64_t kv_transfers = 0;
  double kv_bytes = 0;
  int stopped_by = 0;       // LoopOptions::stop's value when it stopped the arrivals (0: the workload ran out)
  double stopped_at_s = 0;
  // Faults: replica failures, requests sent again, requests failed by them, and the prefill tokens lost with the
  // failed replicas (done again by the retries).
  int64_t failures = 0, retried = 0, failed_requests = 0, lost_prefill_tokens = 0;
};

class ServingLoop {
 public:
  // pools[0]: mixed, or prefill when pools[1] (decode) exists.
  ServingLoop(std::vector<LoopPool> pools, RequestSource& source, MetricsCollector& metrics, LoopOptions options);
  ~ServingLoop();
  LoopResult run(LoopHost& host);

  // From a host's asynchronous activities (times on the host's clock; stage 0 may be reported ahead of it).
  void post_stage0(int global_replica, int slot, double t_s);
  void post_step_done(int global_replica, int slot, const StepTiming& timing, double t_s);
  void post_kv_arrived(uint64_t ticket, double t_s);

  int replicas() const { return int(reps_.size()); }
  int pool_of(int global_replica) const;
  int index_in_pool(int global_replica) const;
  const LoopPool& pool(int p) const { return pools_[size_t(p)]; }

 private:
  struct Slot {
    Iteration it;
    StepTiming timing;
    uint64_t epoch = 0;   // the replica's epoch when it started (a failure since voids it)
    bool async = false;   // run by the host (posted back), not costed by the loop
    double stage0_s = 0;  // when stage 0 finished this micro-batch (infinity: not yet known)
    bool done = false;
  };
  struct Rep {
    int pool = 0, index = 0;
    Scheduler* sched = nullptr;
    std::vector<Slot> ring;  // pp slots, reused
    size_t head = 0, count = 0;
    int last_slot = -1;      // the micro-batch started last: its stage 0 gates the next one
    double last_end_s = 0;   // micro-batches leave the pipeline in order
    std::vector<double> stage_free;  // when each pipeline stage finishes the micro-batches it has (flow shop)
    int64_t iterations = 0;
    bool dirty = false;
    bool busy = false;      // !sched->idle(), as last seen
    bool down = false;      // failed, not repaired yet
    uint64_t epoch = 0;     // failures so far
    int64_t stale_async = 0;  // host-run steps from before a failure still running: the slots stay theirs
    StepEvents events;  // what its last completed iteration produced (capacity reused)
  };
  enum class Kind : uint8_t { kStepEnd = 0, kStage0 = 1, kKvArrived = 2, kFail = 3, kDetect = 4, kRepair = 5, kRetry = 6 };
  struct Event {
    double t_s;
    Kind kind;
    int replica;
    int slot;
    uint64_t ticket;  // kKvArrived: the transfer
    uint64_t seq;     // insertion order: the last tie-breaker
    bool operator>(const Event& o) const {
      if (t_s != o.t_s) return t_s > o.t_s;
      if (kind != o.kind) return kind > o.kind;
      if (replica != o.replica) return replica > o.replica;
      return seq > o.seq;
    }
  };
  struct KvInFlight {
    Handoff handoff;
    int to = 0;
  };

  void push(double t, Kind k, int replica, int slot, uint64_t ticket = 0);
  std::optional<Request> next_arrival();
  void arrive(Request req);
  void step_end(int g, int slot, uint64_t epoch);
  void complete(Rep& r, Slot& s);
  void hand_off(Rep& from, Handoff h);
  void try_start(int g);
  double flow_shop(Rep& r, const StepTiming& t);
  void refresh(Rep& r);
  void emit(const RequestRecord& rec);
  void touch(int g);
  void fail(int g);
  void detect(int g);
  void repair(int g, bool random);
  void retry_or_fail(Request req, RequestRecord rec, int g);
  bool quiescent() const;
  double next_failure_s(int g, double after_s);

  std::vector<LoopPool> pools_;
  RequestSource& source_;
  MetricsCollector& metrics_;
  LoopOptions o_;
  LoopHost* host_ = nullptr;
  std::vector<Rep> reps_;
  std::vector<int> pool_first_;  // global index of each pool's first replica
  std::vector<std::vector<ReplicaLoad>> loads_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t event_seq_ = 0;
  std::vector<int> dirty_;
  std::unordered_map<uint64_t, KvInFlight> kv_;
  uint64_t next_ticket_ = 0;
  std::unordered_map<uint64_t, Request> retries_;  // requests waiting to be sent again, by ticket
  int64_t busy_ = 0;                               // replicas with work
  std::vector<uint64_t> fault_rng_;                 // per replica: random failures' generator state
  int64_t async_in_flight_ = 0;  // host-run steps and KV transfers not yet posted back
  int64_t admitted_ = 0;
  bool arrivals_done_ = false;
  double now_ = 0;
  LoopResult result_;
};

}  // namespace parasol::serve

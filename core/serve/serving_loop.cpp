#include "core/serve/serving_loop.hpp"

#include <algorithm>
#include <cmath>

#include "core/common/error.hpp"

namespace parasol::serve {
namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

void LoopHost::transfer_kv(ServingLoop& loop, int, int, const Handoff&, double, uint64_t ticket, double now_s) {
  loop.post_kv_arrived(ticket, now_s);
}

double ManualHost::wait_until(double t_s) {
  if (t_s < kInf) now_ = std::max(now_, t_s);
  return now_;
}

ServingLoop::ServingLoop(std::vector<LoopPool> pools, RequestSource& source, MetricsCollector& metrics,
                         LoopOptions options)
    : pools_(std::move(pools)), source_(source), metrics_(metrics), o_(std::move(options)) {
  if (pools_.empty() || pools_.size() > 2) throw ConfigError("serving: one mixed pool, or a prefill and a decode pool");
  for (size_t p = 0; p < pools_.size(); ++p) {
    LoopPool& pool = pools_[p];
    if (!pool.router || !pool.runner) throw Error("serving loop: pool " + std::to_string(p) + " lacks a router or a runner");
    pool.pp = std::max(pool.pp, 1);
    pool_first_.push_back(int(reps_.size()));
    loads_.emplace_back(pool.schedulers.size());
    for (size_t i = 0; i < pool.schedulers.size(); ++i) {
      Rep r;
      r.pool = int(p);
      r.index = int(i);
      r.sched = pool.schedulers[i];
      r.ring.resize(size_t(pool.pp));
      r.stage_free.assign(size_t(pool.pp), 0.0);
      reps_.push_back(std::move(r));
    }
  }
  for (Rep& r : reps_) refresh(r);
}

ServingLoop::~ServingLoop() = default;

int ServingLoop::pool_of(int g) const { return reps_[size_t(g)].pool; }
int ServingLoop::index_in_pool(int g) const { return reps_[size_t(g)].index; }

void ServingLoop::push(double t, Kind k, int replica, int slot, uint64_t ticket) {
  events_.push({t, k, replica, slot, ticket, event_seq_++});
}

void ServingLoop::touch(int g) {
  Rep& r = reps_[size_t(g)];
  if (r.dirty) return;
  r.dirty = true;
  dirty_.push_back(g);
}

void ServingLoop::refresh(Rep& r) {
  update_load(loads_[size_t(r.pool)][size_t(r.index)], *r.sched);
  const bool busy = !r.sched->idle();
  if (busy != r.busy) {
    busy_ += busy ? 1 : -1;
    r.busy = busy;
  }
}

// Nothing left to serve: no arrival, retry, transfer or iteration to come, every replica idle.
bool ServingLoop::quiescent() const {
  return arrivals_done_ && retries_.empty() && busy_ == 0 && async_in_flight_ == 0;
}

double ServingLoop::next_failure_s(int g, double after_s) {
  // splitmix64 per replica, seeded from (seed, replica): the same failures whatever the other replicas do.
  uint64_t& z = fault_rng_[size_t(g)];
  z += 0x9e3779b97f4a7c15ull;
  uint64_t x = z;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  const double u = (double(x >> 11) + 0.5) / 9007199254740992.0;  // (0, 1)
  return after_s - o_.faults.mtbf_s * std::log(u);
}

void ServingLoop::fail(int g) {
  Rep& r = reps_[size_t(g)];
  if (r.down) return;
  r.down = true;
  for (size_t k = 0; k < r.count; ++k) {  // host-run steps keep running on their slots until they post back
    const Slot& s = r.ring[(r.head + k) % r.ring.size()];
    if (s.async && !s.done) ++r.stale_async;
  }
  ++r.epoch;  // what it was computing is lost: those iterations never complete
  r.head = r.count = 0;
  r.last_slot = -1;
  r.last_end_s = now_;
  std::fill(r.stage_free.begin(), r.stage_free.end(), now_);
  ++result_.failures;
  metrics_.on_fault(now_, g, "failed");
  push(now_ + o_.faults.detect_s, Kind::kDetect, g, 0, r.epoch);
}

void ServingLoop::detect(int g) {
  Rep& r = reps_[size_t(g)];
  loads_[size_t(r.pool)][size_t(r.index)].alive = false;
  metrics_.on_fault(now_, g, "failure detected");
  std::vector<Scheduler::Evicted> evicted;
  r.sched->evict_all(now_, evicted);
  for (Scheduler::Evicted& e : evicted) {
    result_.lost_prefill_tokens += e.prefilled;
    retry_or_fail(std::move(e.request), std::move(e.record), g);
  }
  refresh(r);
}

void ServingLoop::retry_or_fail(Request req, RequestRecord rec, int g) {
  if (req.attempt < o_.faults.retries) {
    ++req.attempt;
    ++result_.retried;
    const uint64_t ticket = next_ticket_++;
    retries_.emplace(ticket, std::move(req));
    push(now_ + o_.faults.backoff_s, Kind::kRetry, g, 0, ticket);
    return;
  }
  rec.finish_s = now_;
  rec.outcome = Outcome::kFailed;
  rec.retries = req.attempt;
  rec.reason = "replica " + std::to_string(g) + " failed" +
               (req.attempt > 0 ? " (after " + std::to_string(req.attempt) + " retries)" : std::string());
  ++result_.failed_requests;
  emit(rec);
}

void ServingLoop::repair(int g, bool random) {
  Rep& r = reps_[size_t(g)];
  r.down = false;
  loads_[size_t(r.pool)][size_t(r.index)].alive = true;
  metrics_.on_fault(now_, g, "repaired");
  if (random) push(next_failure_s(g, now_), Kind::kFail, g, 0, 1);
  touch(g);
}

void ServingLoop::emit(const RequestRecord& rec) {
  metrics_.on_request(rec);
  ++result_.requests;
  if (o_.on_record) o_.on_record(rec);
  if (o_.progress && o_.progress_every > 0 && result_.requests % o_.progress_every == 0)
    o_.progress(now_, result_.requests);
}

std::optional<Request> ServingLoop::next_arrival() {
  if (arrivals_done_) return std::nullopt;
  if (o_.max_requests >= 0 && admitted_ >= o_.max_requests) {
    arrivals_done_ = true;
    return std::nullopt;
  }
  std::optional<Request> r = source_.next();
  if (!r || r->arrival_s >= o_.duration_s) {
    arrivals_done_ = true;
    return std::nullopt;
  }
  return r;
}

void ServingLoop::arrive(Request req) {
  if (req.attempt == 0) {
    ++admitted_;
    if (o_.on_arrival) o_.on_arrival(req);
  }
  const int idx = pools_[0].router->route(req, loads_[0]);
  if (idx < 0) {
    RequestRecord rec = make_rejected(req, now_, "no replica alive", req.attempt > 0 ? Outcome::kFailed : Outcome::kRejected);
    rec.retries = req.attempt;
    if (req.attempt > 0) ++result_.failed_requests;
    emit(rec);
    return;
  }
  const int g = pool_first_[0] + idx;
  Rep& r = reps_[size_t(g)];
  if (std::optional<RequestRecord> rejected = r.sched->add(std::move(req), now_)) {
    emit(*rejected);
    return;
  }
  refresh(r);
  touch(g);
}

void ServingLoop::complete(Rep& r, Slot& s) {
  const int g = pool_first_[size_t(r.pool)] + r.index;
  StepEvents& ev = r.events;
  ev.clear();
  r.sched->complete(s.it, now_, ev);
  ++result_.iterations;
  StepSample sample;
  sample.replica = g;
  sample.start_s = s.it.start_s;
  sample.end_s = now_;
  sample.seqs = int32_t(s.it.batch.seqs.size());
  sample.prefill_tokens = s.it.prefill_tokens;
  sample.decode_tokens = s.it.decode_tokens;
  sample.preempted = s.it.preempted;
  sample.flops = s.timing.flops;
  sample.bytes = s.timing.bytes;
  sample.kv_utilization = r.sched->kv_utilization();
  metrics_.on_step(sample);
  metrics_.on_itl(ev.itl_s);
  if (o_.on_iteration) o_.on_iteration({g, r.iterations, s.it.start_s, now_, &s.it});
  ++r.iterations;
  for (const RequestRecord& rec : ev.finished) emit(rec);
  for (Handoff& h : ev.handoffs) hand_off(r, std::move(h));
  refresh(r);
  touch(g);
}

void ServingLoop::hand_off(Rep& from, Handoff h) {
  if (pools_.size() < 2) throw Error("serving loop: a prefill replica handed off with no decode pool");
  const int idx = pools_[1].router->route(h.request, loads_[1]);
  if (idx < 0) {
    emit(make_rejected(h.request, now_, "no decode replica alive"));
    return;
  }
  const int to = pool_first_[1] + idx;
  const double bytes = double(h.kv_tokens) * o_.kv_bytes_per_token;
  const uint64_t ticket = next_ticket_++;
  const Handoff& moved = kv_.emplace(ticket, KvInFlight{std::move(h), to}).first->second.handoff;
  ++async_in_flight_;
  ++result_.kv_transfers;
  result_.kv_bytes += bytes;
  host_->transfer_kv(*this, pool_first_[size_t(from.pool)] + from.index, to, moved, bytes, ticket, now_);
}

void ServingLoop::step_end(int g, int slot, uint64_t epoch) {
  Rep& r = reps_[size_t(g)];
  if (epoch != r.epoch) return;  // started before a failure of the replica: lost with it
  r.ring[size_t(slot)].done = true;
  const size_t pp = r.ring.size();
  while (r.count > 0 && r.ring[r.head].done) {
    complete(r, r.ring[r.head]);
    r.head = (r.head + 1) % pp;
    --r.count;
  }
}

// A micro-batch entering the pipeline now: stage s starts when the micro-batch reached it (the previous stage's end
// plus the gap the step has there on an idle pipeline, negative when the stages overlap on a transfer) and stage s
// finished the previous micro-batch; a send and its receive meet, so a stage that starts late holds the previous
// stage (its send) as long. Returns its end; the stages' free times move on.
double ServingLoop::flow_shop(Rep& r, const StepTiming& t) {
  const size_t pp = t.stage_s.size();
  const bool offsets = t.stage_start_s.size() == pp;
  double sum = 0;
  for (double d : t.stage_s) sum += d;
  double end = 0, idle_end = 0;  // this micro-batch's previous-stage end, and the same on an idle pipeline
  for (size_t st = 0; st < pp; ++st) {
    const double offset = offsets ? t.stage_start_s[st] : idle_end;
    const double arrive = st == 0 ? now_ : end + (offset - idle_end);
    const double start = std::max(arrive, r.stage_free[st]);
    if (st > 0) r.stage_free[st - 1] += start - arrive;  // its send waited for this stage to take it
    end = start + t.stage_s[st];
    idle_end = offset + t.stage_s[st];
    r.stage_free[st] = end;
  }
  // What the step holds after its last stage's part (sampling, the engine's CPU work when it does not overlap).
  return end + std::max(0.0, t.total_s - idle_end);
}

void ServingLoop::try_start(int g) {
  Rep& r = reps_[size_t(g)];
  if (r.down || r.stale_async > 0) return;
  const LoopPool& pool = pools_[size_t(r.pool)];
  const int pp = pool.pp;
  while (int(r.count) < pp) {
    if (r.count > 0) {  // the next micro-batch enters stage 0 when the previous one has left it
      const Slot& last = r.ring[size_t(r.last_slot)];
      if (!last.done && now_ < last.stage0_s) return;
    }
    const size_t k = (r.head + r.count) % size_t(pp);
    Slot& s = r.ring[k];
    if (!r.sched->schedule(now_, s.it)) return;
    ++r.count;
    r.last_slot = int(k);
    s.done = false;
    s.epoch = r.epoch;
    s.async = false;
    s.timing = StepTiming{};
    s.stage0_s = kInf;  // gated until the host reports stage 0 (it may do so inside start_step)
    if (host_->start_step(*this, g, int(k), s.it.batch, now_)) {
      s.async = true;
      ++async_in_flight_;
      continue;
    }
    s.timing = pool.runner->run(r.index, s.it.batch);
    double end = 0;
    if (s.timing.clock_advanced) {  // a real step: it took the time it took
      now_ = std::max(now_, host_->now_s());
      end = std::max(now_, r.last_end_s);
      s.stage0_s = now_;
    } else if (pp > 1 && s.timing.stage_s.size() == size_t(pp)) {
      end = std::max(flow_shop(r, s.timing), r.last_end_s);
      s.stage0_s = r.stage_free[0];
    } else {
      end = std::max(now_ + s.timing.total_s, r.last_end_s);
      s.stage0_s = now_ + (pp == 1 ? s.timing.total_s : s.timing.total_s / pp);
    }
    r.last_end_s = end;
    push(end, Kind::kStepEnd, g, int(k), r.epoch);
    if (pp > 1 && s.stage0_s > now_) push(s.stage0_s, Kind::kStage0, g, int(k));
  }
}

void ServingLoop::post_stage0(int g, int slot, double t_s) {
  reps_[size_t(g)].ring[size_t(slot)].stage0_s = t_s;
  push(t_s, Kind::kStage0, g, slot);
}

void ServingLoop::post_step_done(int g, int slot, const StepTiming& timing, double t_s) {
  Rep& r = reps_[size_t(g)];
  if (r.ring[size_t(slot)].epoch != r.epoch) {  // from before a failure: its slot is free again
    --async_in_flight_;
    if (--r.stale_async == 0) touch(g);
    return;
  }
  r.ring[size_t(slot)].timing = timing;
  --async_in_flight_;
  push(t_s, Kind::kStepEnd, g, slot, r.ring[size_t(slot)].epoch);
}

void ServingLoop::post_kv_arrived(uint64_t ticket, double t_s) {
  auto it = kv_.find(ticket);
  if (it == kv_.end()) throw Error("serving loop: unknown KV transfer " + std::to_string(ticket));
  --async_in_flight_;
  push(t_s, Kind::kKvArrived, it->second.to, 0, ticket);
}

LoopResult ServingLoop::run(LoopHost& host) {
  host_ = &host;
  now_ = host.now_s();
  const FaultPolicy& f = o_.faults;
  for (const Fault& x : f.events) {
    if (x.replica < 0 || x.replica >= int(reps_.size()))
      throw ConfigError("", 0, 0, "faults", "a replica in [0, " + std::to_string(reps_.size()) + ")",
                        std::to_string(x.replica));
    push(x.at_s, Kind::kFail, x.replica, 0, 0);
    if (x.repair_s < kInf) push(x.at_s + std::max(x.repair_s, f.detect_s), Kind::kRepair, x.replica, 0, 0);
  }
  if (f.mtbf_s > 0) {
    fault_rng_.resize(reps_.size());
    for (size_t g = 0; g < reps_.size(); ++g) {
      fault_rng_[g] = f.seed ^ (0x632be59bd9b4e019ull * (g + 1));
      push(next_failure_s(int(g), now_), Kind::kFail, int(g), 0, 1);
    }
  }
  std::optional<Request> pending = next_arrival();
  while (true) {
    const double t_event = events_.empty() ? kInf : events_.top().t_s;
    const double t_arrival = pending ? pending->arrival_s : kInf;
    const double t = std::min(t_event, t_arrival);
    if (t == kInf && async_in_flight_ == 0) break;
    // Only failures and repairs are left to come: the run is over.
    if (!pending && !events_.empty() && events_.top().kind >= Kind::kFail && events_.top().kind <= Kind::kRepair &&
        quiescent())
      break;
    // Time passes: jumps to the next event, or runs on the host's clock while its activities may post earlier ones.
    if (async_in_flight_ > 0 || !host.virtual_time())
      now_ = std::max(now_, host.wait_until(t));
    else
      now_ = std::max(now_, t);
    while (!events_.empty() && events_.top().t_s <= now_) {
      const Event e = events_.top();
      events_.pop();
      switch (e.kind) {
        case Kind::kStepEnd:
          step_end(e.replica, e.slot, e.ticket);
          break;
        case Kind::kFail:  // ticket 1: a random failure, repaired after mttr
          fail(e.replica);
          if (e.ticket == 1)
            push(now_ + std::max(o_.faults.mttr_s, o_.faults.detect_s), Kind::kRepair, e.replica, 0, 1);
          break;
        case Kind::kDetect:
          if (e.ticket == reps_[size_t(e.replica)].epoch) detect(e.replica);
          break;
        case Kind::kRepair:  // ticket 1: of a random failure, whose replica fails again later
          repair(e.replica, e.ticket == 1);
          break;
        case Kind::kRetry: {
          auto it = retries_.find(e.ticket);
          Request req = std::move(it->second);
          retries_.erase(it);
          arrive(std::move(req));
          break;
        }
        case Kind::kStage0:
          touch(e.replica);
          break;
        case Kind::kKvArrived: {
          auto it = kv_.find(e.ticket);
          KvInFlight kv = std::move(it->second);
          kv_.erase(it);
          Rep& r = reps_[size_t(kv.to)];
          if (r.down) {  // its decode replica failed meanwhile: the request starts over
            retry_or_fail(std::move(kv.handoff.request), std::move(kv.handoff.record), kv.to);
          } else if (std::optional<RequestRecord> rejected = r.sched->add_prefilled(std::move(kv.handoff), now_)) {
            emit(*rejected);
          }
          refresh(r);
          touch(kv.to);
          break;
        }
      }
    }
    while (pending && pending->arrival_s <= now_) {
      if (o_.stop && o_.stop->load(std::memory_order_relaxed) != 0) {
        result_.stopped_by = o_.stop->load();
        result_.stopped_at_s = now_;
        arrivals_done_ = true;
        pending.reset();
        break;
      }
      arrive(std::move(*pending));
      pending = next_arrival();
    }
    if (dirty_.size() > 1) std::sort(dirty_.begin(), dirty_.end());
    for (size_t i = 0; i < dirty_.size(); ++i) {  // try_start never adds to dirty_
      reps_[size_t(dirty_[i])].dirty = false;
      try_start(dirty_[i]);
    }
    dirty_.clear();
  }
  for (const Rep& r : reps_)
    if (!r.sched->idle())
      throw RuntimeFailure("serving ended with work left on replica " +
                           std::to_string(pool_first_[size_t(r.pool)] + r.index) + " (" +
                           std::to_string(r.sched->outstanding_requests()) + " requests): deadlock");
  result_.end_s = now_;
  host_ = nullptr;
  return result_;
}

}  // namespace parasol::serve

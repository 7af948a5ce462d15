#include "sim/serving.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include "core/common/error.hpp"
#include "core/serve/router.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"
#include "sim/step_runners.hpp"

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

namespace {

struct InFlight {
  serve::Iteration it;
  serve::StepTiming timing;
  double end_s = 0;
};

struct Replica {
  int pool = 0;
  int index = 0;   // within the pool (placement row)
  int global = 0;  // across pools (metrics, records)
  std::unique_ptr<serve::Scheduler> sched;
  sg4::MutexPtr mutex;
  sg4::ConditionVariablePtr cv;
  bool busy = false;     // !sched->idle(), as last seen
  bool waiting = false;  // blocked on cv (a notify is needed to wake it)
  double next_end_s = std::numeric_limits<double>::infinity();  // when it wakes next by itself (iteration end)
  // What its last completed iteration produced. Per replica, not shared: hand_off() creates an actor, a simcall
  // during which other replicas' actors run and complete their own iterations.
  serve::StepEvents events;
};

class Simulation {
 public:
  Simulation(const plan::Plan& plan, const spec::Cluster& cluster, serve::RequestSource& source,
             serve::MetricsCollector& metrics, const ServeOptions& o)
      : plan_(plan), source_(source), metrics_(metrics), o_(o), platform_(cluster) {
    if (plan.pools.empty()) throw ConfigError("the plan has no pools");
    if (plan.pools.size() > 2) throw ConfigError("a plan has one mixed pool or a prefill and a decode pool");
    kv_bytes_per_token_ = spec::kv_bytes_per_token(plan.model);
    for (size_t p = 0; p < plan.pools.size(); ++p) {
      const plan::Pool& pool = plan.pools[p];
      serve::SchedulerConfig cfg = p < o.schedulers.size() ? o.schedulers[p] : serve::SchedulerConfig::from_pool(pool);
      if (plan.disaggregated())
        cfg.role = pool.role == "prefill" ? serve::SchedulerRole::kPrefill : serve::SchedulerRole::kDecode;
      cfg.first_token_at_decode = o.first_token_at_decode;
      if (cfg.max_context == 0) cfg.max_context = plan.model.max_position;
      routers_.push_back(serve::make_router(o.router));
      loads_.emplace_back(pool.placement.size());
      pool_replicas_.emplace_back();
      if (p < o.runners.size() && o.runners[p]) {
        runners_.push_back(o.runners[p]);
      } else if (o.fidelity == spec::Fidelity::kNetwork) {
        network_.push_back(
            std::make_unique<NetworkStepRunner>(plan, static_cast<int>(p), platform_, o.algo, o.engine));
        runners_.push_back(network_.back().get());
      } else {
        analytic_.push_back(std::make_unique<AnalyticStepRunner>(plan, static_cast<int>(p), cluster, o.engine));
        runners_.push_back(analytic_.back().get());
      }
      for (size_t i = 0; i < pool.placement.size(); ++i) {
        auto r = std::make_unique<Replica>();
        r->pool = static_cast<int>(p);
        r->index = static_cast<int>(i);
        r->global = static_cast<int>(replicas_.size());
        r->sched = std::make_unique<serve::Scheduler>(cfg, r->global);
        r->mutex = sg4::Mutex::create();
        r->cv = sg4::ConditionVariable::create();
        pool_replicas_[p].push_back(r.get());
        replicas_.push_back(std::move(r));
      }
    }
    if (plan.disaggregated() && (plan.pools[0].role != "prefill" || plan.pools[1].role != "decode"))
      throw ConfigError("a disaggregated plan lists its prefill pool first, then its decode pool");
    // One replica whose steps do not run on the platform: only arrivals can interleave with its iterations.
    run_ahead_ = replicas_.size() == 1 && !plan.disaggregated() && network_.empty();
  }

  ServeResult run() {
    for (auto& r : replicas_) {
      Replica* rp = r.get();
      const int first_gpu = plan_.pools[rp->pool].placement[rp->index].at(0);
      sg4::Actor::create("replica-" + std::to_string(rp->global), platform_.gpu_host(first_gpu),
                         guarded([this, rp] { replica_loop(*rp); }));
    }
    sg4::Actor::create("arrivals", platform_.gpu_host(plan_.pools[0].placement.at(0).at(0)),
                       guarded([this] { arrivals(); }));
    sg4::Engine::get_instance()->run();
    if (failure_) std::rethrow_exception(failure_);
    if (busy_ != 0 || pending_kv_ != 0)
      throw RuntimeFailure("simulation ended with work left (" + std::to_string(busy_) + " busy replicas, " +
                           std::to_string(pending_kv_) + " KV transfers): deadlock");
    result_.end_s = std::max(result_.end_s, last_event_s_);
    result_.replicas = static_cast<int>(replicas_.size());
    for (const auto& a : analytic_) {
      result_.memo_hits += a->memo_hits();
      result_.memo_misses += a->memo_misses();
    }
    for (const auto& n : network_) {
      result_.flows += n->stats().flows.flows;
      result_.flow_bytes += n->stats().flows.bytes;
      result_.collectives += n->stats().collectives;
    }
    for (const auto& r : replicas_) {
      ServeResult::ReplicaEnd e;
      e.pool = r->pool;
      e.kv_used_blocks = r->sched->kv_used_blocks();
      e.kv_total_blocks = r->sched->kv_total_blocks();
      e.outstanding_requests = r->sched->outstanding_requests();
      e.stats = r->sched->stats();
      result_.replica_end.push_back(e);
    }
    const auto& lb = platform_.link_bytes();
    for (int e = 0; e < platform_.routes().edge_count(); ++e)
      for (int d = 0; d < 2; ++d)
        if (lb[2 * e + d] > 0)
          result_.links.push_back({platform_.link_name(e, d == 0), platform_.routes().edge(e).link.bw_Bps, lb[2 * e + d]});
    result_.link_usage_csv = link_usage_csv(platform_);
    result_.flow_trace_events = flow_trace_events(platform_);
    return result_;
  }

 private:
  // An exception escaping an actor would abort the process inside SimGrid. The first one is kept, every other actor
  // is killed so that the engine returns, and run() rethrows it: a bad input still ends in its ConfigError (exit 2).
  template <class F>
  std::function<void()> guarded(F body) {
    return [this, body]() mutable {
      try {
        body();
      } catch (const std::exception&) {
        if (!failure_) failure_ = std::current_exception();
        sg4::Actor::kill_all();
      }
    };
  }
  std::exception_ptr failure_;

  void emit(const serve::RequestRecord& rec) { emit(rec, sg4::Engine::get_clock()); }
  void emit(const serve::RequestRecord& rec, double now) {
    metrics_.on_request(rec);
    ++result_.requests;
    last_event_s_ = std::max(last_event_s_, now);
    if (o_.progress && o_.progress_every > 0 && result_.requests % o_.progress_every == 0) o_.progress(now, result_.requests);
  }

  void refresh(Replica& r) {
    auto& load = loads_[r.pool][r.index];
    load.outstanding_tokens = r.sched->outstanding_tokens();
    load.outstanding_requests = r.sched->outstanding_requests();
    const bool busy = !r.sched->idle();
    if (busy != r.busy) {
      busy_ += busy ? 1 : -1;
      r.busy = busy;
    }
  }

  void wake(Replica& r) {
    if (r.waiting) r.cv->notify_one();
  }

  // Whether an iteration or a KV transfer may end exactly now (then an arrival now must let it complete first).
  bool something_ends_at(double now) const {
    if (pending_kv_ > 0) return true;
    for (const auto& r : replicas_)
      if (r->next_end_s == now) return true;
    return false;
  }

  bool finished() const { return arrivals_done_ && busy_ == 0 && pending_kv_ == 0; }
  void maybe_finish() {
    if (!finished()) return;
    for (auto& r : replicas_)
      if (r->waiting) r->cv->notify_all();
  }

  void arrivals() {
    const int entry_pool = 0;  // mixed, or prefill when disaggregated
    int64_t admitted = 0;
    while (true) {
      if (o_.max_requests >= 0 && admitted >= o_.max_requests) break;
      if (o_.stop && o_.stop->load(std::memory_order_relaxed) != 0) {
        result_.stopped_by = o_.stop->load();
        result_.stopped_at_s = sg4::Engine::get_clock();
        break;
      }
      std::optional<serve::Request> req = source_.next();
      if (!req || req->arrival_s >= o_.duration_s) break;
      next_arrival_s_ = req->arrival_s;
      if (req->arrival_s > sg4::Engine::get_clock()) sg4::this_actor::sleep_until(req->arrival_s);
      if (something_ends_at(sg4::Engine::get_clock())) sg4::this_actor::yield();  // they complete first
      ++admitted;
      const double now = sg4::Engine::get_clock();
      const int idx = routers_[entry_pool]->route(*req, loads_[entry_pool]);
      if (idx < 0) {
        emit(serve::make_rejected(*req, now, "no replica alive"));
        continue;
      }
      Replica& r = *pool_replicas_[entry_pool][idx];
      if (auto rejected = r.sched->add(std::move(*req), now)) {
        emit(*rejected);
        continue;
      }
      refresh(r);
      wake(r);
    }
    arrivals_done_ = true;
    next_arrival_s_ = std::numeric_limits<double>::infinity();
    maybe_finish();
  }

  void complete(Replica& r, InFlight& f) { complete(r, f, sg4::Engine::get_clock()); }
  // `now`: the iteration's end (the clock, or ahead of it when replica_loop runs ahead).
  void complete(Replica& r, InFlight& f, double now) {
    serve::StepEvents& events = r.events;
    events.clear();
    r.sched->complete(f.it, now, events);
    ++result_.iterations;
    last_event_s_ = std::max(last_event_s_, now);
    serve::StepSample s;
    s.replica = r.global;
    s.start_s = f.it.start_s;
    s.end_s = now;
    s.seqs = static_cast<int32_t>(f.it.batch.seqs.size());
    s.prefill_tokens = f.it.prefill_tokens;
    s.decode_tokens = f.it.decode_tokens;
    s.preempted = f.it.preempted;
    s.flops = f.timing.flops;
    s.bytes = f.timing.bytes;
    s.kv_utilization = r.sched->kv_utilization();
    metrics_.on_step(s);
    metrics_.on_itl(events.itl_s);
    for (const auto& rec : events.finished) emit(rec, now);
    for (auto& h : events.handoffs) hand_off(r, std::move(h));
    refresh(r);
  }

  // KV of a finished prefill travels to a decode replica as flows between the two instances' GPUs.
  void hand_off(Replica& from, serve::Handoff h) {
    const int dpool = 1;
    const int idx = routers_[dpool]->route(h.request, loads_[dpool]);
    if (idx < 0) {
      emit(serve::make_rejected(h.request, sg4::Engine::get_clock(), "no decode replica alive"));
      return;
    }
    Replica& to = *pool_replicas_[dpool][idx];
    const double bytes = static_cast<double>(h.kv_tokens) * kv_bytes_per_token_;
    const auto& src = plan_.pools[from.pool].placement[from.index];
    const auto& dst = plan_.pools[to.pool].placement[to.index];
    const size_t n = std::max(src.size(), dst.size());
    std::map<std::pair<int, int>, double> acc;
    for (size_t i = 0; i < n; ++i)
      acc[{platform_.routes().gpu_vertex(src[i % src.size()]), platform_.routes().gpu_vertex(dst[i % dst.size()])}] +=
          bytes / static_cast<double>(n);
    auto fs = std::make_shared<FlowSet>();
    for (const auto& [k, b] : acc) fs->flows.push_back({k.first, k.second, b});
    ++pending_kv_;
    ++result_.kv_transfers;
    result_.kv_bytes += bytes;
    auto handoff = std::make_shared<serve::Handoff>(std::move(h));
    sg4::Actor::create("kv", platform_.gpu_host(src[0]), guarded([this, fs, handoff, &to] {
      FlowStats st;
      run_flows(platform_, *fs, &st);
      result_.flows += st.flows;
      result_.flow_bytes += st.bytes;
      --pending_kv_;
      if (auto rejected = to.sched->add_prefilled(std::move(*handoff), sg4::Engine::get_clock())) emit(*rejected);
      refresh(to);
      wake(to);
      maybe_finish();
    }));
  }

  // The replica's actor: complete what ended, start what can start (up to pp micro-batches in flight, the next one
  // when stage 0 is free), sleep until the next end or a wake-up. In-flight slots are a ring reused across
  // iterations, so the steady state allocates nothing.
  void replica_loop(Replica& r) {
    const int pp = std::max(1, plan_.pools[r.pool].config.pp);
    serve::StepRunner& runner = *runners_[r.pool];
    if (auto* net = dynamic_cast<NetworkStepRunner*>(&runner); net && pp > 1) {
      network_pipeline_loop(r, *net, pp);
      return;
    }
    std::vector<InFlight> ring(static_cast<size_t>(pp));
    size_t head = 0, count = 0;
    auto front = [&]() -> InFlight& { return ring[head]; };
    double stage0_free = 0, last_end = 0;
    std::unique_lock<sg4::Mutex> lock(*r.mutex);
    while (true) {
      double now = sg4::Engine::get_clock();
      while (count > 0 && front().end_s <= now) {
        complete(r, front());
        head = (head + 1) % ring.size();
        --count;
        maybe_finish();
      }
      bool started = false;
      while (static_cast<int>(count) < pp && now >= stage0_free) {
        InFlight& f = ring[(head + count) % ring.size()];
        if (!r.sched->schedule(now, f.it)) break;
        f.timing = runner.run(r.index, f.it.batch);
        if (f.timing.clock_advanced) {
          f.end_s = sg4::Engine::get_clock();
          stage0_free = f.end_s;
        } else {
          f.end_s = std::max(now + f.timing.total_s, last_end);
          const double stage0 = pp == 1 ? f.timing.total_s
                                : f.timing.stage_s.empty() ? f.timing.total_s / pp
                                                           : f.timing.stage_s.front();
          stage0_free = now + stage0;
        }
        last_end = f.end_s;
        ++count;
        started = true;
        if (pp == 1) break;
        now = sg4::Engine::get_clock();
      }
      // Run ahead (one replica, nothing else to interleave with): an iteration that ends before the next arrival
      // completes at its end time and the next one starts then, without a SimGrid event each. Nothing else can
      // happen in between, so the order of every record, sample and decision is the same as sleeping until it.
      if (run_ahead_ && pp == 1) {
        while (count == 1 && !front().timing.clock_advanced && front().end_s < next_arrival_s_) {
          const double t = front().end_s;
          complete(r, front(), t);
          head = (head + 1) % ring.size();
          --count;
          maybe_finish();
          InFlight& f = ring[(head + count) % ring.size()];
          if (!r.sched->schedule(t, f.it)) break;
          f.timing = runner.run(r.index, f.it.batch);
          f.end_s = std::max(t + f.timing.total_s, last_end);
          stage0_free = t + f.timing.total_s;
          last_end = f.end_s;
          ++count;
        }
      }
      if (started && count > 0 && front().end_s <= sg4::Engine::get_clock()) continue;
      if (count > 0) {
        double next = front().end_s;
        if (pp > 1 && static_cast<int>(count) < pp && stage0_free > now && r.sched->has_runnable())
          next = std::min(next, stage0_free);
        r.next_end_s = next;
        if (pp == 1) {
          sg4::this_actor::sleep_until(next);
        } else {
          r.waiting = true;
          r.cv->wait_until(lock, next);
          r.waiting = false;
        }
        continue;
      }
      r.next_end_s = std::numeric_limits<double>::infinity();
      if (r.sched->idle() && finished()) break;
      r.waiting = true;
      r.cv->wait(lock);
      r.waiting = false;
      if (r.sched->idle() && finished()) break;
    }
    r.next_end_s = std::numeric_limits<double>::infinity();
  }

  // Network mode with pp > 1: the same scheduling decisions as replica_loop's analytic path (up to pp micro-batches
  // in flight, the next one started when stage 0 is free, completed in order), but each micro-batch runs its step as
  // flows in its own short-lived actor, so micro-batches on different stages overlap in simulated time and share
  // links only where their flows really do. The micro-batch reports when its stage 0 is done (its time may be ahead
  // of the clock: the ranks' trailing compute is known) and when it ends; the replica's actor waits on its condition
  // variable for either. Like the analytic mode, a micro-batch's stage s does not wait for the previous micro-batch's
  // stage s (only its completion is ordered).
  struct MicroBatch {
    InFlight f;
    double stage0_s = std::numeric_limits<double>::infinity();
    bool done = false;
  };
  void network_pipeline_loop(Replica& r, NetworkStepRunner& net, int pp) {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    std::vector<MicroBatch> ring(static_cast<size_t>(pp));
    size_t head = 0, count = 0;
    int last_slot = -1;  // the micro-batch started last: its stage 0 gates the next one
    sg4::Host* host = platform_.gpu_host(plan_.pools[r.pool].placement[r.index].at(0));
    std::unique_lock<sg4::Mutex> lock(*r.mutex);
    while (true) {
      const double now = sg4::Engine::get_clock();
      while (count > 0 && ring[head].done) {
        complete(r, ring[head].f);
        head = (head + 1) % ring.size();
        --count;
        maybe_finish();
      }
      double stage0_free = last_slot < 0 ? 0.0 : ring[static_cast<size_t>(last_slot)].stage0_s;
      while (static_cast<int>(count) < pp && now >= stage0_free) {
        const size_t slot = (head + count) % ring.size();
        MicroBatch& mb = ring[slot];
        if (!r.sched->schedule(now, mb.f.it)) break;
        mb.done = false;
        mb.stage0_s = kInf;
        mb.f.end_s = kInf;
        last_slot = static_cast<int>(slot);
        stage0_free = kInf;
        ++count;
        sg4::Actor::create("micro-batch", host, guarded([this, &r, &net, &mb, slot] {
          mb.f.timing = net.run_micro_batch(r.index, static_cast<int>(slot), mb.f.it.batch, [this, &r, &mb](double t) {
            mb.stage0_s = t;
            wake(r);
          });
          mb.f.end_s = sg4::Engine::get_clock();
          mb.done = true;
          wake(r);
        }));
      }
      if (count > 0) {
        const bool gated = static_cast<int>(count) < pp && stage0_free > now && r.sched->has_runnable();
        r.next_end_s = gated ? stage0_free : kInf;
        r.waiting = true;
        if (gated && stage0_free < kInf)
          r.cv->wait_until(lock, stage0_free);
        else
          r.cv->wait(lock);
        r.waiting = false;
        continue;
      }
      r.next_end_s = kInf;
      if (r.sched->idle() && finished()) break;
      r.waiting = true;
      r.cv->wait(lock);
      r.waiting = false;
      if (r.sched->idle() && finished()) break;
    }
    r.next_end_s = kInf;
  }

  const plan::Plan& plan_;
  serve::RequestSource& source_;
  serve::MetricsCollector& metrics_;
  const ServeOptions& o_;
  Platform platform_;
  double kv_bytes_per_token_ = 0;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<std::vector<Replica*>> pool_replicas_;
  std::vector<std::unique_ptr<serve::Router>> routers_;
  std::vector<std::vector<serve::ReplicaLoad>> loads_;
  std::vector<std::unique_ptr<AnalyticStepRunner>> analytic_;
  std::vector<std::unique_ptr<NetworkStepRunner>> network_;
  std::vector<serve::StepRunner*> runners_;
  ServeResult result_;
  bool arrivals_done_ = false;
  double next_arrival_s_ = 0;  // of the request the arrivals actor waits for (infinity when none is left)
  bool run_ahead_ = false;     // replica_loop may run ahead of the clock (see there)
  int64_t busy_ = 0;
  int64_t pending_kv_ = 0;
  double last_event_s_ = 0;
};

}  // namespace

ServeResult simulate_serving(const plan::Plan& plan, const spec::Cluster& cluster, serve::RequestSource& source,
                             serve::MetricsCollector& metrics, const ServeOptions& options) {
  auto engine = make_engine(options.verbose);
  Simulation sim(plan, cluster, source, metrics, options);
  return sim.run();
}

}  // namespace parasol::sim

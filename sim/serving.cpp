#include "sim/serving.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <optional>

#include "core/common/error.hpp"
#include "core/serve/router.hpp"
#include "core/serve/serving_loop.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"
#include "sim/step_runners.hpp"

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The serving loop's host on SimGrid. The loop runs in one actor; SimGrid's clock follows it lazily (the loop jumps
// from event to event while nothing runs on the platform, and the clock catches up before anything starts there).
// Network-fidelity steps and KV transfers run as flows, each in its own short-lived actor, and post their end back to
// the loop, waking it from its condition variable.
class SimHost final : public serve::LoopHost {
 public:
  SimHost(const plan::Plan& plan, Platform& platform, std::vector<NetworkStepRunner*> network, ServeResult& result)
      : plan_(plan), platform_(platform), network_(std::move(network)), result_(result) {}

  bool virtual_time() const override { return true; }
  double now_s() override { return sg4::Engine::get_clock(); }
  double wait_until(double t_s) override {
    const double now = sg4::Engine::get_clock();
    if (posted_ || t_s <= now) {
      posted_ = false;
      return now;
    }
    std::unique_lock<sg4::Mutex> lock(*mutex_);
    waiting_ = true;
    if (t_s < kInf)
      cv_->wait_until(lock, t_s);
    else
      cv_->wait(lock);
    waiting_ = false;
    posted_ = false;
    return sg4::Engine::get_clock();
  }

  bool start_step(serve::ServingLoop& loop, int g, int slot, const plan::Batch& batch, double now_s) override {
    NetworkStepRunner* net = network_[size_t(loop.pool_of(g))];
    if (!net) return false;
    catch_up(now_s);
    const int pool = loop.pool_of(g), index = loop.index_in_pool(g);
    const bool pipelined = loop.pool(pool).pp > 1;
    sg4::Actor::create("micro-batch", platform_.gpu_host(plan_.pools[size_t(pool)].placement[size_t(index)].at(0)),
                       guarded([this, &loop, net, g, slot, index, pipelined, &batch] {
                         std::function<void(double)> stage0;
                         if (pipelined)
                           stage0 = [this, &loop, g, slot](double t) {
                             loop.post_stage0(g, slot, t);
                             notify();
                           };
                         const serve::StepTiming timing = net->run_micro_batch(index, slot, batch, stage0);
                         loop.post_step_done(g, slot, timing, sg4::Engine::get_clock());
                         notify();
                       }));
    return true;
  }

  // KV of a finished prefill travels to a decode replica as flows between the two instances' GPUs (both fidelities).
  void transfer_kv(serve::ServingLoop& loop, int from, int to, const serve::Handoff&, double bytes, uint64_t ticket,
                   double now_s) override {
    catch_up(now_s);
    const auto& src = plan_.pools[size_t(loop.pool_of(from))].placement[size_t(loop.index_in_pool(from))];
    const auto& dst = plan_.pools[size_t(loop.pool_of(to))].placement[size_t(loop.index_in_pool(to))];
    const size_t n = std::max(src.size(), dst.size());
    std::map<std::pair<int, int>, double> acc;
    for (size_t i = 0; i < n; ++i)
      acc[{platform_.routes().gpu_vertex(src[i % src.size()]), platform_.routes().gpu_vertex(dst[i % dst.size()])}] +=
          bytes / static_cast<double>(n);
    auto fs = std::make_shared<FlowSet>();
    for (const auto& [k, b] : acc) fs->flows.push_back({k.first, k.second, b});
    sg4::Actor::create("kv", platform_.gpu_host(src[0]), guarded([this, fs, &loop, ticket] {
                         FlowStats st;
                         run_flows(platform_, *fs, &st);
                         result_.flows += st.flows;
                         result_.flow_bytes += st.bytes;
                         loop.post_kv_arrived(ticket, sg4::Engine::get_clock());
                         notify();
                       }));
  }

  // An exception escaping an actor would abort the process inside SimGrid. The first one is kept, every other actor
  // is killed so that the engine returns, and the caller rethrows it: a bad input still ends in its ConfigError.
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
  std::exception_ptr failure() const { return failure_; }

 private:
  // Before anything starts on the platform at the loop's time, SimGrid's clock is brought there.
  void catch_up(double now_s) {
    if (now_s > sg4::Engine::get_clock()) sg4::this_actor::sleep_until(now_s);
  }
  void notify() {
    posted_ = true;
    if (waiting_) cv_->notify_one();
  }

  const plan::Plan& plan_;
  Platform& platform_;
  std::vector<NetworkStepRunner*> network_;  // per pool; null: the pool's steps are costed synchronously
  ServeResult& result_;
  sg4::MutexPtr mutex_ = sg4::Mutex::create();
  sg4::ConditionVariablePtr cv_ = sg4::ConditionVariable::create();
  bool waiting_ = false;
  bool posted_ = false;  // something was posted since the loop last looked
  std::exception_ptr failure_;
};

}  // namespace

ServeOptions serve_options(const spec::Scenario& s, const plan::Plan& plan, uint64_t seed) {
  ServeOptions o;
  o.engine = &s.engine;
  for (size_t p = 0; p < plan.pools.size(); ++p)
    o.schedulers.push_back(serve::scheduler_config(plan, static_cast<int>(p), s));
  o.router = serve::router_config(s, seed);
  o.first_token_at_decode = s.sim.first_token == spec::FirstToken::kDecode;
  return o;
}

serve::FaultPolicy fault_policy(const spec::Faults& f, const plan::Plan& plan, const std::string& file) {
  serve::FaultPolicy p;
  p.detect_s = f.detect_s;
  p.retries = f.retries;
  p.backoff_s = f.backoff_s;
  p.seed = f.seed;
  int replicas = 0;
  for (const plan::Pool& pool : plan.pools) replicas += static_cast<int>(pool.placement.size());
  for (size_t k = 0; k < f.events.size(); ++k) {
    const spec::FaultEvent& e = f.events[k];
    serve::Fault x;
    x.at_s = e.at_s;
    if (e.repair_after_s >= 0) x.repair_s = e.repair_after_s;
    const std::string key = "faults.events[" + std::to_string(k) + "]";
    if (e.replica >= 0) {
      if (e.replica >= replicas)
        throw ConfigError(file, 0, 0, key + ".replica", "a replica of the plan, in [0, " + std::to_string(replicas) + ")",
                          std::to_string(e.replica));
      x.replica = e.replica;
    } else {
      x.replica = -1;
      int g = 0;
      for (const plan::Pool& pool : plan.pools)
        for (const auto& row : pool.placement) {
          if (std::find(row.begin(), row.end(), e.gpu) != row.end()) x.replica = g;
          ++g;
        }
      if (x.replica < 0)
        throw ConfigError(file, 0, 0, key + ".gpu", "a GPU one of the plan's replicas runs on", std::to_string(e.gpu));
    }
    p.events.push_back(x);
  }
  if (f.gpu_mtbf_s > 0) {
    p.mtbf_s = f.gpu_mtbf_s / std::max(1, plan.pools.at(0).config.instance_size());
    p.mttr_s = f.mttr_s;
  }
  return p;
}

ServeResult simulate_serving(const plan::Plan& plan, const spec::Cluster& cluster, serve::RequestSource& source,
                             serve::MetricsCollector& metrics, const ServeOptions& o) {
  auto engine = make_engine(o.verbose);
  if (plan.pools.empty()) throw ConfigError("the plan has no pools");
  if (plan.pools.size() > 2) throw ConfigError("a plan has one mixed pool or a prefill and a decode pool");
  if (plan.disaggregated() && (plan.pools[0].role != "prefill" || plan.pools[1].role != "decode"))
    throw ConfigError("a disaggregated plan lists its prefill pool first, then its decode pool");
  Platform platform(cluster);
  std::vector<std::unique_ptr<serve::Scheduler>> schedulers;
  std::vector<std::unique_ptr<serve::Router>> routers;
  std::vector<std::unique_ptr<serve::AnalyticStepRunner>> analytic;
  std::vector<std::unique_ptr<NetworkStepRunner>> network;
  std::vector<NetworkStepRunner*> network_of_pool;
  std::vector<serve::LoopPool> pools;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    const plan::Pool& pool = plan.pools[p];
    serve::SchedulerConfig cfg = p < o.schedulers.size() ? o.schedulers[p] : serve::SchedulerConfig::from_pool(pool);
    if (plan.disaggregated())
      cfg.role = pool.role == "prefill" ? serve::SchedulerRole::kPrefill : serve::SchedulerRole::kDecode;
    cfg.first_token_at_decode = o.first_token_at_decode;
    if (cfg.max_context == 0) cfg.max_context = plan.model.max_position;
    if (cfg.sliding_window == 0) cfg.sliding_window = plan.model.sliding_window;
    serve::LoopPool lp;
    lp.pp = std::max(1, pool.config.pp);
    serve::RouterConfig rc = o.router;
    rc.seed = o.router.seed + p;  // each pool's own draws
    routers.push_back(serve::make_router(rc));
    lp.router = routers.back().get();
    NetworkStepRunner* net = nullptr;
    if (p < o.runners.size() && o.runners[p]) {
      lp.runner = o.runners[p];
    } else if (o.fidelity == spec::Fidelity::kNetwork) {
      network.push_back(std::make_unique<NetworkStepRunner>(plan, static_cast<int>(p), platform, o.algo, o.engine));
      net = network.back().get();
      lp.runner = net;
    } else {
      analytic.push_back(std::make_unique<serve::AnalyticStepRunner>(plan, static_cast<int>(p), cluster, o.engine));
      lp.runner = analytic.back().get();
    }
    network_of_pool.push_back(net);
    for (size_t i = 0; i < pool.placement.size(); ++i) {
      schedulers.push_back(std::make_unique<serve::Scheduler>(cfg, static_cast<int>(schedulers.size())));
      lp.schedulers.push_back(schedulers.back().get());
    }
    pools.push_back(std::move(lp));
  }
  serve::LoopOptions lo;
  lo.duration_s = o.duration_s;
  lo.max_requests = o.max_requests;
  lo.stop = o.stop;
  lo.progress = o.progress;
  lo.progress_every = o.progress_every;
  lo.kv_bytes_per_token = spec::kv_bytes_per_token(plan.model);
  lo.on_iteration = o.on_iteration;
  lo.on_record = o.on_record;
  lo.faults = o.faults;
  serve::ServingLoop loop(std::move(pools), source, metrics, std::move(lo));

  ServeResult result;
  SimHost host(plan, platform, network_of_pool, result);
  serve::LoopResult lr;
  sg4::Actor::create("serving", platform.gpu_host(plan.pools[0].placement.at(0).at(0)),
                     host.guarded([&] { lr = loop.run(host); }));
  sg4::Engine::get_instance()->run();
  if (host.failure()) std::rethrow_exception(host.failure());
  result.stopped_by = lr.stopped_by;
  result.stopped_at_s = lr.stopped_at_s;
  result.end_s = lr.end_s;
  result.iterations = lr.iterations;
  result.requests = lr.requests;
  result.kv_transfers = lr.kv_transfers;
  result.kv_bytes = lr.kv_bytes;
  result.failures = lr.failures;
  result.retried = lr.retried;
  result.failed_requests = lr.failed_requests;
  result.lost_prefill_tokens = lr.lost_prefill_tokens;
  result.replicas = static_cast<int>(schedulers.size());
  for (const auto& a : analytic) {
    result.memo_hits += a->memo_hits();
    result.memo_misses += a->memo_misses();
  }
  for (const auto& n : network) {
    result.flows += n->stats().flows.flows;
    result.flow_bytes += n->stats().flows.bytes;
    result.collectives += n->stats().collectives;
  }
  for (size_t g = 0; g < schedulers.size(); ++g) {
    const serve::Scheduler& s = *schedulers[g];
    ServeResult::ReplicaEnd e;
    e.pool = loop.pool_of(static_cast<int>(g));
    e.kv_used_blocks = s.kv_used_blocks();
    e.kv_total_blocks = s.kv_total_blocks();
    e.outstanding_requests = s.outstanding_requests();
    e.stats = s.stats();
    result.replica_end.push_back(e);
  }
  const auto& lb = platform.link_bytes();
  for (int e = 0; e < platform.routes().edge_count(); ++e)
    for (int d = 0; d < 2; ++d)
      if (lb[2 * e + d] > 0)
        result.links.push_back({platform.link_name(e, d == 0), platform.routes().edge(e).link.bw_Bps, lb[2 * e + d]});
  result.link_usage_csv = link_usage_csv(platform);
  result.flow_trace_events = flow_trace_events(platform);
  return result;
}

}  // namespace parasol::sim

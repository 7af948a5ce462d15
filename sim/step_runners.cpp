#include "sim/step_runners.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "core/common/error.hpp"

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

NetworkStepRunner::NetworkStepRunner(const plan::Plan& plan, int pool, Platform& platform, plan::CollectiveAlgo algo,
                                     const spec::Engine* engine)
    : plan_(plan), pool_(pool), platform_(platform), algo_(algo), engine_(engine),
      builder_(plan, pool, engine ? plan::step_options(*engine, plan, pool, platform.cluster()) : plan::StepOptions{}),
      cost_(plan, platform.cluster(), [&] {
        cost::CostOptions o;
        o.engine = engine;
        return o;
      }()) {
  auto it = platform.cluster().gpu_types.find(plan.gpu_type);
  if (it != platform.cluster().gpu_types.end()) efficiency_ = it->second.eff.comm_efficiency;
}

const FlowSet& NetworkStepRunner::flows_for(const plan::Step& step, int replica, const plan::Op& op, int group,
                                            const std::vector<double>* a2a) {
  const auto& place = plan_.pools[pool_].placement.at(replica);
  Collective c;
  c.kind = coll_kind_of(op.kind);
  c.bytes = op.comm_bytes;
  c.algo = op.algo != plan::CollectiveAlgo::kAuto ? op.algo : algo_;
  c.efficiency = efficiency_;
  c.dtype = op.dtype;
  if (engine_ && engine_->custom_allreduce.enabled) {  // the engine's own all-reduce, as the analytic cost model
    c.custom_allreduce_max_bytes = engine_->custom_allreduce.max_bytes;
    c.custom_allreduce_max_gpus = engine_->custom_allreduce.max_gpus;
  }
  if (a2a) {
    for (int r : step.groups[group].ranks) c.gpus.push_back(place.at(r));
    c.a2a_bytes = *a2a;
    // Not cached: per-pair bytes change with the routing of every step.
    static thread_local FlowSet scratch;
    scratch = plan_collective(c, platform_.routes());
    return scratch;
  }
  const auto key = std::make_tuple(replica, group, static_cast<int>(c.kind), c.bytes);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  if (group >= 0) {
    for (int r : step.groups[group].ranks) c.gpus.push_back(place.at(r));
  }
  if (cache_.size() > 100000) cache_.clear();
  return cache_.emplace(key, plan_collective(c, platform_.routes())).first->second;
}

serve::StepTiming NetworkStepRunner::run(int replica, const plan::Batch& batch) {
  return run_micro_batch(replica, 0, batch, {});
}

serve::StepTiming NetworkStepRunner::run_micro_batch(int replica, int slot, const plan::Batch& batch,
                                                     const std::function<void(double)>& stage0_done) {
  const double t0 = sg4::Engine::get_clock();
  // run() waits on flows, so other actors (replicas, micro-batches) enter it meanwhile: one step per (replica, slot).
  plan::Step& step = steps_[{replica, slot}];
  builder_.build(batch, step);
  const cost::StepCost sc = cost_.cost(step);
  const auto& place = plan_.pools[pool_].placement.at(replica);
  const int R = static_cast<int>(step.ranks.size());
  std::vector<size_t> pc(R, 0);
  std::vector<double> ready(R, t0);
  std::vector<bool> blocked(R, false);
  // A GPU runs a micro-batch's part (its kernels and NCCL sends and receives, issued on one stream) after the parts of
  // the replica's earlier micro-batches: rank r of this micro-batch starts once every earlier one is done on rank r,
  // so the pipeline stages work as a flow shop, as in the analytic mode. Until then the rank is gated.
  Gates& gates = gates_[replica];
  if (gates.finished.size() != static_cast<size_t>(R)) {
    gates.finished.assign(static_cast<size_t>(R), gates.started);
    gates.free_s.assign(static_cast<size_t>(R), 0.0);
  }
  const int64_t seq = gates.started++;
  std::vector<char> admitted(static_cast<size_t>(R), 0), done(static_cast<size_t>(R), 0);
  // A rendezvous: the k-th op of a rank on a group (collective) or with a peer (send/recv).
  struct Meeting {
    std::vector<int> arrived;
  };
  std::map<std::pair<int64_t, int>, Meeting> meetings;
  std::vector<std::map<int64_t, int>> seen(R);
  struct Started {
    double start_s;
    std::vector<int> members;
    FlowSet flows;
  };
  std::vector<Started> scheduled;  // ready to start at start_s
  struct Active {
    std::vector<int> members;
    double extra_s;
    size_t left;
  };
  std::vector<Active> active;
  std::vector<sg4::CommPtr> comms;
  std::vector<size_t> comm_owner;

  auto members_of = [&](int r, const plan::Op& op) -> std::pair<int64_t, std::vector<int>> {
    if (op.kind == plan::OpKind::kSend || op.kind == plan::OpKind::kRecv) {
      const int a = std::min(r, op.peer), b = std::max(r, op.peer);
      return {-1 - (static_cast<int64_t>(a) * R + b), {a, b}};
    }
    return {op.group, step.groups.at(op.group).ranks};
  };
  bool stage0_signalled = !stage0_done;
  auto check_stage0 = [&] {  // every stage-0 rank past its last op: report when its last one ends
    if (stage0_signalled) return;
    double end = t0;
    for (int r = 0; r < R; ++r) {
      if (step.ranks[r].stage != 0) continue;
      if (pc[r] < step.ranks[r].ops.size()) return;
      end = std::max(end, ready[r]);
    }
    stage0_signalled = true;
    // As the analytic runner: the engine's CPU work of this iteration holds the next micro-batch back.
    stage0_done(end + (engine_ ? sc.engine_s : 0.0));
  };
  auto release = [&](const std::vector<int>& members, double t) {
    for (int m : members) {
      ready[m] = t;
      ++pc[m];
      blocked[m] = false;
    }
  };

  while (true) {
    // Run every unblocked rank up to its next communication.
    bool gated = false;
    for (int r = 0; r < R; ++r) {
      if (blocked[r] || done[r]) continue;
      const size_t ur = static_cast<size_t>(r);
      if (!admitted[ur]) {
        if (gates.finished[ur] < seq) {
          gated = true;
          continue;
        }
        admitted[ur] = 1;
        ready[r] = std::max(ready[r], gates.free_s[ur]);
      }
      const auto& ops = step.ranks[r].ops;
      while (pc[r] < ops.size() && !plan::is_communication(ops[pc[r]].kind)) {
        ready[r] += sc.ranks[r].ops[pc[r]].time.time_s;
        ++pc[r];
      }
      if (pc[r] >= ops.size()) {  // its part is done: the next micro-batch may have this GPU
        done[ur] = 1;
        gates.finished[ur] = seq + 1;
        gates.free_s[ur] = ready[r];
        if (gates.cv) gates.cv->notify_all();
        continue;
      }
      blocked[r] = true;
      const plan::Op& op = ops[pc[r]];
      auto [id, members] = members_of(r, op);
      const int k = seen[r][id]++;
      Meeting& m = meetings[{id, k}];
      m.arrived.push_back(r);
      if (m.arrived.size() < members.size()) continue;
      double start = 0;
      for (int x : members) start = std::max(start, ready[x]);
      FlowSet fs;
      if (op.kind == plan::OpKind::kSend || op.kind == plan::OpKind::kRecv) {
        const int a = members[0], b = members[1];
        const int from = step.ranks[a].ops[pc[a]].kind == plan::OpKind::kSend ? a : b;
        const int to = from == a ? b : a;
        const plan::Op& send = step.ranks[from].ops[pc[from]];
        const int gv = platform_.routes().gpu_vertex(place.at(from)), hv = platform_.routes().gpu_vertex(place.at(to));
        if (gv != hv) fs = p2p_flows(place.at(from), place.at(to), send.comm_bytes, platform_.routes());
      } else if (op.kind == plan::OpKind::kAllToAll) {
        const auto& grp = step.groups.at(op.group).ranks;
        std::vector<double> matrix;
        for (int x : grp) {
          const auto& row = step.ranks[x].ops[pc[x]].a2a_send_bytes;
          if (row.size() != grp.size()) throw RuntimeFailure("all-to-all op without per-member bytes");
          matrix.insert(matrix.end(), row.begin(), row.end());
        }
        fs = flows_for(step, replica, op, op.group, &matrix);
      } else {
        fs = flows_for(step, replica, op, op.group, nullptr);
      }
      meetings.erase({id, k});
      ++stats_.collectives;
      scheduled.push_back({start, members, std::move(fs)});
    }
    check_stage0();
    bool all_done = scheduled.empty() && active.empty() && !gated;
    for (int r = 0; r < R && all_done; ++r)
      if (pc[r] < step.ranks[r].ops.size()) all_done = false;
    if (all_done) break;

    // Start what is due, in time order.
    std::stable_sort(scheduled.begin(), scheduled.end(),
                     [](const Started& a, const Started& b) { return a.start_s < b.start_s; });
    const double now = sg4::Engine::get_clock();
    if (!scheduled.empty() && scheduled.front().start_s <= now) {
      Started s = std::move(scheduled.front());
      scheduled.erase(scheduled.begin());
      size_t started = 0;
      platform_.begin_flow_group(algo_name(s.flows.algo));  // names the flows in the trace (sim/link_usage.hpp)
      for (const Flow& f : s.flows.flows) {
        if (f.src == f.dst || f.bytes <= 0) continue;
        const auto bytes = static_cast<uint64_t>(std::llround(f.bytes));
        comms.push_back(sg4::Comm::sendto_async(platform_.host(f.src), platform_.host(f.dst), bytes));
        comm_owner.push_back(active.size());
        platform_.account(f.src, f.dst, static_cast<double>(bytes));
        stats_.flows.flows += 1;
        stats_.flows.bytes += static_cast<double>(bytes);
        ++started;
      }
      if (started == 0) {
        release(s.members, now + s.flows.extra_latency_s);
      } else {
        active.push_back({std::move(s.members), s.flows.extra_latency_s, started});
      }
      continue;
    }
    if (comms.empty()) {
      if (gated) {  // an earlier micro-batch holds a GPU this one needs: wait for it (or for what is due)
        if (!gates.cv) {
          gates.cv = sg4::ConditionVariable::create();
          gates.mutex = sg4::Mutex::create();
        }
        std::unique_lock<sg4::Mutex> lock(*gates.mutex);
        if (scheduled.empty())
          gates.cv->wait(lock);
        else
          gates.cv->wait_until(lock, scheduled.front().start_s);
        continue;
      }
      if (scheduled.empty()) throw RuntimeFailure("network step deadlocked (unmatched collectives or send/recv)");
      sg4::this_actor::sleep_until(scheduled.front().start_s);
      continue;
    }
    const double timeout = scheduled.empty() ? -1.0 : scheduled.front().start_s - now;
    const ssize_t idx = sg4::Comm::wait_any_for(comms, timeout);
    if (idx < 0) continue;  // the next collective is due
    const size_t owner = comm_owner[idx];
    comms.erase(comms.begin() + idx);
    comm_owner.erase(comm_owner.begin() + idx);
    if (--active[owner].left == 0) {
      release(active[owner].members, sg4::Engine::get_clock() + active[owner].extra_s);
      // Keep indices stable: leave an empty slot (active is per step and small).
      active[owner].members.clear();
    }
    bool any = false;
    for (const auto& a : active) any = any || a.left > 0;
    if (!any) {
      active.clear();
      comm_owner.clear();
    }
  }
  double end = t0;
  for (double t : ready) end = std::max(end, t);
  if (engine_) {  // as CostModel: the host's launch floor, then the engine's CPU work once per iteration
    end = std::max(end, t0 + sc.launch_floor_s);
    end = t0 + cost::engine_step_s(*engine_, end - t0, sc.engine_cpu_s, plan_.pools[pool_].config.pp);
  }
  if (end > sg4::Engine::get_clock()) sg4::this_actor::sleep_until(end);
  ++stats_.steps;
  serve::StepTiming t;
  t.total_s = sg4::Engine::get_clock() - t0;
  plan::step_work(step, t.flops, t.bytes);
  t.clock_advanced = true;
  return t;
}

}  // namespace parasol::sim

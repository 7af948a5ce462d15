#include "sim/step_runners.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/common/error.hpp"

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

void step_work(const plan::Step& step, double& flops, double& bytes) {
  flops = 0;
  bytes = 0;
  for (const auto& r : step.ranks)
    for (const auto& op : r.ops) {
      flops += op.flops;
      bytes += op.bytes;
    }
}

namespace {

// Per-stage busy time: the latest finish of the stage's ranks minus the earliest start of their first op.
std::vector<double> stage_times(const plan::Step& step, const cost::StepCost& sc, int pp) {
  if (pp <= 1) return {};
  std::vector<double> first(pp, std::numeric_limits<double>::infinity()), last(pp, 0.0);
  for (size_t i = 0; i < step.ranks.size(); ++i) {
    const int s = step.ranks[i].stage;
    if (s < 0 || s >= pp || sc.ranks[i].ops.empty()) continue;
    first[s] = std::min(first[s], sc.ranks[i].ops.front().start_s);
    last[s] = std::max(last[s], sc.ranks[i].finish_s);
  }
  std::vector<double> out(pp, 0.0);
  for (int s = 0; s < pp; ++s) out[s] = std::isfinite(first[s]) ? last[s] - first[s] : 0.0;
  // Stage 0 frees up when it finished its part, measured from the step's start.
  out[0] = last[0];
  return out;
}

uint64_t fnv(const std::vector<int64_t>& v) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t x : v) {
    h ^= static_cast<uint64_t>(x);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

AnalyticStepRunner::AnalyticStepRunner(const plan::Plan& plan, int pool, const spec::Cluster& cluster)
    : builder_(plan, pool), cost_(plan, cluster, [&] {
        cost::CostOptions o;
        o.instance = 0;
        return o;
      }()),
      pp_(plan.pools.at(pool).config.pp) {}

serve::StepTiming AnalyticStepRunner::run(int /*replica*/, const plan::Batch& batch) {
  // Every instance of a pool runs the same program on identical hardware: the replica does not enter the key.
  key_.clear();
  for (const auto& s : batch.seqs) {
    key_.push_back(s.new_tokens);
    key_.push_back(s.context);
    key_.push_back(s.attn_group);
  }
  const uint64_t h = fnv(key_);
  auto& bucket = memo_[h];
  for (const Entry& e : bucket)
    if (e.key == key_) {
      ++hits_;
      return e.timing;
    }
  ++misses_;
  builder_.build(batch, step_);
  const cost::StepCost sc = cost_.cost(step_);
  serve::StepTiming t;
  t.total_s = sc.total_s;
  t.stage_s = stage_times(step_, sc, pp_);
  step_work(step_, t.flops, t.bytes);
  if (entries_ > 2000000) {  // bound memory on endless distinct shapes
    memo_.clear();
    entries_ = 0;
  }
  memo_[h].push_back({key_, t});
  ++entries_;
  return t;
}

NetworkStepRunner::NetworkStepRunner(const plan::Plan& plan, int pool, Platform& platform, plan::CollectiveAlgo algo)
    : plan_(plan), pool_(pool), platform_(platform), algo_(algo), builder_(plan, pool),
      cost_(plan, platform.cluster()) {
  auto it = platform.cluster().gpu_types.find(plan.gpu_type);
  if (it != platform.cluster().gpu_types.end()) efficiency_ = it->second.eff.comm_efficiency;
}

const FlowSet& NetworkStepRunner::flows_for(int replica, const plan::Op& op, int group, const std::vector<double>* a2a) {
  const auto& place = plan_.pools[pool_].placement.at(replica);
  Collective c;
  c.kind = coll_kind_of(op.kind);
  c.bytes = op.comm_bytes;
  c.algo = op.algo != plan::CollectiveAlgo::kAuto ? op.algo : algo_;
  c.efficiency = efficiency_;
  if (a2a) {
    for (int r : step_.groups[group].ranks) c.gpus.push_back(place.at(r));
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
    for (int r : step_.groups[group].ranks) c.gpus.push_back(place.at(r));
  }
  if (cache_.size() > 100000) cache_.clear();
  return cache_.emplace(key, plan_collective(c, platform_.routes())).first->second;
}

serve::StepTiming NetworkStepRunner::run(int replica, const plan::Batch& batch) {
  const double t0 = sg4::Engine::get_clock();
  builder_.build(batch, step_);
  const cost::StepCost sc = cost_.cost(step_);
  const auto& place = plan_.pools[pool_].placement.at(replica);
  const int R = static_cast<int>(step_.ranks.size());
  std::vector<size_t> pc(R, 0);
  std::vector<double> ready(R, t0);
  std::vector<bool> blocked(R, false);
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
    return {op.group, step_.groups.at(op.group).ranks};
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
    for (int r = 0; r < R; ++r) {
      if (blocked[r]) continue;
      const auto& ops = step_.ranks[r].ops;
      while (pc[r] < ops.size() && !plan::is_communication(ops[pc[r]].kind)) {
        ready[r] += sc.ranks[r].ops[pc[r]].time.time_s;
        ++pc[r];
      }
      if (pc[r] >= ops.size()) continue;
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
        const int from = step_.ranks[a].ops[pc[a]].kind == plan::OpKind::kSend ? a : b;
        const int to = from == a ? b : a;
        const plan::Op& send = step_.ranks[from].ops[pc[from]];
        const int gv = platform_.routes().gpu_vertex(place.at(from)), hv = platform_.routes().gpu_vertex(place.at(to));
        if (gv != hv) fs.flows.push_back({gv, hv, send.comm_bytes / efficiency_});
      } else if (op.kind == plan::OpKind::kAllToAll) {
        const auto& grp = step_.groups.at(op.group).ranks;
        std::vector<double> matrix;
        for (int x : grp) {
          const auto& row = step_.ranks[x].ops[pc[x]].a2a_send_bytes;
          if (row.size() != grp.size()) throw RuntimeFailure("all-to-all op without per-member bytes");
          matrix.insert(matrix.end(), row.begin(), row.end());
        }
        fs = flows_for(replica, op, op.group, &matrix);
      } else {
        fs = flows_for(replica, op, op.group, nullptr);
      }
      meetings.erase({id, k});
      ++stats_.collectives;
      scheduled.push_back({start, members, std::move(fs)});
    }
    bool all_done = scheduled.empty() && active.empty();
    for (int r = 0; r < R && all_done; ++r)
      if (pc[r] < step_.ranks[r].ops.size()) all_done = false;
    if (all_done) break;

    // Start what is due, in time order.
    std::stable_sort(scheduled.begin(), scheduled.end(),
                     [](const Started& a, const Started& b) { return a.start_s < b.start_s; });
    const double now = sg4::Engine::get_clock();
    if (!scheduled.empty() && scheduled.front().start_s <= now) {
      Started s = std::move(scheduled.front());
      scheduled.erase(scheduled.begin());
      size_t started = 0;
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
  if (end > sg4::Engine::get_clock()) sg4::this_actor::sleep_until(end);
  ++stats_.steps;
  serve::StepTiming t;
  t.total_s = sg4::Engine::get_clock() - t0;
  step_work(step_, t.flops, t.bytes);
  t.clock_advanced = true;
  return t;
}

}  // namespace parasol::sim

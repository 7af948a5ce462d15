#include "core/serve/event_loop.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <queue>

namespace parasol::serve {
namespace {

enum class EventKind : uint8_t { kStepEnd = 0, kStageFree = 1 };

struct Event {
  double t_s;
  EventKind kind;
  int replica;
  uint64_t seq;  // insertion order: the last tie-breaker, so the order never depends on the heap's internals
  bool operator>(const Event& o) const {
    if (t_s != o.t_s) return t_s > o.t_s;
    if (kind != o.kind) return kind > o.kind;
    if (replica != o.replica) return replica > o.replica;
    return seq > o.seq;
  }
};

struct InFlight {
  Iteration it;
  StepTiming timing;
  double end_s = 0;
};

struct ReplicaState {
  std::deque<InFlight> in_flight;
  std::vector<Iteration> spare;  // completed iterations, reused so steady state allocates nothing
  double stage0_free_s = 0;  // when the first pipeline stage can take the next micro-batch
  double last_end_s = 0;     // micro-batches leave the pipeline in order
};

}  // namespace

EventLoopResult run_event_loop(RequestSource& source, Router& router, std::vector<Scheduler>& replicas,
                               StepRunner& runner, MetricsCollector& metrics, const EventLoopOptions& options) {
  const int pp = std::max(options.pp, 1);
  const size_t n = replicas.size();
  std::vector<ReplicaLoad> loads(n);
  std::vector<ReplicaState> state(n);
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events;
  uint64_t event_seq = 0;
  EventLoopResult result;
  StepEvents step_events;
  double now = 0;

  auto emit = [&](const RequestRecord& rec) {
    metrics.on_request(rec);
    ++result.requests;
    if (options.progress && options.progress_every > 0 && result.requests % options.progress_every == 0) {
      options.progress(now, result.requests);
    }
  };
  auto refresh = [&](size_t r) {
    loads[r].outstanding_tokens = replicas[r].outstanding_tokens();
    loads[r].outstanding_requests = replicas[r].outstanding_requests();
  };
  auto try_start = [&](size_t r) {
    ReplicaState& st = state[r];
    while (int(st.in_flight.size()) < pp && now >= st.stage0_free_s) {
      InFlight f;
      if (!st.spare.empty()) {
        f.it = std::move(st.spare.back());
        st.spare.pop_back();
      }
      if (!replicas[r].schedule(now, f.it)) {
        st.spare.push_back(std::move(f.it));
        return;
      }
      f.timing = runner.run(int(r), f.it.batch);
      f.end_s = std::max(now + f.timing.total_s, st.last_end_s);
      st.last_end_s = f.end_s;
      const double stage0 = pp == 1 ? f.timing.total_s
                            : f.timing.stage_s.empty() ? f.timing.total_s / pp
                                                       : f.timing.stage_s.front();
      st.stage0_free_s = now + stage0;
      events.push({f.end_s, EventKind::kStepEnd, int(r), event_seq++});
      if (pp > 1) events.push({st.stage0_free_s, EventKind::kStageFree, int(r), event_seq++});
      st.in_flight.push_back(std::move(f));
      if (pp == 1) return;
    }
  };

  std::optional<Request> pending = source.next();
  const double inf = std::numeric_limits<double>::infinity();
  while (true) {
    const double t_event = events.empty() ? inf : events.top().t_s;
    const double t_arrival = pending ? pending->arrival_s : inf;
    if (t_event == inf && t_arrival == inf) break;
    if (t_event <= t_arrival) {
      const Event e = events.top();
      events.pop();
      now = e.t_s;
      const auto r = size_t(e.replica);
      if (e.kind == EventKind::kStepEnd) {
        ReplicaState& st = state[r];
        InFlight f = std::move(st.in_flight.front());
        st.in_flight.pop_front();
        step_events.clear();
        replicas[r].complete(f.it, now, step_events);
        ++result.iterations;
        StepSample s;
        s.replica = int(r);
        s.start_s = f.it.start_s;
        s.end_s = now;
        s.seqs = int32_t(f.it.batch.seqs.size());
        s.prefill_tokens = f.it.prefill_tokens;
        s.decode_tokens = f.it.decode_tokens;
        s.preempted = f.it.preempted;
        s.flops = f.timing.flops;
        s.bytes = f.timing.bytes;
        s.kv_utilization = replicas[r].kv_utilization();
        metrics.on_step(s);
        metrics.on_itl(step_events.itl_s);
        for (const RequestRecord& rec : step_events.finished) emit(rec);
        st.spare.push_back(std::move(f.it));
        refresh(r);
      }
      try_start(r);
      continue;
    }
    now = t_arrival;
    Request req = std::move(*pending);
    pending = source.next();
    const int r = router.route(req, loads);
    if (r < 0) {
      emit(make_rejected(req, now, "no replica alive"));
      continue;
    }
    if (std::optional<RequestRecord> rejected = replicas[size_t(r)].add(std::move(req), now)) {
      emit(*rejected);
      continue;
    }
    refresh(size_t(r));
    try_start(size_t(r));
  }
  result.end_s = now;
  return result;
}

}  // namespace parasol::serve

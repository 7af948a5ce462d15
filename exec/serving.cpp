#include "exec/serving.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "core/common/error.hpp"
#include "core/cost/calibration.hpp"
#include "core/cost/profile_samples.hpp"
#include "exec/layout.hpp"

namespace parasol::exec {
namespace {

enum Control : int32_t { kStep = 1, kStop = 2, kKeepAlive = 3 };
const char* const kLabel = "exec.control";

void put64(std::vector<int32_t>& m, int64_t v) {
  m.push_back(static_cast<int32_t>(static_cast<uint64_t>(v) & 0xffffffffu));
  m.push_back(static_cast<int32_t>(static_cast<uint64_t>(v) >> 32));
}
int64_t get64(const std::vector<int32_t>& m, size_t& i) {
  uint64_t lo = static_cast<uint32_t>(m.at(i)), hi = static_cast<uint32_t>(m.at(i + 1));
  i += 2;
  return static_cast<int64_t>(lo | (hi << 32));
}

void broadcast(Communicator& c, const std::vector<int32_t>& msg) {
  int32_t n = static_cast<int32_t>(msg.size());
  for (int r = 1; r < c.size(); ++r) {
    c.send(&n, 1, ElemType::kI32, r, kLabel);
    c.send(msg.data(), n, ElemType::kI32, r, kLabel);
  }
}

std::vector<int32_t> receive(Communicator& c) {
  int32_t n = 0;
  c.recv(&n, 1, ElemType::kI32, 0, kLabel);
  std::vector<int32_t> msg(static_cast<size_t>(n));
  c.recv(msg.data(), n, ElemType::kI32, 0, kLabel);
  return msg;
}

// [kStep, releases, (id)*, seqs, (id, context, attn_group, sample, tokens, token*)*]
std::vector<int32_t> encode(const std::vector<int64_t>& releases, const StepRequest& req) {
  std::vector<int32_t> m{kStep, static_cast<int32_t>(releases.size())};
  for (int64_t id : releases) put64(m, id);
  m.push_back(static_cast<int32_t>(req.seqs.size()));
  for (const SeqInput& s : req.seqs) {
    put64(m, s.seq_id);
    put64(m, s.context);
    m.push_back(s.attn_group);
    m.push_back(s.sample ? 1 : 0);
    m.push_back(static_cast<int32_t>(s.tokens.size()));
    m.insert(m.end(), s.tokens.begin(), s.tokens.end());
  }
  return m;
}

void decode(const std::vector<int32_t>& m, std::vector<int64_t>& releases, StepRequest& req) {
  size_t i = 1;
  releases.resize(static_cast<size_t>(m.at(i++)));
  for (auto& id : releases) id = get64(m, i);
  req.seqs.resize(static_cast<size_t>(m.at(i++)));
  for (SeqInput& s : req.seqs) {
    s.seq_id = get64(m, i);
    s.context = get64(m, i);
    s.attn_group = m.at(i++);
    s.sample = m.at(i++) != 0;
    const size_t n = static_cast<size_t>(m.at(i++));
    s.tokens.assign(m.begin() + static_cast<std::ptrdiff_t>(i), m.begin() + static_cast<std::ptrdiff_t>(i + n));
    i += n;
  }
}

// Text through the communicator as int32 words: [bytes, words...].
void send_text(Communicator& c, const std::string& text, int peer) {
  std::vector<int32_t> words((text.size() + 3) / 4 + 1, 0);
  words[0] = static_cast<int32_t>(text.size());
  std::copy(text.begin(), text.end(), reinterpret_cast<char*>(words.data() + 1));
  int32_t n = static_cast<int32_t>(words.size());
  c.send(&n, 1, ElemType::kI32, peer, "exec.profile");
  c.send(words.data(), n, ElemType::kI32, peer, "exec.profile");
}

std::string recv_text(Communicator& c, int peer) {
  int32_t n = 0;
  c.recv(&n, 1, ElemType::kI32, peer, "exec.profile");
  std::vector<int32_t> words(static_cast<size_t>(n));
  c.recv(words.data(), n, ElemType::kI32, peer, "exec.profile");
  return std::string(reinterpret_cast<const char*>(words.data() + 1), static_cast<size_t>(words.at(0)));
}

std::unique_ptr<ModelRunner> make_runner(const plan::Plan& plan, const WeightSource& weights, Communicator& instance,
                                         Backend& be, const ServeConfig& config) {
  const plan::Pool& pool = plan.pools.at(static_cast<size_t>(config.pool));
  RankLayout layout = RankLayout::make(plan.model, pool.config, pool.stage_layers, instance.rank());
  RunnerOptions ro = config.runner;
  ro.plan = &plan;
  ro.pool = config.pool;
  return std::make_unique<ModelRunner>(plan.model, layout, be, instance, weights, ro);
}

}  // namespace

std::string profile_rows(const std::vector<OpRecord>& ops, const std::string& gpu,
                         const cost::ProfileContext& ctx) {
  std::string out;
  for (const OpRecord& r : ops)
    if (r.time_s > 0) out += cost::profile_csv_row(r.op, gpu, r.time_s, ctx) + "\n";
  return out;
}

ServeConfig make_serve_config(const plan::Plan& plan, int pool_index, int64_t max_kv_blocks) {
  if (pool_index < 0 || pool_index >= static_cast<int>(plan.pools.size()))
    throw ConfigError("", 0, 0, "pool", "a pool of the plan", std::to_string(pool_index));
  const plan::Pool& pool = plan.pools[static_cast<size_t>(pool_index)];
  ServeConfig c;
  c.pool = pool_index;
  c.scheduler = serve::SchedulerConfig::from_pool(pool);
  c.scheduler.role = serve::SchedulerRole::kMixed;
  c.scheduler.prefix_caching = false;
  c.scheduler.max_context = plan.model.max_position;
  if (c.scheduler.kv_blocks <= 0 || c.scheduler.kv_blocks > max_kv_blocks) c.scheduler.kv_blocks = max_kv_blocks;
  c.runner.weight_type = elem_type(plan.weight_dtype);
  c.runner.kv_type = elem_type(plan.kv_dtype);
  c.runner.block_tokens = c.scheduler.kv_block_tokens;
  c.runner.kv_blocks = 2 * c.scheduler.kv_blocks + c.scheduler.max_batch_seqs;
  return c;
}

ExecStepRunner::ExecStepRunner(ModelRunner& runner, Communicator& instance, const serve::Clock& clock,
                               const ServeConfig& config)
    : runner_(runner), comm_(instance), clock_(clock), config_(config) {
  if (config_.runner.profile) profile_ = cost::profile_csv_header() + "\n";
}

ExecStepRunner::~ExecStepRunner() = default;

void ExecStepRunner::add_request(const serve::Request& r) {
  Seq& s = seqs_[r.id];
  s.prompt = r.input_tokens;
  // Synthetic prompt: token ids drawn from (seed, request id), so every run of the same workload feeds the same text.
  std::mt19937_64 rng(config_.seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r.id + 1)));
  const uint64_t vocab = static_cast<uint64_t>(runner_.plan().model.vocab);
  s.tokens.resize(static_cast<size_t>(r.input_tokens));
  for (auto& t : s.tokens) t = static_cast<int32_t>(rng() % vocab);
}

void ExecStepRunner::release(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it != seqs_.end()) {
    outputs_[seq_id].assign(it->second.tokens.begin() + it->second.prompt, it->second.tokens.end());
    seqs_.erase(it);
  }
  runner_.release(seq_id);
  releases_.push_back(seq_id);
}

void ExecStepRunner::keep_alive() {
  broadcast(comm_, {kKeepAlive});
}
void ExecStepRunner::stop() {
  broadcast(comm_, {kStop});
}

serve::StepTiming ExecStepRunner::run(int /*replica*/, const plan::Batch& batch) {
  const int adp = runner_.layout().config.attn_dp;
  StepRequest req;
  for (const plan::SeqWork& w : batch.seqs) {
    auto it = seqs_.find(w.seq_id);
    if (it == seqs_.end()) throw Error("exec: sequence " + std::to_string(w.seq_id) + " was never added");
    const auto& toks = it->second.tokens;
    if (w.context + w.new_tokens > static_cast<int64_t>(toks.size()))
      throw Error("exec: sequence " + std::to_string(w.seq_id) + " asks for tokens up to " +
                  std::to_string(w.context + w.new_tokens) + " but has " + std::to_string(toks.size()));
    if (w.new_tokens == 0) continue;
    SeqInput s;
    s.seq_id = w.seq_id;
    s.context = w.context;
    s.attn_group = static_cast<int>(w.seq_id % adp);
    // Only a step that reaches the end of the sequence's known tokens samples one: a non-final prefill chunk (the
    // scheduler's SeqWork leaves `sample` at its default) must not, or the prompt would be cut short.
    s.sample = w.sample && w.context + w.new_tokens == static_cast<int64_t>(toks.size());
    s.tokens.assign(toks.begin() + w.context, toks.begin() + w.context + w.new_tokens);
    if (w.context == 0) {  // a (re)start from an empty cache: blocks held since a preemption are stale
      runner_.release(w.seq_id);
      releases_.push_back(w.seq_id);
    }
    req.seqs.push_back(std::move(s));
  }
  broadcast(comm_, encode(releases_, req));
  releases_.clear();
  const double t0 = clock_.now_s();
  StepResult res = runner_.step(req);
  serve::StepTiming timing;
  timing.total_s = clock_.now_s() - t0;
  timing.clock_advanced = true;
  for (const auto& r : runner_.last_step().ranks)
    for (const auto& op : r.ops) {
      timing.flops += op.flops;
      timing.bytes += op.bytes;
    }
  for (size_t i = 0; i < req.seqs.size(); ++i) {
    if (res.next_tokens[i] < 0) continue;
    auto& toks = seqs_[req.seqs[i].seq_id].tokens;
    toks.resize(static_cast<size_t>(req.seqs[i].context + static_cast<int64_t>(req.seqs[i].tokens.size())));
    toks.push_back(res.next_tokens[i]);
    ++generated_;
  }
  if (config_.runner.profile)
    profile_ += exec::profile_rows(res.ops, config_.profile_gpu, {comm_.rank(), iteration_, timing.total_s});
  ++iteration_;
  return timing;
}

ServeResult serve_driver(const plan::Plan& plan, const WeightSource& weights, Communicator& instance,
                         const ServeConfig& config, serve::RequestSource& source, serve::MetricsCollector& metrics) {
  if (instance.rank() != 0) throw Error("serve_driver runs on rank 0");
  auto be = make_backend(config.backend, {0, 1});
  std::unique_ptr<ModelRunner> model = make_runner(plan, weights, instance, *be, config);
  serve::WallClock clock;
  ExecStepRunner runner(*model, instance, clock, config);
  serve::Scheduler sched(config.scheduler, 0);
  ServeResult result;
  serve::StepEvents events;
  serve::Iteration it;
  // Idle waits are cut into slices of a quarter of the timeout, each followed by a keep-alive.
  const double slice_s = std::max(0.001, instance.timeout_s() / 4);
  auto emit = [&](const serve::RequestRecord& rec) {
    metrics.on_request(rec);
    ++result.requests;
  };
  std::optional<serve::Request> pending = source.next();
  for (;;) {
    double now = clock.now_s();
    while (pending && pending->arrival_s <= now) {
      runner.add_request(*pending);
      const int64_t id = pending->id;
      if (auto rejected = sched.add(std::move(*pending), now)) {
        runner.release(id);
        emit(*rejected);
      }
      pending = source.next();
    }
    if (sched.schedule(now, it)) {
      const serve::StepTiming timing = runner.run(0, it.batch);
      const double end = clock.now_s();
      events.clear();
      sched.complete(it, end, events);
      ++result.iterations;
      serve::StepSample s;
      s.start_s = it.start_s;
      s.end_s = end;
      s.seqs = static_cast<int32_t>(it.batch.seqs.size());
      s.prefill_tokens = it.prefill_tokens;
      s.decode_tokens = it.decode_tokens;
      s.preempted = it.preempted;
      s.flops = timing.flops;
      s.bytes = timing.bytes;
      s.kv_utilization = sched.kv_utilization();
      metrics.on_step(s);
      metrics.on_itl(events.itl_s);
      for (const serve::RequestRecord& rec : events.finished) {
        runner.release(rec.id);
        emit(rec);
      }
      result.end_s = end;
      continue;
    }
    if (!pending) {
      if (!sched.idle()) throw Error("exec: the scheduler has work but schedules nothing");
      break;
    }
    const double wait_s = std::min(pending->arrival_s - now, slice_s);
    std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, wait_s)));
    if (wait_s >= slice_s) runner.keep_alive();
  }
  result.end_s = std::max(result.end_s, clock.now_s());
  runner.stop();
  result.generated_tokens = runner.generated_tokens();
  result.outputs = std::move(runner.outputs());
  if (config.runner.profile) {
    result.profile_csv = std::move(runner.profile());
    for (int r = 1; r < instance.size(); ++r) result.profile_csv += recv_text(instance, r);
  }
  return result;
}

ServeResult serve_worker(const plan::Plan& plan, const WeightSource& weights, Communicator& instance,
                         const ServeConfig& config) {
  auto be = make_backend(config.backend, {0, 1});
  std::unique_ptr<ModelRunner> model = make_runner(plan, weights, instance, *be, config);
  ServeResult result;
  std::string rows;
  std::vector<int64_t> releases;
  StepRequest req;
  for (;;) {
    std::vector<int32_t> msg = receive(instance);
    const int32_t kind = msg.empty() ? 0 : msg[0];
    if (kind == kStop) break;
    if (kind == kKeepAlive) continue;
    if (kind != kStep) throw Error("exec: unknown control message " + std::to_string(kind) + " from rank 0");
    decode(msg, releases, req);
    for (int64_t id : releases) model->release(id);
    StepResult res = model->step(req);
    if (config.runner.profile)
      rows += profile_rows(res.ops, config.profile_gpu, {instance.rank(), result.iterations, 0.0});
    ++result.iterations;
  }
  if (config.runner.profile) send_text(instance, rows, 0);
  return result;
}

}  // namespace parasol::exec

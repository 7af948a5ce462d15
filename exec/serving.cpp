#include "exec/serving.hpp"

#include <algorithm>
#include <cstring>
#include <deque>
#include <chrono>
#include <limits>
#include <cmath>
#include <random>
#include <thread>

#include "core/common/error.hpp"
#include "core/cost/calibration.hpp"
#include "core/cost/profile_samples.hpp"
#include "core/serve/router.hpp"
#include "core/spec/model.hpp"
#include "exec/layout.hpp"

namespace parasol::exec {
namespace {

// kKvSend / kKvRecv (P/D): [kind, seq id, tokens, world rank of the peer instance's rank 0].
// kStage0 (leader -> rank 0): the step just begun is done with the first stage; kCollect (rank 0 -> leader): send the
// oldest begun step's result.
enum Control : int32_t { kStep = 1, kStop = 2, kKeepAlive = 3, kKvSend = 4, kKvRecv = 5, kStage0 = 6, kCollect = 7 };
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

void send_msg(Communicator& c, int peer, const std::vector<int32_t>& msg) {
  int32_t n = static_cast<int32_t>(msg.size());
  c.send(&n, 1, ElemType::kI32, peer, kLabel);
  c.send(msg.data(), n, ElemType::kI32, peer, kLabel);
}

void broadcast(Communicator& c, const std::vector<int32_t>& msg) {
  for (int r = 1; r < c.size(); ++r) send_msg(c, r, msg);
}

std::vector<int32_t> receive(Communicator& c, int peer = 0) {
  int32_t n = 0;
  c.recv(&n, 1, ElemType::kI32, peer, kLabel);
  std::vector<int32_t> msg(static_cast<size_t>(n));
  c.recv(msg.data(), n, ElemType::kI32, peer, kLabel);
  return msg;
}

double get_double(const std::vector<int32_t>& m, size_t& i) {
  const int64_t bits = get64(m, i);
  double v = 0;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
void put_double(std::vector<int32_t>& m, double v) {
  int64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  put64(m, bits);
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
// Bytes through the communicator as int32 words: [bytes (two words), words...].
void send_bytes(Communicator& c, const void* data, size_t bytes, int peer, const std::string& label) {
  std::vector<int32_t> words((bytes + 3) / 4 + 2, 0);
  const uint64_t n = bytes;
  words[0] = static_cast<int32_t>(n & 0xffffffffu);
  words[1] = static_cast<int32_t>(n >> 32);
  if (bytes) std::memcpy(words.data() + 2, data, bytes);
  const int64_t count = static_cast<int64_t>(words.size());
  c.send(&count, 2, ElemType::kI32, peer, label);
  c.send(words.data(), count, ElemType::kI32, peer, label);
}

std::vector<uint8_t> recv_bytes(Communicator& c, int peer, const std::string& label) {
  int64_t count = 0;
  c.recv(&count, 2, ElemType::kI32, peer, label);
  std::vector<int32_t> words(static_cast<size_t>(count));
  c.recv(words.data(), count, ElemType::kI32, peer, label);
  size_t i = 0;
  const auto n = static_cast<size_t>(get64(words, i));
  const auto* p = reinterpret_cast<const uint8_t*>(words.data() + 2);
  return std::vector<uint8_t>(p, p + n);
}

void send_text(Communicator& c, const std::string& text, int peer) {
  send_bytes(c, text.data(), text.size(), peer, "exec.profile");
}

std::string recv_text(Communicator& c, int peer) {
  const std::vector<uint8_t> b = recv_bytes(c, peer, "exec.profile");
  return std::string(b.begin(), b.end());
}

std::vector<int32_t> kv_message(Control kind, int64_t seq, int64_t tokens, int peer_base) {
  std::vector<int32_t> m{kind};
  put64(m, seq);
  put64(m, tokens);
  m.push_back(peer_base);
  return m;
}

// One rank's part of a KV move (P/D): the prefill side exports its share to the same rank of the decode instance and
// drops it, the decode side takes it.
void kv_part(ModelRunner& runner, Communicator& world, int instance_rank, const std::vector<int32_t>& msg) {
  size_t i = 1;
  const int64_t seq = get64(msg, i), tokens = get64(msg, i);
  const int peer = msg.at(i) + instance_rank;
  if (msg[0] == kKvSend) {
    const std::vector<uint8_t> kv = runner.export_kv(seq, tokens);
    send_bytes(world, kv.data(), kv.size(), peer, "exec.kv");
    runner.release(seq);
  } else {
    runner.import_kv(seq, tokens, recv_bytes(world, peer, "exec.kv"));
  }
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

ServeConfig make_serve_config(const plan::Plan& plan, int pool_index, int64_t max_kv_blocks,
                              const serve::SchedulerConfig* scheduler) {
  if (pool_index < 0 || pool_index >= static_cast<int>(plan.pools.size()))
    throw ConfigError("", 0, 0, "pool", "a pool of the plan", std::to_string(pool_index));
  const plan::Pool& pool = plan.pools[static_cast<size_t>(pool_index)];
  ServeConfig c;
  c.pool = pool_index;
  c.scheduler = scheduler ? *scheduler : serve::SchedulerConfig::from_pool(pool);
  c.scheduler.role = serve::SchedulerRole::kMixed;
  c.scheduler.prefix_caching = false;
  if (!scheduler) c.scheduler.max_context = plan.model.max_position;
  if (c.scheduler.kv_blocks <= 0 || c.scheduler.kv_blocks > max_kv_blocks) c.scheduler.kv_blocks = max_kv_blocks;
  c.runner.weight_type = elem_type(plan.weight_dtype);
  c.runner.kv_type = elem_type(plan.kv_dtype);
  c.runner.block_tokens = c.scheduler.kv_block_tokens;
  c.runner.kv_blocks = 2 * c.scheduler.kv_blocks + c.scheduler.max_batch_seqs;
  return c;
}

// The instance this rank leads: the step goes to its other ranks (a control message), then this rank runs its share.
class LocalTarget final : public StepTarget {
 public:
  LocalTarget(ModelRunner& runner, Communicator& world, Communicator& instance, const ServeConfig& config)
      : runner_(runner), world_(world), comm_(instance), config_(config) {}
  void begin(const std::vector<int64_t>& releases, const StepRequest& req) override {
    broadcast(comm_, encode(releases, req));
    for (int64_t id : releases) runner_.release(id);
    TargetResult out;
    std::vector<OpRecord> ops = runner_.submit(req);
    for (const auto& r : runner_.last_step().ranks)
      for (const auto& op : r.ops) {
        out.flops += op.flops;
        out.bytes += op.bytes;
      }
    if (config_.runner.profile) out.ops = std::move(ops);
    begun_.push_back(std::move(out));
  }
  TargetResult collect() override {
    if (begun_.empty()) throw Error("exec: collect() with no step begun on this instance");
    TargetResult out = std::move(begun_.front());
    begun_.pop_front();
    out.next_tokens = runner_.collect().next_tokens;
    return out;
  }
  void keep_alive() override { broadcast(comm_, {kKeepAlive}); }
  void stop() override { broadcast(comm_, {kStop}); }
  std::string gather_profile() override {
    std::string rows;
    for (int r = 1; r < comm_.size(); ++r) rows += recv_text(comm_, r);
    return rows;
  }
  void kv(const std::vector<int32_t>& msg) override {
    broadcast(comm_, msg);
    kv_part(runner_, world_, 0, msg);
  }

 private:
  ModelRunner& runner_;
  Communicator& world_;
  Communicator& comm_;
  const ServeConfig& config_;
  std::deque<TargetResult> begun_;  // the work of steps begun and not collected, oldest first
};

// Another instance, through its leader (serve_leader) over the world communicator: the step request goes there, the
// sampled tokens and the step's work come back.
class RemoteTarget final : public StepTarget {
 public:
  RemoteTarget(Communicator& world, int leader) : world_(world), leader_(leader) {}
  void begin(const std::vector<int64_t>& releases, const StepRequest& req) override {
    send_msg(world_, leader_, encode(releases, req));
    const std::vector<int32_t> ack = receive(world_, leader_);
    if (ack.size() != 1 || ack[0] != kStage0)
      throw Error("exec: instance leader (world rank " + std::to_string(leader_) + ") did not acknowledge a step");
  }
  TargetResult collect() override {
    send_msg(world_, leader_, {kCollect});
    const std::vector<int32_t> reply = receive(world_, leader_);
    TargetResult out;
    size_t i = 0;
    const size_t n = static_cast<size_t>(reply.at(i++));
    out.next_tokens.assign(reply.begin() + 1, reply.begin() + 1 + static_cast<std::ptrdiff_t>(n));
    i += n;
    out.flops = get_double(reply, i);
    out.bytes = get_double(reply, i);
    return out;
  }
  void keep_alive() override { send_msg(world_, leader_, {kKeepAlive}); }
  void stop() override { send_msg(world_, leader_, {kStop}); }
  std::string gather_profile() override { return recv_text(world_, leader_); }
  void kv(const std::vector<int32_t>& msg) override { send_msg(world_, leader_, msg); }

 private:
  Communicator& world_;
  int leader_;
};

ExecStepRunner::ExecStepRunner(std::vector<StepTarget*> targets, std::vector<int> bases, int64_t vocab,
                               const serve::Clock& clock, const ServeConfig& config)
    : targets_(std::move(targets)),
      bases_(std::move(bases)),
      vocab_(vocab),
      clock_(clock),
      config_(config),
      releases_(targets_.size()),
      started_(targets_.size()) {
  if (bases_.size() != targets_.size()) throw Error("exec: one world base rank per target");
  if (config_.runner.profile) profile_ = cost::profile_csv_header() + "\n";
}

void ExecStepRunner::transfer_kv(int64_t seq_id, int64_t tokens, int from, int to) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) throw Error("exec: KV of sequence " + std::to_string(seq_id) + ", which was never added");
  if (it->second.replica != from)
    throw Error("exec: KV of sequence " + std::to_string(seq_id) + " is not on replica " + std::to_string(from));
  // The receiving side first: its ranks wait for the bytes the sending side's ranks then send them.
  targets_[static_cast<size_t>(to)]->kv(kv_message(kKvRecv, seq_id, tokens, bases_[static_cast<size_t>(from)]));
  targets_[static_cast<size_t>(from)]->kv(kv_message(kKvSend, seq_id, tokens, bases_[static_cast<size_t>(to)]));
  it->second.replica = to;
}

ExecStepRunner::~ExecStepRunner() = default;

void ExecStepRunner::add_request(const serve::Request& r) {
  Seq& s = seqs_[r.id];
  s.prompt = r.input_tokens;
  // Synthetic prompt: token ids drawn from (seed, request id), so every run of the same workload feeds the same text.
  std::mt19937_64 rng(config_.seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(r.id + 1)));
  s.tokens.resize(static_cast<size_t>(r.input_tokens));
  for (auto& t : s.tokens) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab_));
}

void ExecStepRunner::release(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  outputs_[seq_id].assign(it->second.tokens.begin() + it->second.prompt, it->second.tokens.end());
  if (it->second.replica >= 0) releases_[static_cast<size_t>(it->second.replica)].push_back(seq_id);
  seqs_.erase(it);
}

void ExecStepRunner::keep_alive() {
  for (StepTarget* t : targets_) t->keep_alive();
}

void ExecStepRunner::stop() {
  for (StepTarget* t : targets_) t->stop();
}

std::string ExecStepRunner::gather_profiles() {
  std::string rows;
  for (StepTarget* t : targets_) rows += t->gather_profile();
  return rows;
}

serve::StepTiming ExecStepRunner::run(int replica, const plan::Batch& batch) {
  begin(replica, batch);
  return finish(replica, &batch);
}

void ExecStepRunner::begin(int replica, const plan::Batch& batch) {
  Started s;
  s.request = request_for(replica, batch);
  std::vector<int64_t>& releases = releases_[static_cast<size_t>(replica)];
  s.t0 = clock_.now_s();
  targets_[static_cast<size_t>(replica)]->begin(releases, s.request);
  releases.clear();
  started_[static_cast<size_t>(replica)].push_back(std::move(s));
}

serve::StepTiming ExecStepRunner::collect(int replica) { return finish(replica, nullptr); }

StepRequest ExecStepRunner::request_for(int replica, const plan::Batch& batch) {
  if (replica < 0 || replica >= static_cast<int>(targets_.size()))
    throw Error("exec: replica " + std::to_string(replica) + " has no instance");
  std::vector<int64_t>& releases = releases_[static_cast<size_t>(replica)];
  StepRequest req;
  for (const plan::SeqWork& w : batch.seqs) {
    auto it = seqs_.find(w.seq_id);
    if (it == seqs_.end()) throw Error("exec: sequence " + std::to_string(w.seq_id) + " was never added");
    Seq& seq = it->second;
    if (seq.replica >= 0 && seq.replica != replica)
      throw Error("exec: sequence " + std::to_string(w.seq_id) + " moved from replica " + std::to_string(seq.replica) +
                  " to " + std::to_string(replica));
    seq.replica = replica;
    const auto& toks = seq.tokens;
    if (w.context + w.new_tokens > static_cast<int64_t>(toks.size()))
      throw Error("exec: sequence " + std::to_string(w.seq_id) + " asks for tokens up to " +
                  std::to_string(w.context + w.new_tokens) + " but has " + std::to_string(toks.size()));
    if (w.new_tokens == 0) continue;
    SeqInput s;
    s.seq_id = w.seq_id;
    s.context = w.context;
    s.attn_group = w.attn_group;
    // Only a step that reaches the end of the sequence's known tokens samples one: a non-final prefill chunk (the
    // scheduler's SeqWork leaves `sample` at its default) must not, or the prompt would be cut short.
    s.sample = w.sample && w.context + w.new_tokens == static_cast<int64_t>(toks.size());
    s.tokens.assign(toks.begin() + w.context, toks.begin() + w.context + w.new_tokens);
    // A (re)start from an empty cache: blocks held since a preemption are stale.
    if (w.context == 0) releases.push_back(w.seq_id);
    req.seqs.push_back(std::move(s));
  }
  return req;
}

serve::StepTiming ExecStepRunner::finish(int replica, const plan::Batch* timer_batch) {
  if (replica < 0 || replica >= static_cast<int>(targets_.size()) || started_[static_cast<size_t>(replica)].empty())
    throw Error("exec: replica " + std::to_string(replica) + " has no step begun");
  Started started = std::move(started_[static_cast<size_t>(replica)].front());
  started_[static_cast<size_t>(replica)].pop_front();
  const StepRequest& req = started.request;
  TargetResult res = targets_[static_cast<size_t>(replica)]->collect();
  serve::StepTiming timing;
  if (config_.timer && timer_batch) {  // virtual clock: the step takes the cost model's time, whatever the CPU took
    timing = config_.timer->run(replica, *timer_batch);
    timing.clock_advanced = false;
  } else {
    timing.total_s = clock_.now_s() - started.t0;
    timing.clock_advanced = true;
    timing.flops = res.flops;
    timing.bytes = res.bytes;
  }
  if (res.next_tokens.size() != req.seqs.size())
    throw Error("exec: replica " + std::to_string(replica) + " returned " + std::to_string(res.next_tokens.size()) +
                " tokens for " + std::to_string(req.seqs.size()) + " sequences");
  for (size_t i = 0; i < req.seqs.size(); ++i) {
    if (res.next_tokens[i] < 0) continue;
    auto& toks = seqs_[req.seqs[i].seq_id].tokens;
    toks.resize(static_cast<size_t>(req.seqs[i].context + static_cast<int64_t>(req.seqs[i].tokens.size())));
    toks.push_back(res.next_tokens[i]);
    ++generated_;
  }
  if (config_.runner.profile)
    profile_ += exec::profile_rows(res.ops, config_.profile_gpu, {0, iteration_, timing.total_s});
  ++iteration_;
  return timing;
}

namespace {

// The serving loop's host for real serving: the wall clock; waiting sleeps in slices of a quarter of the instance's
// timeout, each followed by a keep-alive to the workers. On a virtual clock (ServeConfig::timer) time jumps from event
// to event instead. KV moves (P/D) happen when the loop asks, between steps, and arrive at once.
// A pipelined replica (pp > 1) on the wall clock runs its steps asynchronously: start_step begins one (rank 0's
// first-stage share runs then) and reports stage 0 done; the results are collected, oldest first, when the loop
// waits, which then waits for the oldest step's last stage rather than sleeping.
class ExecHost final : public serve::LoopHost {
 public:
  ExecHost(const serve::WallClock& clock, ExecStepRunner& runner, double slice_s, bool virtual_clock)
      : clock_(clock), runner_(runner), slice_s_(slice_s), virtual_(virtual_clock) {}
  bool virtual_time() const override { return virtual_; }
  double now_s() override { return virtual_ ? now_ : clock_.now_s(); }
  bool start_step(serve::ServingLoop& loop, int replica, int slot, const plan::Batch& batch, double) override {
    if (virtual_ || loop.pool(loop.pool_of(replica)).pp <= 1) return false;
    runner_.begin(replica, batch);
    loop.post_stage0(replica, slot, clock_.now_s());
    loop_ = &loop;
    in_flight_.push_back({replica, slot});
    return true;
  }
  double wait_until(double t_s) override {
    if (virtual_) {
      if (t_s < std::numeric_limits<double>::infinity()) now_ = std::max(now_, t_s);
      return now_;
    }
    if (!in_flight_.empty() && clock_.now_s() < t_s) {
      const InFlight f = in_flight_.front();
      in_flight_.pop_front();
      const serve::StepTiming timing = runner_.collect(f.replica);
      loop_->post_step_done(f.replica, f.slot, timing, clock_.now_s());
      return clock_.now_s();
    }
    for (;;) {
      const double now = clock_.now_s();
      if (now >= t_s) return now;
      const double wait_s = std::min(t_s - now, slice_s_);
      std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));
      if (wait_s >= slice_s_) runner_.keep_alive();
    }
  }
  void transfer_kv(serve::ServingLoop& loop, int from, int to, const serve::Handoff& h, double, uint64_t ticket,
                   double now_s) override {
    runner_.transfer_kv(h.request.id, h.kv_tokens, from, to);
    loop.post_kv_arrived(ticket, virtual_ ? now_s : clock_.now_s());
  }

 private:
  struct InFlight {
    int replica, slot;
  };
  const serve::WallClock& clock_;
  ExecStepRunner& runner_;
  double slice_s_;
  bool virtual_;
  serve::ServingLoop* loop_ = nullptr;  // the loop whose steps are in flight
  std::deque<InFlight> in_flight_;
  double now_ = 0;
};

// A pool's view of the runner of every replica: replica i of pool p is global replica offset + i.
class PoolRunner final : public serve::StepRunner {
 public:
  PoolRunner(ExecStepRunner& all, int offset) : all_(all), offset_(offset) {}
  serve::StepTiming run(int replica, const plan::Batch& batch) override { return all_.run(offset_ + replica, batch); }
  std::string name() const override { return "exec"; }

 private:
  ExecStepRunner& all_;
  int offset_;
};

// Where each instance of the plan sits in the world: pool p's instance i takes world ranks
// [base, base + instance size), pools one after the other.
struct WorldLayout {
  struct Instance {
    int pool = 0, index = 0, base = 0, size = 0;
  };
  std::vector<Instance> instances;
  int size = 0;
  explicit WorldLayout(const plan::Plan& plan) {
    for (size_t p = 0; p < plan.pools.size(); ++p) {
      const plan::Pool& pool = plan.pools[p];
      const int n = pool.config.instance_size(), dp = std::max(1, pool.config.dp);
      for (int i = 0; i < dp; ++i) instances.push_back({static_cast<int>(p), i, size + i * n, n});
      size += n * dp;
    }
  }
  const Instance& of_rank(int world_rank) const {
    for (const Instance& in : instances)
      if (world_rank >= in.base && world_rank < in.base + in.size) return in;
    throw Error("exec: world rank " + std::to_string(world_rank) + " is in no instance of the plan");
  }
};

const ServeConfig& config_of(const std::vector<ServeConfig>& configs, int pool) {
  for (const ServeConfig& c : configs)
    if (c.pool == pool) return c;
  throw Error("exec: no serving configuration for pool " + std::to_string(pool));
}

void check_pd_layouts(const plan::Plan& plan) {
  if (!plan.disaggregated()) return;
  const plan::Pool &p = plan.pools[0], &d = plan.pools[1];
  if (p.config.tp != d.config.tp || p.config.pp != d.config.pp || p.config.attn_dp != 1 || d.config.attn_dp != 1 ||
      p.stage_layers != d.stage_layers)
    throw ConfigError("", 0, 0, "pools",
                      "a prefill and a decode pool with the same tp, pp and stage layers and attention-DP 1 (exec "
                      "moves each rank's KV shard to the same rank of the decode instance)",
                      p.config.label() + " and " + d.config.label());
}

}  // namespace

ServeResult serve_driver(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                         Communicator& instance, const std::vector<ServeConfig>& configs,
                         serve::RequestSource& source, serve::MetricsCollector& metrics,
                         const serve::LoopOptions& loop_options) {
  if (world.rank() != 0 || instance.rank() != 0) throw Error("serve_driver runs on world rank 0");
  const WorldLayout layout(plan);
  if (world.size() != layout.size)
    throw Error("exec: a world of " + std::to_string(world.size()) + " ranks for a plan of " +
                std::to_string(layout.size));
  check_pd_layouts(plan);
  const ServeConfig& first = config_of(configs, 0);
  if (first.runner.profile && layout.instances.size() > 1)
    throw ConfigError("", 0, 0, "--profile", "a plan with one instance (profile rows name instance ranks)",
                      std::to_string(layout.instances.size()) + " instances");
  auto be = make_backend(first.backend, {0, 1});
  std::unique_ptr<ModelRunner> model = make_runner(plan, weights, instance, *be, first);
  serve::WallClock clock;
  LocalTarget local(*model, world, instance, first);
  std::vector<std::unique_ptr<RemoteTarget>> remotes;
  std::vector<StepTarget*> targets;
  std::vector<int> bases;
  for (const WorldLayout::Instance& in : layout.instances) {
    if (in.base == 0) {
      targets.push_back(&local);
    } else {
      remotes.push_back(std::make_unique<RemoteTarget>(world, in.base));
      targets.push_back(remotes.back().get());
    }
    bases.push_back(in.base);
  }
  ExecStepRunner runner(targets, bases, plan.model.vocab, clock, first);
  std::vector<std::unique_ptr<serve::Scheduler>> scheds;
  std::vector<std::unique_ptr<serve::Router>> routers;
  std::vector<std::unique_ptr<PoolRunner>> pool_runners;
  std::vector<serve::LoopPool> pools(plan.pools.size());
  int offset = 0;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    serve::SchedulerConfig sc = config_of(configs, static_cast<int>(p)).scheduler;
    if (plan.disaggregated()) sc.role = p == 0 ? serve::SchedulerRole::kPrefill : serve::SchedulerRole::kDecode;
    const int dp = std::max(1, plan.pools[p].config.dp);
    for (int i = 0; i < dp; ++i) {
      scheds.push_back(std::make_unique<serve::Scheduler>(sc, offset + i));
      pools[p].schedulers.push_back(scheds.back().get());
    }
    serve::RouterConfig rc = first.router;
    rc.seed += p;
    routers.push_back(serve::make_router(rc));
    pools[p].router = routers.back().get();
    pool_runners.push_back(std::make_unique<PoolRunner>(runner, offset));
    pools[p].runner = pool_runners.back().get();
    pools[p].pp = std::max(1, plan.pools[p].config.pp);
    offset += dp;
  }
  serve::LoopOptions lo = loop_options;
  lo.kv_bytes_per_token = spec::kv_bytes_per_token(plan.model);
  lo.on_arrival = [&runner, next = loop_options.on_arrival](const serve::Request& r) {
    runner.add_request(r);
    if (next) next(r);
  };
  lo.on_record = [&runner, next = loop_options.on_record](const serve::RequestRecord& rec) {
    runner.release(rec.id);
    if (next) next(rec);
  };
  serve::ServingLoop loop(std::move(pools), source, metrics, std::move(lo));
  ExecHost host(clock, runner, std::max(0.001, world.timeout_s() / 4), first.timer != nullptr);
  const serve::LoopResult lr = loop.run(host);
  ServeResult result;
  result.iterations = lr.iterations;
  result.requests = lr.requests;
  result.kv_transfers = lr.kv_transfers;
  result.end_s = first.timer ? lr.end_s : std::max(lr.end_s, clock.now_s());
  runner.stop();
  result.generated_tokens = runner.generated_tokens();
  result.outputs = std::move(runner.outputs());
  if (first.runner.profile) result.profile_csv = std::move(runner.profile()) + runner.gather_profiles();
  return result;
}

ServeResult serve_leader(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                         Communicator& instance, const ServeConfig& config) {
  if (instance.rank() != 0 || world.rank() == 0) throw Error("serve_leader runs on an instance's rank 0, not world 0");
  auto be = make_backend(config.backend, {0, 1});
  std::unique_ptr<ModelRunner> model = make_runner(plan, weights, instance, *be, config);
  LocalTarget local(*model, world, instance, config);
  ServeResult result;
  std::vector<int64_t> releases;
  StepRequest req;
  for (;;) {
    std::vector<int32_t> msg = receive(world, 0);
    const int32_t kind = msg.empty() ? 0 : msg[0];
    if (kind == kStop) {
      local.stop();
      break;
    }
    if (kind == kKeepAlive) {
      local.keep_alive();
      continue;
    }
    if (kind == kKvSend || kind == kKvRecv) {
      local.kv(msg);
      continue;
    }
    if (kind == kStep) {
      decode(msg, releases, req);
      local.begin(releases, req);
      send_msg(world, 0, {kStage0});
      continue;
    }
    if (kind != kCollect) throw Error("exec: unknown control message " + std::to_string(kind) + " from rank 0");
    const TargetResult res = local.collect();
    std::vector<int32_t> reply{static_cast<int32_t>(res.next_tokens.size())};
    reply.insert(reply.end(), res.next_tokens.begin(), res.next_tokens.end());
    put_double(reply, res.flops);
    put_double(reply, res.bytes);
    send_msg(world, 0, reply);
    ++result.iterations;
  }
  return result;
}

ServeResult serve_worker(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                         Communicator& instance, const ServeConfig& config) {
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
    if (kind == kKvSend || kind == kKvRecv) {
      kv_part(*model, world, instance.rank(), msg);
      continue;
    }
    if (kind != kStep) throw Error("exec: unknown control message " + std::to_string(kind) + " from rank 0");
    decode(msg, releases, req);
    for (int64_t id : releases) model->release(id);
    const std::vector<OpRecord> ops = model->submit(req);
    if (config.runner.profile)
      rows += profile_rows(ops, config.profile_gpu, {instance.rank(), result.iterations, 0.0});
    ++result.iterations;
  }
  if (config.runner.profile) send_text(instance, rows, 0);
  return result;
}

ServeResult serve_rank(const plan::Plan& plan, const WeightSource& weights, Communicator& world,
                       const std::vector<ServeConfig>& configs, serve::RequestSource* source,
                       serve::MetricsCollector* metrics, const serve::LoopOptions& loop_options) {
  const WorldLayout layout(plan);
  const WorldLayout::Instance& mine = layout.of_rank(world.rank());
  int color = 0;
  while (layout.instances[static_cast<size_t>(color)].base != mine.base) ++color;
  std::unique_ptr<Communicator> instance = world.split(color, world.rank());
  if (!instance) throw Error("exec: rank " + std::to_string(world.rank()) + " got no instance");
  const ServeConfig& config = config_of(configs, mine.pool);
  if (world.rank() == 0) {
    if (!source || !metrics) throw Error("exec: world rank 0 serves without a source or metrics");
    return serve_driver(plan, weights, world, *instance, configs, *source, *metrics, loop_options);
  }
  if (instance->rank() == 0) return serve_leader(plan, weights, world, *instance, config);
  return serve_worker(plan, weights, world, *instance, config);
}

}  // namespace parasol::exec

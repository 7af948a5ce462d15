#include "core/serve/scheduler.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "core/common/error.hpp"
#include "core/spec/model.hpp"

namespace parasol::serve {

const char* to_string(BatchPolicy p) { return p == BatchPolicy::kChunked ? "chunked" : "prefill_first"; }
const char* to_string(PreemptionMode m) { return m == PreemptionMode::kSwap ? "swap" : "recompute"; }
const char* to_string(SchedulerRole r) {
  switch (r) {
    case SchedulerRole::kMixed: return "mixed";
    case SchedulerRole::kPrefill: return "prefill";
    case SchedulerRole::kDecode: return "decode";
  }
  return "?";
}

namespace {

// The per-iteration loops walk sequences scattered over seqs_: ask for the next ones' lines ahead of use.
constexpr size_t kPrefetchAhead = 12;

}  // namespace

SchedulerConfig SchedulerConfig::from_pool(const plan::Pool& pool) {
  SchedulerConfig c;
  c.max_batch_tokens = pool.max_batch_tokens;
  c.max_batch_seqs = pool.max_batch_seqs;
  c.kv_block_tokens = pool.memory.kv_block_tokens;
  c.kv_blocks = c.kv_block_tokens > 0 ? pool.memory.kv_tokens / c.kv_block_tokens : 0;
  c.attn_dp = std::max(1, pool.config.attn_dp);
  c.micro_batches = std::max(1, pool.config.pp);
  if (pool.role == "prefill") c.role = SchedulerRole::kPrefill;
  else if (pool.role == "decode") c.role = SchedulerRole::kDecode;
  return c;
}

SchedulerConfig scheduler_config(const plan::Plan& plan, int pool_index, const spec::Scenario& scenario) {
  const plan::Pool& pool = plan.pools.at(size_t(pool_index));
  SchedulerConfig c = SchedulerConfig::from_pool(pool);
  const spec::Serving& set = scenario.serving;  // what the scenario itself sets
  const spec::Serving eff = spec::effective_serving(scenario);
  const std::string where = scenario.file.empty() ? "the scenario" : scenario.file;
  // Batch limits and KV: the plan's (it was made with them) unless the scenario sets them.
  if (set.max_num_seqs) c.max_batch_seqs = *set.max_num_seqs;
  if (set.max_num_batched_tokens) c.max_batch_tokens = *set.max_num_batched_tokens;
  int64_t kv_tokens = pool.memory.kv_tokens;
  if (set.gpu_memory_utilization && pool.memory.kv_bytes > 0) {
    const plan::MemoryBudget& m = pool.memory;
    const double kv_bytes =
        m.capacity_bytes * *set.gpu_memory_utilization - m.weight_bytes - m.activation_bytes - m.reserve_bytes;
    if (kv_bytes <= 0)
      throw ConfigError(where, 0, 0, "serving.gpu_memory_utilization",
                        "a fraction that leaves room for the KV cache after weights, activations and the runtime reserve",
                        std::to_string(*set.gpu_memory_utilization));
    kv_tokens = int64_t(double(m.kv_tokens) * kv_bytes / m.kv_bytes);
  }
  if (set.block_size) c.kv_block_tokens = *set.block_size;
  c.kv_blocks = kv_tokens / c.kv_block_tokens;
  if (eff.enable_chunked_prefill) c.policy = *eff.enable_chunked_prefill ? BatchPolicy::kChunked : BatchPolicy::kPrefillFirst;
  if (eff.long_prefill_token_threshold) c.long_prefill_tokens = *eff.long_prefill_token_threshold;
  if (eff.enable_prefix_caching) c.prefix_caching = *eff.enable_prefix_caching;
  c.sliding_window = plan.model.sliding_window;
  if (c.sliding_window > 0) c.prefix_caching = false;
  if (c.prefix_caching && kPrefixHashTokens % c.kv_block_tokens != 0)
    throw ConfigError(where, 0, 0, "serving.block_size",
                      "a block size dividing " + std::to_string(kPrefixHashTokens) + " (prefix caching is on)",
                      std::to_string(c.kv_block_tokens));
  if (eff.preemption_mode) c.preemption = *eff.preemption_mode == "swap" ? PreemptionMode::kSwap : PreemptionMode::kRecompute;
  if (c.preemption == PreemptionMode::kSwap && eff.swap_space_bytes) {
    const double block_bytes = double(c.kv_block_tokens) * spec::kv_bytes_per_token(plan.model);
    c.swap_blocks = block_bytes > 0 ? int64_t(*eff.swap_space_bytes * pool.config.instance_size() / block_bytes) : 0;
  }
  c.max_context = plan.model.max_position;
  if (eff.max_model_len) {
    if (plan.model.max_position > 0 && *eff.max_model_len > plan.model.max_position)
      throw ConfigError(where, 0, 0, "serving.max_model_len",
                        "at most the model's context window of " + std::to_string(plan.model.max_position),
                        std::to_string(*eff.max_model_len));
    c.max_context = *eff.max_model_len;
  }
  return c;
}

std::string describe(const SchedulerConfig& c) {
  std::string out = c.policy == BatchPolicy::kChunked ? "chunked prefill" : "prefill first";
  if (c.long_prefill_tokens > 0) out += " (at most " + std::to_string(c.long_prefill_tokens) + " per prompt per step)";
  out += ", max_num_seqs " + std::to_string(c.max_batch_seqs) + ", max_num_batched_tokens " +
         std::to_string(c.max_batch_tokens) + ", block " + std::to_string(c.kv_block_tokens) + ", prefix caching " +
         (c.prefix_caching ? "on" : "off") + ", preemption " + to_string(c.preemption);
  if (c.preemption == PreemptionMode::kSwap) out += " (" + std::to_string(c.swap_blocks) + " swap blocks)";
  if (c.max_context > 0) out += ", max_model_len " + std::to_string(c.max_context);
  if (c.sliding_window > 0) out += ", sliding window " + std::to_string(c.sliding_window);
  return out;
}

void StepEvents::clear() {
  finished.clear();
  itl_s.clear();
  handoffs.clear();
  output_tokens = 0;
  first_tokens = 0;
}

int64_t StepEvents::itl_tokens() const {
  int64_t n = 0;
  for (const ItlRun& r : itl_s) n += r.count;
  return n;
}

Scheduler::Scheduler(SchedulerConfig config, int replica)
    : config_(config), replica_(replica) {
  if (config_.max_batch_tokens < 1 || config_.max_batch_seqs < 1) {
    throw ConfigError("scheduler: max_batch_tokens and max_batch_seqs must be at least 1");
  }
  config_.attn_dp = std::max(1, config_.attn_dp);
  config_.micro_batches = std::max(1, config_.micro_batches);
  const auto groups = size_t(config_.attn_dp);
  budget_.assign(groups, 0);
  batch_seqs_.assign(groups, 0);
  cell_running_.assign(groups * size_t(config_.micro_batches), 0);
  lane_busy_.assign(size_t(config_.micro_batches), 0);
  kv_.reserve(groups);
  for (size_t g = 0; g < groups; ++g) kv_.emplace_back(config.kv_blocks, config.kv_block_tokens, config.prefix_caching);
  waiting_.resize(groups);
  group_tokens_.assign(groups, 0);
  blocked_.assign(groups, 0);
}

int64_t Scheduler::waiting() const {
  int64_t n = 0;
  for (const auto& w : waiting_) n += int64_t(w.size());
  return n;
}

int64_t Scheduler::kv_used_blocks() const {
  int64_t n = 0;
  for (const auto& k : kv_) n += k.used_blocks();
  return n;
}

int64_t Scheduler::kv_total_blocks() const {
  int64_t n = 0;
  for (const auto& k : kv_) n += k.total_blocks();
  return n;
}

double Scheduler::kv_utilization() const {
  const int64_t total = kv_total_blocks();
  return total ? double(kv_used_blocks()) / double(total) : 0;
}

bool Scheduler::any_waiting() const {
  for (const auto& w : waiting_)
    if (!w.empty()) return true;
  return false;
}

// The group a new request joins: least outstanding tokens (prompt to prefill + output to generate), lowest index on
// ties — SGLang's / vLLM's DP-attention routing of a request to one DP rank.
int Scheduler::pick_group() const {
  int best = 0;
  for (int g = 1; g < config_.attn_dp; ++g)
    if (group_tokens_[size_t(g)] < group_tokens_[size_t(best)]) best = g;
  return best;
}

void Scheduler::add_outstanding(const Seq& q, int64_t delta) {
  outstanding_tokens_ += delta;
  group_tokens_[size_t(q.group)] += delta;
}

int64_t Scheduler::tokens_needed_at_end(const Request& r) const {
  const int64_t t = config_.role == SchedulerRole::kPrefill ? r.input_tokens
                                                             : r.input_tokens + std::max<int64_t>(r.output_tokens, 1) - 1;
  return config_.sliding_window > 0 ? std::min(t, config_.sliding_window + config_.kv_block_tokens) : t;
}

bool Scheduler::exceeds_context(const Request& r) const {
  return config_.max_context > 0 && r.input_tokens + r.output_tokens > config_.max_context;
}

std::string Scheduler::context_reason(const Request& r) const {
  return "prompt " + std::to_string(r.input_tokens) + " + answer " + std::to_string(r.output_tokens) +
         " tokens exceed the model's context window of " + std::to_string(config_.max_context);
}

int64_t Scheduler::work_left(const Seq& q) const {
  const int64_t prefill = q.context < q.prompt_tokens ? q.prompt_tokens - q.context : 0;
  if (config_.role == SchedulerRole::kPrefill) return prefill;
  return prefill + std::max<int64_t>(q.req.output_tokens - q.generated, 0);
}

int32_t Scheduler::new_slot() {
  if (!free_slots_.empty()) {
    const int32_t s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  seqs_.emplace_back();
  return int32_t(seqs_.size() - 1);
}

void Scheduler::free_slot(int32_t s) {
  Seq& q = seqs_[size_t(s)];
  q.state = State::kFree;
  q.req.prefix_hashes.clear();
  q.rec.reason.clear();
  q.units.clear();
  free_slots_.push_back(s);
  --live_;
}

std::optional<RequestRecord> Scheduler::add(Request request, double now_s) {
  if (config_.role == SchedulerRole::kDecode) {
    throw Error("Scheduler::add on a decode-role replica: use add_prefilled");
  }
  ++stats_.added;
  const int64_t need = kv_[0].blocks_for(tokens_needed_at_end(request));
  std::string why;
  if (request.input_tokens <= 0) why = "empty prompt";
  else if (exceeds_context(request))
    why = context_reason(request);
  else if (need > kv_[0].total_blocks()) {
    why = "needs " + std::to_string(need) + " KV blocks for " + std::to_string(tokens_needed_at_end(request)) +
          " tokens, replica has " + std::to_string(kv_[0].total_blocks());
    if (config_.attn_dp > 1) why += " per attention-DP group";
  }
  if (!why.empty()) {
    ++stats_.rejected;
    RequestRecord rec = make_rejected(request, now_s, std::move(why));
    rec.replica = rec.prefill_replica = replica_;
    return rec;
  }
  const int32_t s = new_slot();
  Seq& q = seqs_[size_t(s)];
  q.rec = RequestRecord{};
  q.rec.id = request.id;
  q.rec.arrival_s = request.arrival_s;
  q.rec.input_tokens = request.input_tokens;
  q.rec.retries = request.attempt;
  q.rec.output_tokens = request.output_tokens;
  q.rec.replica = q.rec.prefill_replica = replica_;
  q.req = std::move(request);
  q.state = State::kWaiting;
  q.in_flight = false;
  q.swap_counted = false;
  q.prompt_tokens = q.req.input_tokens;
  q.context = 0;
  q.generated = 0;
  q.owned_blocks = 0;
  q.unit_key = 0;
  q.last_token_s = 0;
  q.first_token_pending = false;
  q.group = pick_group();
  q.order = next_order_++;
  ++live_;
  add_outstanding(q, work_left(q));
  waiting_[size_t(q.group)].push_back(s);
  return std::nullopt;
}

std::optional<RequestRecord> Scheduler::add_prefilled(Handoff h, double now_s) {
  if (config_.role != SchedulerRole::kDecode) throw Error("Scheduler::add_prefilled on a non-decode replica");
  ++stats_.added;
  const int64_t need = kv_[0].blocks_for(tokens_needed_at_end(h.request));
  const bool too_long = exceeds_context(h.request);
  if (too_long || need > kv_[0].total_blocks()) {
    ++stats_.rejected;
    RequestRecord rec = h.record;
    rec.finish_s = now_s;
    rec.outcome = Outcome::kRejected;
    rec.replica = replica_;
    if (too_long) {
      rec.reason = context_reason(h.request);
    } else {
      rec.reason = "needs " + std::to_string(need) + " KV blocks, decode replica has " +
                   std::to_string(kv_[0].total_blocks());
      if (config_.attn_dp > 1) rec.reason += " per attention-DP group";
    }
    return rec;
  }
  const int32_t s = new_slot();
  Seq& q = seqs_[size_t(s)];
  q.rec = std::move(h.record);
  q.rec.replica = replica_;
  q.req = std::move(h.request);
  q.state = State::kSwapped;  // KV exists but holds no GPU block here yet: admitted like a swapped-out sequence
  q.in_flight = false;
  q.swap_counted = false;
  q.prompt_tokens = q.req.input_tokens;
  q.context = q.req.input_tokens;
  q.generated = std::max<int64_t>(q.rec.generated_tokens, 1);
  q.owned_blocks = kv_[0].blocks_for(q.context);
  q.unit_key = 0;
  q.last_token_s = q.rec.first_token_s;
  q.first_token_pending = config_.first_token_at_decode;
  q.group = pick_group();
  q.order = next_order_++;
  ++live_;
  add_outstanding(q, work_left(q));
  waiting_[size_t(q.group)].push_back(s);
  return std::nullopt;
}

void Scheduler::release_kv(Seq& q) {
  BlockManager& kv = kv_[size_t(q.group)];
  kv.release(q.owned_blocks);
  q.owned_blocks = 0;
  for (int32_t u : q.units) kv.unpin(u);
  q.units.clear();
  q.unit_key = 0;
}

int64_t Scheduler::private_tokens(const Seq& q, int64_t kv_tokens) const {
  if (config_.sliding_window > 0) return std::min(kv_tokens, config_.sliding_window + config_.kv_block_tokens);
  return kv_tokens - int64_t(q.units.size()) * kPrefixHashTokens;
}

bool Scheduler::preempt_last(int32_t keep, Iteration& it) {
  // The most recently admitted running sequence of keep's attention-DP group (whose KV pool ran out) that is not part
  // of an iteration (this one or one in flight).
  const int32_t group = seqs_[size_t(keep)].group;
  for (size_t i = running_.size(); i-- > 0;) {
    const int32_t v = running_[i];
    Seq& q = seqs_[size_t(v)];
    if (q.in_flight || v == keep || q.group != group) continue;
    add_outstanding(q, -work_left(q));
    const int64_t blocks = q.owned_blocks + int64_t(q.units.size()) * kv_[size_t(group)].unit_blocks();
    if (q.context < q.prompt_tokens) --running_prefills_;
    if (config_.preemption == PreemptionMode::kSwap && swap_used_ + blocks <= config_.swap_blocks) {
      release_kv(q);
      q.owned_blocks = blocks;  // all private once swapped back in
      q.swap_counted = true;
      swap_used_ += blocks;
      it.swap_out_blocks += blocks;
      stats_.swapped_out_blocks += blocks;
      q.state = State::kSwapped;
    } else {
      release_kv(q);
      q.prompt_tokens = q.req.input_tokens + q.generated;
      q.context = 0;
      q.state = State::kWaiting;
    }
    add_outstanding(q, work_left(q));
    ++q.rec.preemptions;
    ++stats_.preemptions;
    ++it.preempted;
    --cell(q.lane, group);
    running_.erase(running_.begin() + std::ptrdiff_t(i));
    waiting_[size_t(group)].push_front(v);
    return true;
  }
  return false;
}

bool Scheduler::grow(int32_t s, int64_t new_tokens, Iteration& it) {
  Seq& q = seqs_[size_t(s)];
  BlockManager& kv = kv_[size_t(q.group)];
  const int64_t need = kv.blocks_for(private_tokens(q, q.context + new_tokens)) - q.owned_blocks;
  while (need > kv.free_blocks()) {
    if (!preempt_last(s, it)) return false;
  }
  kv.allocate(need);
  q.owned_blocks += need;
  return true;
}

void Scheduler::put(int32_t s, int64_t new_tokens, double now_s, Iteration& it) {
  Seq& q = seqs_[size_t(s)];
  plan::SeqWork w;
  w.seq_id = q.req.id;
  w.new_tokens = new_tokens;
  w.context = q.context;
  w.attn_group = q.group;
  it.batch.seqs.push_back(w);
  it.slots.push_back(s);
  ++batch_seqs_[size_t(q.group)];
  q.in_flight = true;
  if (std::isnan(q.rec.first_scheduled_s)) q.rec.first_scheduled_s = now_s;
  if (q.first_token_pending) {  // first_token: decode — the decode instance streams the first token now
    q.first_token_pending = false;
    q.rec.first_token_s = now_s;
    q.last_token_s = now_s;
  }
  if (q.context < q.prompt_tokens) it.prefill_tokens += new_tokens;
  else it.decode_tokens += new_tokens;
}

// Admits waiting sequences FCFS into the micro-batch being formed while they fit. `whole_prompts`: a prompt is only
// admitted whole (prefill-first), except a lone one over the budget. With attention-DP groups the next candidate is
// the earliest head (arrival order) of the groups' queues that still have room (token budget, sequences in this
// iteration, running sequences of this micro-batch); a head that finds no KV blocks in its group, or does not fit
// its group's token budget, stops that group only.
void Scheduler::admit(bool whole_prompts, double now_s, Iteration& it) {
  if (config_.attn_dp > 1) std::fill(blocked_.begin(), blocked_.end(), char{0});
  while (true) {
    int g = -1;
    for (int k = 0; k < config_.attn_dp; ++k) {
      const auto& w = waiting_[size_t(k)];
      if (w.empty() || blocked_[size_t(k)] || !group_open(k) || cell(lane_, k) >= config_.max_batch_seqs) continue;
      if (g < 0 || seqs_[size_t(w.front())].order < seqs_[size_t(waiting_[size_t(g)].front())].order) g = k;
    }
    if (g < 0) return;
    if (admit_head(g, whole_prompts, now_s, it) != Admission::kAdmitted) {
      if (config_.attn_dp == 1) return;
      blocked_[size_t(g)] = 1;
    }
  }
}

// Tries the head of group g's queue.
Scheduler::Admission Scheduler::admit_head(int g, bool whole_prompts, double now_s, Iteration& it) {
  std::deque<int32_t>& waiting = waiting_[size_t(g)];
  int64_t& budget = budget_[size_t(g)];
  BlockManager& kv = kv_[size_t(g)];
  {
    const int32_t s = waiting.front();
    Seq& q = seqs_[size_t(s)];
    if (q.state == State::kSwapped) {
      // Swapped out (or a decode-side handoff): bring the KV back, then it runs as a running sequence.
      if (!kv.allocate(q.owned_blocks)) return Admission::kGroupFull;
      if (q.swap_counted) {
        swap_used_ -= q.owned_blocks;
        it.swap_in_blocks += q.owned_blocks;
        stats_.swapped_in_blocks += q.owned_blocks;
        q.swap_counted = false;
      }
      waiting.pop_front();
      q.state = State::kRunning;
      q.lane = lane_;
      ++cell(lane_, g);
      running_.push_back(s);
      const bool decoding = q.context >= q.prompt_tokens;
      if (!decoding) ++running_prefills_;
      const int64_t tokens = decoding ? 1 : std::min(q.prompt_tokens - q.context, budget);
      if (whole_prompts && (decoding || tokens < q.prompt_tokens - q.context)) return Admission::kAdmitted;
      if (grow_without_preemption(s, tokens)) {
        put(s, tokens, now_s, it);
        budget -= tokens;
      }
      return Admission::kAdmitted;
    }
    // Prefix-cache lookup for a fresh (or recomputing) prompt.
    int64_t hit_units = 0;
    if (kv.prefix_caching() && q.context == 0 && q.units.empty() && !q.req.prefix_hashes.empty()) {
      const int64_t full = std::min<int64_t>(int64_t(q.req.prefix_hashes.size()),
                                             q.req.input_tokens / kPrefixHashTokens);
      const int64_t matchable = std::min(full, (q.prompt_tokens - 1) / kPrefixHashTokens);
      uint64_t key = 0;
      for (int64_t k = 0; k < matchable; ++k) {
        const uint64_t next = BlockManager::chain(key, q.req.prefix_hashes[size_t(k)]);
        const int32_t u = kv.acquire(next);
        if (u < 0) break;
        q.units.push_back(u);
        key = next;
        ++hit_units;
      }
      q.unit_key = key;
      q.context = hit_units * kPrefixHashTokens;
    }
    const int64_t remaining = q.prompt_tokens - q.context;
    int64_t chunk = std::min(remaining, budget);
    if (!whole_prompts && config_.long_prefill_tokens > 0) chunk = std::min(chunk, config_.long_prefill_tokens);
    if (whole_prompts && chunk < remaining) {
      if (batch_seqs_[size_t(g)] > 0) {
        release_kv(q);
        q.context = 0;
        return Admission::kStop;
      }
      chunk = remaining;  // a lone prompt over the budget runs alone
    }
    const int64_t need = kv.blocks_for(private_tokens(q, q.context + chunk));
    if (!kv.allocate(need)) {
      release_kv(q);
      q.context = 0;
      return Admission::kGroupFull;
    }
    q.owned_blocks = need;
    if (kv.prefix_caching() && !q.req.prefix_hashes.empty()) {
      const int64_t full = std::min<int64_t>(int64_t(q.req.prefix_hashes.size()),
                                             q.req.input_tokens / kPrefixHashTokens);
      stats_.prefix_lookup_tokens += full * kPrefixHashTokens;
      stats_.prefix_hit_tokens += hit_units * kPrefixHashTokens;
      q.rec.prefix_hit_tokens += hit_units * kPrefixHashTokens;
    }
    add_outstanding(q, -hit_units * kPrefixHashTokens);
    waiting.pop_front();
    q.state = State::kRunning;
    q.lane = lane_;
    ++cell(lane_, g);
    running_.push_back(s);
    if (q.context < q.prompt_tokens) ++running_prefills_;
    put(s, chunk, now_s, it);
    budget -= chunk;
    return Admission::kAdmitted;
  }
}

bool Scheduler::grow_without_preemption(int32_t s, int64_t new_tokens) {
  Seq& q = seqs_[size_t(s)];
  BlockManager& kv = kv_[size_t(q.group)];
  const int64_t need = kv.blocks_for(private_tokens(q, q.context + new_tokens)) - q.owned_blocks;
  if (!kv.allocate(need)) return false;
  q.owned_blocks += need;
  return true;
}

// Schedules the running sequences of the micro-batch being formed, of one phase (decode or prefill), in admission
// order, preempting from the back.
void Scheduler::schedule_running(bool decode_phase, double now_s, Iteration& it) {
  for (size_t i = 0; i < running_.size(); ++i) {
    if (i + kPrefetchAhead < running_.size()) prefetch_seq(seqs_[size_t(running_[i + kPrefetchAhead])], false);
    const int32_t s = running_[i];
    Seq& q = seqs_[size_t(s)];
    if (q.in_flight || q.lane != lane_) continue;
    const bool decoding = q.context >= q.prompt_tokens;
    if (decoding != decode_phase) continue;
    if (!group_open(q.group)) {
      if (config_.attn_dp == 1) return;
      continue;
    }
    int64_t& budget = budget_[size_t(q.group)];
    int64_t tokens = decoding ? 1 : std::min(q.prompt_tokens - q.context, budget);
    if (!decoding && config_.long_prefill_tokens > 0 && config_.policy == BatchPolicy::kChunked)
      tokens = std::min(tokens, config_.long_prefill_tokens);
    // grow() only when the block count changes (a decode crosses a block boundary once every block_size tokens).
    if (kv_[size_t(q.group)].blocks_for(private_tokens(q, q.context + tokens)) != q.owned_blocks) {
      if (!grow(s, tokens, it)) continue;  // nothing left to preempt now: it keeps its blocks and waits
      while (running_[i] != s) --i;          // preemptions before it shifted it left
    }
    put(s, tokens, now_s, it);
    budget -= tokens;
  }
}

std::optional<Iteration> Scheduler::schedule(double now_s) {
  Iteration it;
  if (!schedule(now_s, it)) return std::nullopt;
  return it;
}

bool Scheduler::schedule(double now_s, Iteration& it) {
  it.batch.seqs.clear();
  it.slots.clear();
  it.start_s = now_s;
  it.prefill_tokens = it.decode_tokens = 0;
  it.preempted = 0;
  it.swap_out_blocks = it.swap_in_blocks = 0;
  // The micro-batches not in flight, from the one after the last scheduled: the first that has work runs.
  const int lanes = config_.micro_batches;
  bool formed = false;
  for (int k = 0; k < lanes && !formed; ++k) {
    lane_ = (next_lane_ + k) % lanes;
    if (lanes > 1 && lane_busy_[size_t(lane_)]) continue;  // one micro-batch: any number in flight
    std::fill(budget_.begin(), budget_.end(), config_.max_batch_tokens);
    std::fill(batch_seqs_.begin(), batch_seqs_.end(), 0);
    if (config_.policy == BatchPolicy::kPrefillFirst) {
      if (any_waiting()) admit(/*whole_prompts=*/true, now_s, it);
      if (it.batch.seqs.empty()) {
        // Unfinished prefills (a lone prompt over the budget in flight with pp > 1), if any.
        if (running_prefills_ > 0) schedule_running(/*decode_phase=*/false, now_s, it);
        schedule_running(/*decode_phase=*/true, now_s, it);
      }
    } else {
      schedule_running(/*decode_phase=*/true, now_s, it);
      if (running_prefills_ > 0) schedule_running(/*decode_phase=*/false, now_s, it);
      admit(/*whole_prompts=*/false, now_s, it);
    }
    formed = !it.batch.seqs.empty();
  }
  if (!formed) return false;
  it.lane = lane_;
  lane_busy_[size_t(lane_)] = 1;
  next_lane_ = (lane_ + 1) % lanes;
  it.serial = next_serial_++;
  it.kv_used_blocks = kv_used_blocks();
  in_flight_serials_.push_back(it.serial);
  return true;
}

void Scheduler::finish(int32_t s, double now_s, StepEvents& events) {
  Seq& q = seqs_[size_t(s)];
  release_kv(q);
  q.rec.finish_s = now_s;
  q.rec.generated_tokens = q.generated;
  q.rec.outcome = Outcome::kCompleted;
  events.finished.push_back(std::move(q.rec));
  ++stats_.completed;
  q.state = State::kFree;  // removed from running_ by complete(), slot freed there
}

void Scheduler::insert_prefix_units(Seq& q) {
  BlockManager& kv = kv_[size_t(q.group)];
  if (!kv.prefix_caching() || q.req.prefix_hashes.empty()) return;
  const int64_t full = std::min<int64_t>(int64_t(q.req.prefix_hashes.size()), q.req.input_tokens / kPrefixHashTokens);
  const int64_t done = std::min(full, q.context / kPrefixHashTokens);
  while (int64_t(q.units.size()) < done) {
    const size_t k = q.units.size();
    const uint64_t key = BlockManager::chain(q.unit_key, q.req.prefix_hashes[k]);
    int32_t u = kv.acquire(key);
    if (u >= 0) {
      kv.release(kv.unit_blocks());  // someone else computed it meanwhile: share theirs, drop ours
    } else {
      u = kv.insert(key);
    }
    q.owned_blocks -= kv.unit_blocks();
    q.units.push_back(u);
    q.unit_key = key;
  }
}

void Scheduler::complete(const Iteration& it, double now_s, StepEvents& events) {
  if (it.serial < voided_before_) return;  // voided by fail_all
  if (in_flight_serials_.empty() || in_flight_serials_.front() != it.serial) {
    throw Error("Scheduler::complete: iterations must complete in the order they were scheduled");
  }
  in_flight_serials_.pop_front();
  lane_busy_[size_t(it.lane)] = 0;
  ++stats_.iterations;
  stats_.prefill_tokens += it.prefill_tokens;
  stats_.decode_tokens += it.decode_tokens;
  bool any_left = false;
  for (size_t i = 0; i < it.slots.size(); ++i) {
    if (i + kPrefetchAhead < it.slots.size()) prefetch_seq(seqs_[size_t(it.slots[i + kPrefetchAhead])], true);
    const int32_t s = it.slots[i];
    Seq& q = seqs_[size_t(s)];
    q.in_flight = false;
    const int64_t before = work_left(q);
    const bool was_prefill = q.context < q.prompt_tokens;
    q.context += it.batch.seqs[i].new_tokens;
    const bool token = q.context >= q.prompt_tokens;
    if (was_prefill && token) --running_prefills_;
    if (was_prefill) insert_prefix_units(q);
    if (token && q.req.output_tokens > 0) {
      ++q.generated;
      ++events.output_tokens;
      if (std::isnan(q.rec.first_token_s)) {
        q.rec.first_token_s = now_s;
        ++events.first_tokens;
      } else {
        const double gap = now_s - q.last_token_s;
        if (!events.itl_s.empty() && events.itl_s.back().gap_s == gap) ++events.itl_s.back().count;
        else events.itl_s.push_back({gap, 1});
        ++q.rec.itl_count;
        q.rec.itl_sum_s += gap;
        q.rec.itl_max_s = std::max(q.rec.itl_max_s, gap);
      }
      q.last_token_s = now_s;
    } else if (token) {
      q.rec.first_token_s = now_s;  // nothing to generate: the response is the end of the prefill
    }
    add_outstanding(q, work_left(q) - before);
    if (!token) continue;
    if (q.generated >= q.req.output_tokens) {
      finish(s, now_s, events);
      any_left = true;
    } else if (config_.role == SchedulerRole::kPrefill) {
      Handoff h;
      h.kv_tokens = q.context;
      add_outstanding(q, -work_left(q));
      release_kv(q);
      q.rec.generated_tokens = q.generated;
      h.record = std::move(q.rec);
      h.request = std::move(q.req);
      events.handoffs.push_back(std::move(h));
      ++stats_.handed_off;
      q.state = State::kFree;
      any_left = true;
    }
  }
  if (any_left) {
    std::erase_if(running_, [&](int32_t s) {
      const Seq& q = seqs_[size_t(s)];
      if (q.state != State::kFree) return false;
      --cell(q.lane, q.group);
      free_slot(s);
      return true;
    });
  }
}

void Scheduler::fail_all(double now_s, const std::string& reason, std::vector<RequestRecord>& out) {
  std::vector<Evicted> evicted;
  evict_all(now_s, evicted);
  for (Evicted& e : evicted) {
    e.record.outcome = Outcome::kFailed;
    e.record.reason = reason;
    out.push_back(std::move(e.record));
    ++stats_.failed;
  }
}

void Scheduler::evict_all(double now_s, std::vector<Evicted>& out) {
  auto evict = [&](int32_t s) {
    Seq& q = seqs_[size_t(s)];
    if (q.state == State::kSwapped) q.owned_blocks = 0;  // not on the GPU
    Evicted e;
    e.prefilled = q.state == State::kRunning
                      ? std::max<int64_t>(0, std::min(q.context, q.prompt_tokens) -
                                                 int64_t(q.units.size()) * kPrefixHashTokens)
                      : 0;
    release_kv(q);
    q.rec.finish_s = now_s;
    q.rec.generated_tokens = q.generated;
    e.request = std::move(q.req);
    e.record = std::move(q.rec);
    out.push_back(std::move(e));
    q.in_flight = false;
    free_slot(s);
  };
  for (int32_t s : running_) evict(s);
  for (auto& w : waiting_) {
    for (int32_t s : w) evict(s);
    w.clear();
  }
  running_.clear();
  std::fill(cell_running_.begin(), cell_running_.end(), 0);
  std::fill(lane_busy_.begin(), lane_busy_.end(), char{0});
  in_flight_serials_.clear();
  voided_before_ = next_serial_;
  swap_used_ = 0;
  outstanding_tokens_ = 0;
  std::fill(group_tokens_.begin(), group_tokens_.end(), 0);
  running_prefills_ = 0;
}

}  // namespace parasol::serve

// Steady-state estimator (goodput.hpp): memoized stage costing and the per-pool queueing model.
#include "core/search/goodput.hpp"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/common/error.hpp"
#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"

namespace parasol::search {

namespace {

constexpr double kZ99 = 2.326;  // standard normal 99th percentile
constexpr int kBisection = 48;  // iterations of every bisection (relative precision ~4e-15)

}  // namespace

const char* to_string(PoolRole r) {
  switch (r) {
    case PoolRole::kMixed:
      return "mixed";
    case PoolRole::kPrefill:
      return "prefill";
    case PoolRole::kDecode:
      return "decode";
  }
  return "?";
}

bool GroupBatch::operator<(const GroupBatch& o) const {
  return std::tie(decode_seqs, decode_context, prefill_tokens, prompt_len) <
         std::tie(o.decode_seqs, o.decode_context, o.prefill_tokens, o.prompt_len);
}

plan::Batch GroupBatch::to_batch(int attn_dp) const {
  plan::Batch b;
  int64_t id = 0;
  for (int g = 0; g < attn_dp; ++g) {
    for (int64_t i = 0; i < decode_seqs; ++i)
      b.seqs.push_back({id++, 1, std::max<int64_t>(1, decode_context), g, true});
    if (prefill_tokens <= 0 || prompt_len <= 0) continue;
    if (prompt_len > prefill_tokens) {
      // A chunk of a longer prompt: on average half of the rest of the prompt is already cached.
      b.seqs.push_back({id++, prefill_tokens, (prompt_len - prefill_tokens) / 2, g, false});
      continue;
    }
    const int64_t full = prefill_tokens / prompt_len, rest = prefill_tokens % prompt_len;
    for (int64_t i = 0; i < full; ++i) b.seqs.push_back({id++, prompt_len, 0, g, true});
    if (rest > 0) b.seqs.push_back({id++, rest, 0, g, false});
  }
  return b;
}

spec::Model proxy_model(const spec::Model& m) {
  spec::Model p = m;
  bool has_moe = false, has_dense = false;
  for (int64_t l = 0; l < m.layers; ++l) (m.is_moe_layer(l) ? has_moe : has_dense) = true;
  p.layers = (has_moe && has_dense) ? 2 : 1;
  if (has_moe) {
    p.moe.first_k_dense = has_dense ? 1 : 0;
    p.moe.layer_freq = 1;
  }
  return p;
}

struct StageTimer::Impl {
  spec::Model proxy;
  plan::Plan plan;
  std::unique_ptr<plan::StepBuilder> builder;
  std::unique_ptr<cost::CostModel> cost;
  std::unique_ptr<cost::LinkTables> own_tables;
  cost::LinkTables* tables = nullptr;
  std::map<GroupBatch, LayerTimes> memo;
  plan::Step step;
  std::vector<int> probes;  // ranks 0 and R-1
  std::vector<cost::OpCost> rank_cost;
  std::vector<int64_t> counts;
  bool one_rank = true;
  const spec::Engine* engine = nullptr;
  int links_symmetric = -1;  // every group of a size has the same links (-1: not yet known)
  int64_t evaluations = 0, lookups = 0, one_rank_evaluations = 0;

  void init(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
            const plan::ParallelConfig& shape, const plan::PlanOptions& options, cost::LinkTables* shared);
  bool groups_alike();
  bool routing_even(const GroupBatch& batch);
  bool cost_one_rank(const GroupBatch& batch, std::map<int, double>& layer_s);
};

namespace {

// The same program up to the op names and the group indices (the groups' sizes must match; their links are
// compared separately).
bool same_program(const plan::Step& step, const plan::RankProgram& a, const plan::RankProgram& b) {
  if (a.stage != b.stage || a.ops.size() != b.ops.size()) return false;
  for (size_t i = 0; i < a.ops.size(); ++i) {
    const plan::Op &x = a.ops[i], &y = b.ops[i];
    if (x.kind != y.kind || x.layer != y.layer || x.dtype != y.dtype || x.m != y.m || x.n != y.n || x.k != y.k ||
        x.batch != y.batch || x.tokens != y.tokens || x.heads != y.heads || x.kv_heads != y.kv_heads ||
        x.head_dim != y.head_dim || x.v_head_dim != y.v_head_dim || x.peer != y.peer || x.comm_bytes != y.comm_bytes ||
        x.algo != y.algo || x.flops != y.flops || x.bytes != y.bytes || x.q_lens != y.q_lens ||
        x.ctx_lens != y.ctx_lens || x.expert_tokens != y.expert_tokens || x.a2a_send_bytes != y.a2a_send_bytes ||
        (x.group < 0) != (y.group < 0))
      return false;
    if (x.group >= 0 && step.groups[static_cast<size_t>(x.group)].ranks.size() !=
                            step.groups[static_cast<size_t>(y.group)].ranks.size())
      return false;
  }
  return true;
}

bool same_links(const cost::GroupLinks& a, const cost::GroupLinks& b) {
  return a.n == b.n && a.ring_bw_Bps == b.ring_bw_Bps && a.ring_latency_s == b.ring_latency_s &&
         a.one_domain == b.one_domain && a.nvls == b.nvls && a.domains == b.domains && a.local_n == b.local_n &&
         a.intra_bw_Bps == b.intra_bw_Bps && a.intra_latency_s == b.intra_latency_s &&
         a.inter_bw_Bps == b.inter_bw_Bps && a.inter_latency_s == b.inter_latency_s && a.uniform == b.uniform;
}

}  // namespace

void StageTimer::Impl::init(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                            const plan::ParallelConfig& shape, const plan::PlanOptions& options,
                            cost::LinkTables* shared) {
  plan::ParallelConfig c = shape;
  c.pp = 1;
  c.dp = 1;
  proxy = proxy_model(model);
  plan::MadePlan made = plan::make_plan(proxy, cluster, gpu_type, c, options);
  if (made.plan.pools.empty() || made.plan.pools[0].placement.empty()) {
    std::string why;
    for (const auto& r : made.feasibility.reasons) why += "; " + r;
    throw Error("search: stage shape " + c.label() + " cannot be placed" + why);
  }
  plan = std::move(made.plan);
  if (!shared) own_tables = std::make_unique<cost::LinkTables>(cluster);
  tables = shared ? shared : own_tables.get();
  builder = std::make_unique<plan::StepBuilder>(
      plan, 0, engine ? plan::step_options(*engine, plan, 0, cluster) : plan::StepOptions{});
  cost::CostOptions copts;
  copts.engine = engine;
  cost = std::make_unique<cost::CostModel>(plan, cluster, *tables, copts);
  const int R = c.instance_size();
  probes = R > 1 ? std::vector<int>{0, R - 1} : std::vector<int>{0};
}

// Collectives of equal-sized groups take equal times only when the groups' links are alike (step.groups as built).
bool StageTimer::Impl::groups_alike() {
  if (links_symmetric >= 0) return links_symmetric == 1;
  const auto& place = plan.pools[0].placement[0];
  std::map<size_t, const cost::GroupLinks*> first;  // by size
  links_symmetric = 1;
  std::vector<int> gpus;
  for (const auto& g : step.groups) {
    gpus.clear();
    for (int r : g.ranks) gpus.push_back(place[static_cast<size_t>(r)]);
    const cost::GroupLinks& gl = tables->group(gpus);
    auto [it, fresh] = first.emplace(g.ranks.size(), &gl);
    if (!fresh && !same_links(*it->second, gl)) links_symmetric = 0;
  }
  return links_symmetric == 1;
}

// Every expert of every MoE layer receives the same number of tokens (as build_step routes the stage's tokens),
// so that every EP rank's local experts see the same counts.
bool StageTimer::Impl::routing_even(const GroupBatch& batch) {
  if (!proxy.is_moe()) return true;
  const plan::ParallelConfig& c = plan.pools[0].config;
  const int64_t stage_tokens = (batch.decode_seqs + batch.prefill_tokens) * c.attn_dp;
  for (int64_t l = 0; l < proxy.layers; ++l) {
    if (!proxy.is_moe_layer(l)) continue;
    plan::expert_token_counts(plan.routing, proxy.moe.num_experts, proxy.moe.top_k, stage_tokens, l, counts);
    for (int64_t v : counts)
      if (v != counts.front()) return false;
  }
  return true;
}

// The one-rank path: false (nothing computed) unless every rank runs rank 0's program.
bool StageTimer::Impl::cost_one_rank(const GroupBatch& batch, std::map<int, double>& layer_s) {
  if (!routing_even(batch)) return false;
  builder->build_ranks(batch.to_batch(plan.pools[0].config.attn_dp), probes, step);
  if (step.ranks.size() == 2 && !same_program(step, step.ranks[0], step.ranks[1])) return false;
  if (!groups_alike()) return false;
  if (!cost->cost_symmetric_rank(step, 0, rank_cost, true)) return false;
  // As CostModel::cost on the critical rank (every rank finishes together; rank 0 is the first of them).
  layer_s.clear();
  const auto& ops = step.ranks[0].ops;
  for (size_t i = 0; i < ops.size(); ++i) layer_s[ops[i].layer] += rank_cost[i].time.time_s + rank_cost[i].wait_s;
  return true;
}

StageTimer::StageTimer(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                       const plan::ParallelConfig& shape, const plan::PlanOptions& options, const spec::Engine* engine)
    : impl_(std::make_unique<Impl>()) {
  impl_->engine = engine;
  impl_->init(model, cluster, gpu_type, shape, options, nullptr);
}

StageTimer::StageTimer(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                       const plan::ParallelConfig& shape, const plan::PlanOptions& options, cost::LinkTables& shared,
                       const spec::Engine* engine)
    : impl_(std::make_unique<Impl>()) {
  impl_->engine = engine;
  impl_->init(model, cluster, gpu_type, shape, options, &shared);
}

StageTimer::~StageTimer() = default;
StageTimer::StageTimer(StageTimer&&) noexcept = default;
StageTimer& StageTimer::operator=(StageTimer&&) noexcept = default;

const LayerTimes& StageTimer::times(const GroupBatch& batch) {
  Impl& im = *impl_;
  ++im.lookups;
  auto it = im.memo.find(batch);
  if (it != im.memo.end()) return it->second;
  ++im.evaluations;
  std::map<int, double> one;
  const std::map<int, double>* layer_s = &one;
  cost::StepCost sc;
  if (im.one_rank && im.cost_one_rank(batch, one)) {
    ++im.one_rank_evaluations;
  } else {
    im.builder->build(batch.to_batch(im.plan.pools[0].config.attn_dp), im.step);
    sc = im.cost->cost(im.step);
    layer_s = &sc.layer_s;
  }
  im.builder->trim_scratch();
  LayerTimes t;
  t.tokens = batch.decode_seqs + batch.prefill_tokens;
  if (im.engine) {  // the engine's per-iteration CPU cost, once per iteration (see the constructor)
    const int64_t groups = im.plan.pools[0].config.attn_dp;
    int64_t prefill_seqs = 0;  // as to_batch splits the group's prefill tokens
    if (batch.prefill_tokens > 0 && batch.prompt_len > 0)
      prefill_seqs = batch.prompt_len > batch.prefill_tokens
                         ? 1
                         : batch.prefill_tokens / batch.prompt_len + (batch.prefill_tokens % batch.prompt_len > 0);
    const int64_t seqs = groups * (batch.decode_seqs + prefill_seqs);
    const int64_t tokens = groups * (batch.decode_seqs + batch.prefill_tokens);
    const auto& it = im.engine->iteration;
    const double cpu_s = it.overlap ? 0.0 : cost::iteration_cpu_s(*im.engine, seqs, tokens, static_cast<int>(groups));
    t.ends_s += it.serial_s + cpu_s;
  }
  for (const auto& [layer, s] : *layer_s) {
    if (layer < 0)
      t.ends_s += s;
    else if (im.proxy.is_moe_layer(layer))
      t.moe_s += s;
    else
      t.dense_s += s;
  }
  return im.memo.emplace(batch, t).first->second;
}

int64_t StageTimer::evaluations() const {
  return impl_->evaluations;
}
int64_t StageTimer::lookups() const {
  return impl_->lookups;
}
int64_t StageTimer::one_rank_evaluations() const {
  return impl_->one_rank_evaluations;
}
void StageTimer::set_one_rank(bool allowed) {
  impl_->one_rank = allowed;
}

// ---------------------------------------------------------------------------------------------------------------------

PoolModel::PoolModel(StageTimer& timer, const spec::Model& model, const plan::ParallelConfig& config,
                     const plan::MemoryBudget& memory, const std::vector<std::pair<int64_t, int64_t>>& stage_layers,
                     double p2p_s_per_token, double p2p_latency_s, PoolRole role, const WorkloadLoad& load,
                     const plan::PlanOptions& options)
    : timer_(&timer),
      config_(config),
      p2p_s_per_token_(p2p_s_per_token),
      p2p_latency_s_(p2p_latency_s),
      role_(role),
      load_(load),
      options_(options),
      kv_tokens_(memory.kv_tokens),
      window_(model.sliding_window > 0 ? model.sliding_window + options.kv_block_tokens : 0) {
  for (size_t s = 0; s < stage_layers.size(); ++s) {
    const auto [first, last] = stage_layers[s];
    StageKind k;
    for (int64_t l = first; l < last; ++l) (model.is_moe_layer(l) ? k.moe : k.dense) += 1;
    k.ends = s + 1 == stage_layers.size();
    k.p2p = s > 0;
    auto same = [&](const StageKind& o) {
      return o.dense == k.dense && o.moe == k.moe && o.ends == k.ends && o.p2p == k.p2p;
    };
    auto it = std::find_if(kinds_.begin(), kinds_.end(), same);
    if (it == kinds_.end()) it = kinds_.insert(kinds_.end(), k);
    it->count += 1;
  }
  const int64_t cap = role == PoolRole::kDecode ? options.max_batch_seqs : options.max_batch_tokens;
  for (int64_t t = 1; t < cap; t *= 2) curve_.tau.push_back(static_cast<double>(t));
  curve_.tau.push_back(static_cast<double>(std::max<int64_t>(cap, 1)));
  if (curve_.tau.size() == 1) curve_.tau.push_back(curve_.tau[0] * 2);  // two anchors at least
  curve_.times.resize(curve_.tau.size());
  curve_.done.assign(curve_.tau.size(), false);
}

GroupBatch PoolModel::batch_at(int64_t tau) const {
  const double I = load_.input_mean, O = load_.output_mean;
  const int64_t prompt = std::max<int64_t>(1, std::llround(I));
  const int64_t ctx = std::max<int64_t>(1, std::llround(I + O / 2));
  GroupBatch b;
  switch (role_) {
    case PoolRole::kMixed: {
      b.decode_seqs = std::llround(static_cast<double>(tau) * O / (I + O));
      b.decode_context = b.decode_seqs > 0 ? ctx : 0;
      b.prefill_tokens = tau - b.decode_seqs;
      b.prompt_len = b.prefill_tokens > 0 ? prompt : 0;
      break;
    }
    case PoolRole::kDecode:
      b.decode_seqs = tau;
      b.decode_context = ctx;
      break;
    case PoolRole::kPrefill:
      b.prefill_tokens = tau;
      b.prompt_len = prompt;
      break;
  }
  return b;
}

LayerTimes PoolModel::interpolate(double tau) {
  auto& c = curve_;
  const size_t n = c.tau.size();
  size_t i = 0;  // segment [i, i+1]
  if (tau >= c.tau[n - 1])
    i = n - 2;  // extrapolate from the last segment
  else
    while (i + 2 < n && tau > c.tau[i + 1]) ++i;
  const LayerTimes& a = grid(i);
  const LayerTimes& b = grid(i + 1);
  if (tau <= c.tau[0]) return a;
  const double w = (tau - c.tau[i]) / (c.tau[i + 1] - c.tau[i]);
  LayerTimes t;
  t.dense_s = a.dense_s + w * (b.dense_s - a.dense_s);
  t.moe_s = a.moe_s + w * (b.moe_s - a.moe_s);
  t.ends_s = a.ends_s + w * (b.ends_s - a.ends_s);
  t.tokens = static_cast<int64_t>(std::llround(tau));
  return t;
}

const LayerTimes& PoolModel::grid(size_t k) {
  if (!curve_.done[k]) {
    curve_.times[k] = timer_->times(batch_at(static_cast<int64_t>(curve_.tau[k])));
    curve_.done[k] = true;
  }
  return curve_.times[k];
}

void PoolModel::stage_times(const LayerTimes& t, double& latency, double& cycle) const {
  latency = 0;
  double slowest = 0;
  const double p2p = p2p_latency_s_ + p2p_s_per_token_ * static_cast<double>(t.tokens);
  for (const StageKind& k : kinds_) {
    double st = k.dense * t.dense_s + k.moe * t.moe_s;
    if (k.ends) st += t.ends_s;
    if (k.p2p) st += p2p;
    latency += k.count * st;
    slowest = std::max(slowest, st);
  }
  cycle = std::max(latency, static_cast<double>(config_.pp) * slowest);
}

// On a segment [tau_i, tau_i+1] of the grid the layer times are linear in tau and the transfer term only grows, so
// every stage time is at least the smaller of its values at the two ends without the per-token transfer, and so are
// the latency (their sum) and pp x the slowest stage; below tau_0 the times are those of tau_0.
double PoolModel::cycle_lower_bound(double tau_min) {
  const size_t n = curve_.tau.size();
  if (segment_bound_.empty()) {
    const double pp = config_.pp;
    std::vector<double> lat(n), st(n * kinds_.size());
    for (size_t i = 0; i < n; ++i) {
      const LayerTimes& t = grid(i);
      for (size_t g = 0; g < kinds_.size(); ++g) {
        const StageKind& k = kinds_[g];
        double s = k.dense * t.dense_s + k.moe * t.moe_s;
        if (k.ends) s += t.ends_s;
        if (k.p2p) s += p2p_latency_s_;
        st[i * kinds_.size() + g] = s;
        lat[i] += k.count * s;
      }
    }
    segment_bound_.assign(n - 1, 0);
    for (size_t i = 0; i + 1 < n; ++i) {
      double slowest = 0;
      for (size_t g = 0; g < kinds_.size(); ++g)
        slowest = std::max(slowest, std::min(st[i * kinds_.size() + g], st[(i + 1) * kinds_.size() + g]));
      segment_bound_[i] = std::max(std::min(lat[i], lat[i + 1]), pp * slowest) * (1 - 1e-9);
    }
    for (size_t i = n - 1; i-- > 1;) segment_bound_[i - 1] = std::min(segment_bound_[i - 1], segment_bound_[i]);
  }
  size_t i = 0;  // the segment holding tau_min
  while (i + 2 < n && tau_min > curve_.tau[i + 1]) ++i;
  return segment_bound_[i];
}

double PoolModel::tpot_mean_lower_bound(double rate) {
  const double per_tau = role_ == PoolRole::kMixed ? load_.input_mean + load_.output_mean : load_.output_mean;
  const double tau_min = rate * per_tau * cycle_lower_bound(0) / config_.pp * (1 - 1e-9);
  return cycle_lower_bound(tau_min);
}

double PoolModel::latency_s(double tau) {
  double l = 0, c = 0;
  stage_times(interpolate(tau), l, c);
  return l;
}

double PoolModel::cycle_s(double tau) {
  double l = 0, c = 0;
  stage_times(interpolate(tau), l, c);
  return c;
}

double PoolModel::tau_limit(std::string& why) const {
  const double I = load_.input_mean, O = load_.output_mean;
  const double pp = config_.pp;
  const double kv = static_cast<double>(kv_tokens_);
  const double tokens = static_cast<double>(options_.max_batch_tokens);
  const double seqs = static_cast<double>(options_.max_batch_seqs);
  // KV a running sequence holds on average (a sliding window caps it: the window plus a block).
  const double held = window_ > 0 ? std::min(I + O / 2, static_cast<double>(window_)) : I + O / 2;
  double lim = 0;
  auto take = [&](double v, const char* what) {
    if (lim == 0 || v < lim) lim = v, why = what;
  };
  switch (role_) {
    case PoolRole::kMixed:
      take(tokens, "token budget");
      take(seqs * (I + O) / O, "sequences per iteration");
      take(kv * (I + O) / (pp * O * held), "KV cache");
      break;
    case PoolRole::kDecode:
      take(seqs, "sequences per iteration");
      take(kv / (pp * held), "KV cache");
      break;
    case PoolRole::kPrefill:
      take(tokens, "token budget");
      take(kv / pp, "KV cache");
      break;
  }
  return lim;
}

PoolPoint PoolModel::at(double rate) {
  const double I = load_.input_mean, O = load_.output_mean;
  const double pp = config_.pp;
  const double budget = static_cast<double>(options_.max_batch_tokens);
  PoolPoint p;
  std::string why;
  const double lim = tau_limit(why);
  const bool needs_prompt_kv = role_ == PoolRole::kDecode ? false : true;
  if (static_cast<double>(kv_tokens_) < (needs_prompt_kv ? I : I + O) || lim < 1) {
    p.limit = "KV cache";
    return p;
  }
  // ca2 + cs2 (Kingman), the arrivals' ca2 that of one group's share of the stream: the workload's rate split over
  // rate_per_s / rate groups, each a 1/n thinning (Whitt's splitting, ca2' = 1 + (ca2 - 1) / n).
  const double groups = rate > 0 ? std::max(1.0, load_.rate_per_s / rate) : 1.0;
  // A mixed pool's chunked prefill shares each iteration's token budget among the waiting prompts' chunks, and its
  // simulated TTFT p99 did not follow the prompt lengths' variability (cs2 over-estimated it 20-90% on the shipped
  // scenarios): only a prefill pool's prompts queue whole behind each other.
  const double cs2 = role_ == PoolRole::kPrefill ? load_.input_cv2 : 0.0;
  const double variability = 1 + (load_.arrival_cv2 - 1) / groups + cs2;
  const double I99 = std::max(I, load_.input_p99);
  auto queue_p99 = [&](double rho, double service_s) {
    return rho <= 0.01 ? 0.0 : service_s * variability * std::log(100 * rho) / (2 * (1 - rho));
  };
  auto queue_mean = [&](double rho, double service_s) { return service_s * variability * rho / (2 * (1 - rho)); };
  if (role_ == PoolRole::kPrefill) {
    const double R = pp * budget / cycle_s(budget);  // prompt tokens/s with full-budget iterations
    const double rho = rate * I / R;
    if (rho >= 1) {
      p.limit = "prefill";
      return p;
    }
    auto own = [&](double x) {
      return (std::ceil(x / budget) - 1) * cycle_s(budget) +
             latency_s(std::min(budget, std::min(x, budget) + rho * budget));
    };
    p.stable = true;
    p.batch = rho * budget;
    p.ttft_p99_s = queue_p99(rho, I / R) + own(I);
    if (I99 > I) p.ttft_p99_s = std::max(p.ttft_p99_s, queue_mean(rho, I / R) + own(I99));
    return p;
  }
  const double per_tau = role_ == PoolRole::kMixed ? (I + O) : O;  // tokens arriving per unit of tau
  auto excess = [&](double tau) { return rate * per_tau * cycle_s(tau) / pp - tau; };
  if (excess(lim) > 0) {
    p.limit = why;
    return p;
  }
  double lo = 0, hi = lim;
  for (int k = 0; k < kBisection; ++k) {
    const double mid = 0.5 * (lo + hi);
    (excess(mid) > 0 ? lo : hi) = mid;
  }
  const double tau = hi;
  const double seqs = role_ == PoolRole::kMixed ? tau * O / (I + O) : tau;
  const double seqs99 = seqs + kZ99 * std::sqrt(seqs);
  p.batch = tau;
  p.tpot_mean_s = cycle_s(tau);
  p.tpot_p99_s = cycle_s(role_ == PoolRole::kMixed ? seqs99 * (I + O) / O : seqs99);
  if (role_ == PoolRole::kMixed) {
    const double room = std::max(1.0, budget - seqs);  // prefill tokens an iteration can take
    const double R = pp * room / cycle_s(budget);
    const double rho = rate * I / R;
    if (rho >= 1) {
      p.limit = "prefill";
      return p;
    }
    auto own = [&](double x) {
      return (std::ceil(x / room) - 1) * cycle_s(budget) +
             latency_s(std::min(budget, seqs + std::min(x, room) + rho * room));
    };
    p.ttft_p99_s = queue_p99(rho, I / R) + own(I);
  }
  p.stable = true;
  return p;
}

bool PoolModel::meets(const PoolPoint& p, const spec::Slo& slo, double extra_ttft_s) const {
  if (!p.stable) return false;
  const bool ttft = role_ != PoolRole::kDecode, tpot = role_ != PoolRole::kPrefill;
  if (ttft && slo.ttft_p99_s && p.ttft_p99_s + extra_ttft_s > *slo.ttft_p99_s) return false;
  if (tpot && slo.tpot_p99_s && p.tpot_p99_s > *slo.tpot_p99_s) return false;
  if (role_ == PoolRole::kMixed && slo.e2e_p99_s &&
      p.ttft_p99_s + std::max(0.0, load_.output_mean - 1) * p.tpot_p99_s > *slo.e2e_p99_s)
    return false;
  return true;
}

double PoolModel::max_rate(const spec::Slo& slo, double extra_ttft_s) {
  const double I = load_.input_mean, O = load_.output_mean;
  const double pp = config_.pp;
  std::string why;
  const double lim = tau_limit(why);
  if (lim < 1) return 0;
  double hi = 0;
  if (role_ == PoolRole::kPrefill) {
    const double budget = static_cast<double>(options_.max_batch_tokens);
    hi = pp * budget / cycle_s(budget) / I;
  } else {
    hi = pp * lim / ((role_ == PoolRole::kMixed ? I + O : O) * cycle_s(lim));
  }
  if (!(hi > 0)) return 0;
  double lo = hi * 1e-6;
  if (!meets(at(lo), slo, extra_ttft_s)) return 0;
  for (int k = 0; k < kBisection; ++k) {
    const double mid = 0.5 * (lo + hi);
    (meets(at(mid), slo, extra_ttft_s) ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace parasol::search

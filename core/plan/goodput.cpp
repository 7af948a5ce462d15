// Steady-state estimator (goodput.hpp): memoized stage costing and the per-pool queueing model.
#include "core/plan/goodput.hpp"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/common/error.hpp"
#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"

namespace parasol::plan {

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

Batch GroupBatch::to_batch(int attn_dp) const {
  Batch b;
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
  Plan plan;
  std::unique_ptr<StepBuilder> builder;
  std::unique_ptr<cost::CostModel> cost;
  std::map<GroupBatch, LayerTimes> memo;
  Step step;
  int64_t evaluations = 0, lookups = 0;
};

StageTimer::StageTimer(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                       const ParallelConfig& shape, const PlanOptions& options)
    : impl_(std::make_unique<Impl>()) {
  ParallelConfig c = shape;
  c.pp = 1;
  c.dp = 1;
  impl_->proxy = proxy_model(model);
  MadePlan made = make_plan(impl_->proxy, cluster, gpu_type, c, options);
  if (made.plan.pools.empty() || made.plan.pools[0].placement.empty()) {
    std::string why;
    for (const auto& r : made.feasibility.reasons) why += "; " + r;
    throw Error("search: stage shape " + c.label() + " cannot be placed" + why);
  }
  impl_->plan = std::move(made.plan);
  impl_->builder = std::make_unique<StepBuilder>(impl_->plan, 0);
  impl_->cost = std::make_unique<cost::CostModel>(impl_->plan, cluster);
}

StageTimer::~StageTimer() = default;
StageTimer::StageTimer(StageTimer&&) noexcept = default;
StageTimer& StageTimer::operator=(StageTimer&&) noexcept = default;

const LayerTimes& StageTimer::times(const GroupBatch& batch) {
  ++impl_->lookups;
  auto it = impl_->memo.find(batch);
  if (it != impl_->memo.end()) return it->second;
  ++impl_->evaluations;
  const int adp = impl_->plan.pools[0].config.attn_dp;
  impl_->builder->build(batch.to_batch(adp), impl_->step);
  cost::StepCost sc = impl_->cost->cost(impl_->step);
  LayerTimes t;
  t.tokens = batch.decode_seqs + batch.prefill_tokens;
  for (const auto& [layer, s] : sc.layer_s) {
    if (layer < 0)
      t.ends_s += s;
    else if (impl_->proxy.is_moe_layer(layer))
      t.moe_s += s;
    else
      t.dense_s += s;
  }
  return impl_->memo.emplace(batch, t).first->second;
}

int64_t StageTimer::evaluations() const {
  return impl_->evaluations;
}
int64_t StageTimer::lookups() const {
  return impl_->lookups;
}

// ---------------------------------------------------------------------------------------------------------------------

PoolModel::PoolModel(StageTimer& timer, const spec::Model& model, const ParallelConfig& config,
                     const MemoryBudget& memory, const std::vector<std::pair<int64_t, int64_t>>& stage_layers,
                     double p2p_s_per_token, double p2p_latency_s, PoolRole role, const WorkloadLoad& load,
                     const PlanOptions& options)
    : timer_(&timer),
      config_(config),
      p2p_s_per_token_(p2p_s_per_token),
      p2p_latency_s_(p2p_latency_s),
      role_(role),
      load_(load),
      options_(options),
      kv_tokens_(memory.kv_tokens) {
  for (const auto& [first, last] : stage_layers) {
    int64_t dense = 0, moe = 0;
    for (int64_t l = first; l < last; ++l) (model.is_moe_layer(l) ? moe : dense) += 1;
    dense_per_stage_.push_back(dense);
    moe_per_stage_.push_back(moe);
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
  for (size_t k : {i, i + 1}) {
    if (!c.done[k]) {
      c.times[k] = timer_->times(batch_at(static_cast<int64_t>(c.tau[k])));
      c.done[k] = true;
    }
  }
  if (tau <= c.tau[0]) return c.times[0];
  const double w = (tau - c.tau[i]) / (c.tau[i + 1] - c.tau[i]);
  const LayerTimes& a = c.times[i];
  const LayerTimes& b = c.times[i + 1];
  LayerTimes t;
  t.dense_s = a.dense_s + w * (b.dense_s - a.dense_s);
  t.moe_s = a.moe_s + w * (b.moe_s - a.moe_s);
  t.ends_s = a.ends_s + w * (b.ends_s - a.ends_s);
  t.tokens = static_cast<int64_t>(std::llround(tau));
  return t;
}

void PoolModel::stage_times(const LayerTimes& t, double& latency, double& cycle) const {
  const size_t pp = dense_per_stage_.size();
  latency = 0;
  double slowest = 0;
  for (size_t s = 0; s < pp; ++s) {
    double st = static_cast<double>(dense_per_stage_[s]) * t.dense_s + static_cast<double>(moe_per_stage_[s]) * t.moe_s;
    if (s + 1 == pp) st += t.ends_s;
    if (s > 0) st += p2p_latency_s_ + p2p_s_per_token_ * static_cast<double>(t.tokens);
    latency += st;
    slowest = std::max(slowest, st);
  }
  cycle = std::max(latency, static_cast<double>(pp) * slowest);
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
  double lim = 0;
  auto take = [&](double v, const char* what) {
    if (lim == 0 || v < lim) lim = v, why = what;
  };
  switch (role_) {
    case PoolRole::kMixed:
      take(tokens, "token budget");
      take(seqs * (I + O) / O, "sequences per iteration");
      take(kv * (I + O) / (pp * O * (I + O / 2)), "KV cache");
      break;
    case PoolRole::kDecode:
      take(seqs, "sequences per iteration");
      take(kv / (pp * (I + O / 2)), "KV cache");
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
  auto queue_p99 = [](double rho, double service_s) {
    return rho <= 0.01 ? 0.0 : service_s * std::log(100 * rho) / (2 * (1 - rho));
  };
  if (role_ == PoolRole::kPrefill) {
    const double R = pp * budget / cycle_s(budget);  // prompt tokens/s with full-budget iterations
    const double rho = rate * I / R;
    if (rho >= 1) {
      p.limit = "prefill";
      return p;
    }
    const double chunks = std::ceil(I / budget);
    p.stable = true;
    p.batch = rho * budget;
    p.ttft_p99_s = queue_p99(rho, I / R) + (chunks - 1) * cycle_s(budget) +
                   latency_s(std::min(budget, std::min(I, budget) + rho * budget));
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
    const double chunks = std::ceil(I / room);
    const double own = std::min(budget, seqs + std::min(I, room) + rho * room);
    p.ttft_p99_s = queue_p99(rho, I / R) + (chunks - 1) * cycle_s(budget) + latency_s(own);
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

}  // namespace parasol::plan

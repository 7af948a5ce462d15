// Plan search (search.hpp): enumeration of layouts, per-pool estimates, colocated and disaggregated candidates.
#include "core/search/search.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <numeric>
#include <tuple>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/cost/collective_cost.hpp"
#include "core/plan/feasibility.hpp"
#include "core/search/search_collect.hpp"

namespace parasol::search {

namespace {

std::vector<int> one_to(int64_t max) {
  std::vector<int> out;
  for (int64_t v = 1; v <= max; ++v) out.push_back(static_cast<int>(v));
  return out;
}

// Divisors of n up to max, ascending.
std::vector<int> divisors(int64_t n, int64_t max) {
  std::vector<int> out;
  for (int64_t v = 1; v <= std::min(n, max); ++v)
    if (n % v == 0) out.push_back(static_cast<int>(v));
  return out;
}

// One feasible instance layout with what its pools need.
struct Layout {
  plan::ParallelConfig config;  // dp = 1
  plan::FeasibilityResult feas;
  std::vector<int> gpus;  // instance 0's placement
  double p2p_s_per_token = 0, p2p_latency_s = 0;
  double kv_transfer_s = 0;  // a mean prompt's KV from this layout (as prefill) to another instance
  StageTimer* timer = nullptr;
};

struct ShapeKey {
  int tp, adp, ep;
  bool operator<(const ShapeKey& o) const { return std::tie(tp, adp, ep) < std::tie(o.tp, o.adp, o.ep); }
};

enum class Miss { kNone, kOverloaded, kTtft, kTpot, kE2e };

// The first SLO a pool misses at a point (one test for the verdict and its text).
Miss first_miss(const PoolPoint& p, PoolRole role, const spec::Slo& slo, double extra_ttft_s, double output_mean) {
  if (!p.stable) return Miss::kOverloaded;
  if (role != PoolRole::kDecode && slo.ttft_p99_s && p.ttft_p99_s + extra_ttft_s > *slo.ttft_p99_s) return Miss::kTtft;
  if (role != PoolRole::kPrefill && slo.tpot_p99_s && p.tpot_p99_s > *slo.tpot_p99_s) return Miss::kTpot;
  if (role == PoolRole::kMixed && slo.e2e_p99_s &&
      p.ttft_p99_s + std::max(0.0, output_mean - 1) * p.tpot_p99_s > *slo.e2e_p99_s)
    return Miss::kE2e;
  return Miss::kNone;
}

std::string violation_at(const PoolPoint& p, PoolRole role, const spec::Slo& slo, double extra_ttft_s,
                         double output_mean, double rate) {
  char at[64];
  std::snprintf(at, sizeof at, " at %.4g req/s", rate);
  switch (first_miss(p, role, slo, extra_ttft_s, output_mean)) {
    case Miss::kNone:
      return "";
    case Miss::kOverloaded:
      return std::string(to_string(role)) + " pool overloaded (" + p.limit + ")" + at;
    case Miss::kTtft:
      return "TTFT p99 " + format_time(p.ttft_p99_s + extra_ttft_s) + " > SLO " + format_time(*slo.ttft_p99_s) + at;
    case Miss::kTpot:
      return "TPOT p99 " + format_time(p.tpot_p99_s) + " > SLO " + format_time(*slo.tpot_p99_s) + at;
    case Miss::kE2e: {
      const double e2e = p.ttft_p99_s + std::max(0.0, output_mean - 1) * p.tpot_p99_s;
      return "E2E p99 " + format_time(e2e) + " > SLO " + format_time(*slo.e2e_p99_s) + at;
    }
  }
  return "";
}

// Scenario-load points per (layout, instances), computed on first use.
class PointMemo {
 public:
  PointMemo(const std::vector<int>& size, int budget) {
    for (int s : size) {
      offset_.push_back(slots_.size());
      slots_.resize(slots_.size() + static_cast<size_t>(budget / s) + 1, -1);
    }
  }
  template <class F>
  const PoolPoint& get(size_t layout, int dp, F&& compute) {
    int32_t& slot = slots_[offset_[layout] + static_cast<size_t>(dp)];
    if (slot < 0) {
      slot = static_cast<int32_t>(points_.size());
      points_.push_back(compute());
    }
    return points_[static_cast<size_t>(slot)];
  }

 private:
  std::vector<size_t> offset_;
  std::vector<int32_t> slots_;
  std::deque<PoolPoint> points_;  // stable addresses
};

// tokens/s/user = 1 / mean TPOT <= 1 / a lower bound of it.
double user_bound(double tpot_lower_bound_s) {
  return tpot_lower_bound_s > 0 ? 1 / tpot_lower_bound_s : std::numeric_limits<double>::infinity();
}

}  // namespace

std::string Candidate::label() const {
  if (!disaggregated) return mixed.config.label();
  return plan::DisaggConfig{prefill.config, decode.config}.label();
}

bool ranks_before(const Candidate& a, const Candidate& b) {
  return ranks_before_under(a, b, spec::Objective::kGoodputPerGpu);
}

bool ranks_before_under(const Candidate& a, const Candidate& b, spec::Objective objective) {
  if (a.meets_slo != b.meets_slo) return a.meets_slo;
  if (objective == spec::Objective::kFewestGpus && a.gpus != b.gpus) return a.gpus < b.gpus;
  if (a.goodput_tok_s_per_gpu != b.goodput_tok_s_per_gpu) return a.goodput_tok_s_per_gpu > b.goodput_tok_s_per_gpu;
  if (a.tok_s_per_user != b.tok_s_per_user) return a.tok_s_per_user > b.tok_s_per_user;
  if (a.gpus != b.gpus) return a.gpus < b.gpus;
  return a.label() < b.label();
}

SearchResult search(const SearchInput& in) {
  if (!in.cluster) throw Error("search: no cluster");
  const spec::Cluster& cluster = *in.cluster;
  const spec::Model& model = in.model;
  const spec::Gpu& gpu = cluster.gpu_types.at(in.gpu_type);
  const WorkloadLoad& load = in.load;
  if (!(load.rate_per_s > 0) || !(load.input_mean >= 1) || !(load.output_mean >= 1))
    throw Error("search: the workload needs a rate > 0 and mean lengths >= 1 token");

  plan::PlanOptions options = in.options;
  options.weight_dtype_set = true;
  options.weight_dtype = in.space.weight_dtype;
  options.kv_dtype_set = true;
  options.kv_dtype = in.space.kv_dtype;
  options.allow_cross_domain_tp = in.space.allow_cross_domain_tp;

  SearchResult res;
  res.objective = in.space.objective;
  res.load = load;
  int available = 0, domain = 0;
  for (int g = 0; g < cluster.gpu_count(); ++g)
    if (cluster.graph[cluster.gpus[static_cast<size_t>(g)]].gpu_type == in.gpu_type) ++available;
  for (const auto& d : cluster.scaleup_domains) {
    int n = 0;
    for (int g : d)
      if (cluster.graph[cluster.gpus[static_cast<size_t>(g)]].gpu_type == in.gpu_type) ++n;
    domain = std::max(domain, n);
  }
  const int budget = in.space.gpus ? *in.space.gpus : available;
  if (budget > available)
    throw Error("search: GPU budget " + std::to_string(budget) + " exceeds the cluster's " + std::to_string(available) +
                " GPUs of type " + in.gpu_type);
  res.gpu_budget = budget;

  // The space (search.hpp): tp x attn_dp x ep x pp.
  const bool moe = model.is_moe();
  const std::vector<int> tps =
      !in.space.tp.empty() ? in.space.tp : divisors(model.heads, in.space.allow_cross_domain_tp ? budget : domain);
  const std::vector<int> pps = !in.space.pp.empty() ? in.space.pp : one_to(std::min<int64_t>(model.layers, budget));
  const int min_pp = *std::min_element(pps.begin(), pps.end());
  // The ep values of a stage of `stage` ranks: the scenario's (those dividing the stage), else every legal one (ep
  // divides the experts and the stage, the expert tensor parallelism stage / ep divides the expert FFN).
  auto stage_eps = [&](int64_t stage) {
    std::vector<int> eps;
    if (!in.space.ep.empty()) {
      for (int ep : in.space.ep)
        if (ep >= 1 && stage % ep == 0 && (moe || ep == 1)) eps.push_back(ep);
      return eps;
    }
    if (!moe) return std::vector<int>{1};
    for (int ep : divisors(std::gcd(stage, model.moe.num_experts), stage))
      if (model.moe.expert_ffn % (stage / ep) == 0) eps.push_back(ep);
    return eps;
  };

  cost::LinkTables tables(cluster);
  cost::LinkCache& links = tables.links();
  std::map<ShapeKey, std::unique_ptr<StageTimer>> timers;
  std::vector<Layout> layouts;
  for (int tp : tps) {
    // attn_dp: the scenario's, else (MoE) every value whose stage fits the budget and has an ep, else 1.
    std::vector<int> adps = in.space.attn_dp;
    if (adps.empty()) {
      adps = {1};
      for (int64_t a = 2; moe && int64_t{tp} * a * min_pp <= budget; ++a)
        if (!stage_eps(int64_t{tp} * a).empty()) adps.push_back(static_cast<int>(a));
    }
    for (int adp : adps) {
      const int64_t stage = int64_t{tp} * adp;
      for (int ep : stage_eps(stage)) {
        for (int pp : pps) {
          if (stage * pp > budget) continue;
          plan::ParallelConfig c;
          c.tp = tp, c.attn_dp = adp, c.ep = ep, c.pp = pp, c.dp = 1;
          ++res.stats.layouts;
          Layout L;
          L.config = c;
          L.feas = plan::check_feasibility(model, gpu, c, options);
          plan::Feasibility f = L.feas.feasibility;
          if (f.ok) {
            plan::PlacementResult pr = plan::place(cluster, in.gpu_type, c, options);
            for (auto& r : pr.feasibility.reasons) f.reasons.push_back(r);
            f.ok = pr.feasibility.ok && !pr.placement.empty();
            if (f.ok) L.gpus = pr.placement[0];
          }
          if (!f.ok) {
            res.infeasible.push_back({c, f.reasons});
            continue;
          }
          layouts.push_back(std::move(L));
        }
      }
    }
  }
  res.stats.feasible_layouts = static_cast<int64_t>(layouts.size());

  // Per layout: stage timer, pipeline transfer cost, KV transfer cost.
  const double act_bytes = dtype_bytes(model.act_dtype);
  for (auto& L : layouts) {
    const plan::ParallelConfig& c = L.config;
    auto& timer = timers[{c.tp, c.attn_dp, c.ep}];
    if (!timer)
      timer = std::make_unique<StageTimer>(model, cluster, in.gpu_type, c, options, tables,
                                           in.engine ? &*in.engine : nullptr);
    L.timer = timer.get();
    double bw = 0, lat = 0;
    for (int s = 0; s + 1 < c.pp; ++s) {
      const auto& path =
          links.path(L.gpus[static_cast<size_t>(c.rank(s, 0, 0))], L.gpus[static_cast<size_t>(c.rank(s + 1, 0, 0))]);
      bw = bw == 0 ? path.bw_Bps : std::min(bw, path.bw_Bps);
      lat = std::max(lat, path.latency_s);
    }
    if (bw > 0) {
      L.p2p_s_per_token = 2.0 * static_cast<double>(model.hidden) * act_bytes / (bw * gpu.eff.comm_efficiency);
      L.p2p_latency_s = lat;
    }
    // KV of a mean prompt: every rank sends its shard in parallel to the decode instance, placed after this one.
    double kv_rank = 0;
    for (const auto& layers : L.feas.stage_layers)
      kv_rank = std::max(kv_rank, plan::rank_kv_bytes_per_token(model, c.tp, options.kv_dtype, layers));
    const int size = c.instance_size();
    const int peer =
        L.gpus[0] + size < cluster.gpu_count() ? L.gpus[0] + size : (L.gpus[0] + size) % cluster.gpu_count();
    const auto& path = links.path(L.gpus[0], peer == L.gpus[0] ? (peer + 1) % cluster.gpu_count() : peer);
    if (path.bw_Bps > 0)
      L.kv_transfer_s = load.input_mean * kv_rank / (path.bw_Bps * gpu.eff.comm_efficiency) + path.latency_s;
  }
  res.stats.stage_shapes = static_cast<int64_t>(timers.size());

  const bool colocated = in.space.disaggregation != spec::Disaggregation::kOn;
  const bool disagg = in.space.disaggregation != spec::Disaggregation::kOff;
  auto pool_model = [&](const Layout& L, PoolRole role) {
    return PoolModel(*L.timer, model, L.config, L.feas.memory, L.feas.stage_layers, L.p2p_s_per_token, L.p2p_latency_s,
                     role, load, options);
  };
  auto estimate = [&](const Layout& L, PoolRole role, double rate) {
    PoolEstimate e;
    e.config = L.config;
    e.role = role;
    e.kv_tokens = L.feas.memory.kv_tokens;
    e.max_rate_per_group = rate;
    return e;
  };

  const bool keep_all = in.keep_top <= 0;
  // Fewest GPUs: each candidate is sized to the workload's rate, so its GPU count is known in O(1) and every
  // candidate is ranked on it (no pruning by goodput bounds, no frontier).
  const bool fewest = in.space.objective == spec::Objective::kFewestGpus;
  const bool collect_all = keep_all || fewest;
  std::vector<Candidate> all;  // collect_all: every ranked candidate
  std::vector<Candidate> colocated_list;
  RankedCollector keep(collect_all ? 0 : static_cast<size_t>(in.keep_top));
  // Instances of `groups_per_instance` groups of per-group goodput `rate` that carry the workload's rate: the
  // smallest n with n x groups x rate >= the rate (0 when the layout meets the SLOs at no load).
  auto instances_for_rate = [&](double rate, int groups_per_instance) -> int64_t {
    if (!(rate > 0)) return 0;
    const double need = load.rate_per_s / (rate * groups_per_instance);
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(need * (1 - 1e-12))));
  };
  auto over_budget = [&](int64_t gpus) {
    return "needs " + std::to_string(gpus) + " GPUs for " + format_number("%.4g", load.rate_per_s) +
           " req/s; the budget is " + std::to_string(budget);
  };
  auto offer = [&](Candidate&& c) {
    ++res.ranked_total;
    if (collect_all) {
      all.push_back(std::move(c));
    } else {
      keep.offer(c);
      colocated_list.push_back(std::move(c));  // only colocated candidates are offered this way
    }
  };

  if (colocated) {
    for (const auto& L : layouts) {
      PoolModel pm = pool_model(L, PoolRole::kMixed);
      Candidate c;
      c.mixed = estimate(L, PoolRole::kMixed, pm.max_rate(in.slo));
      const int max_dp = budget / L.config.instance_size();
      const int64_t needed = instances_for_rate(c.mixed.max_rate_per_group, L.config.attn_dp);
      c.mixed.config.dp = fewest && needed > 0 ? static_cast<int>(std::min<int64_t>(needed, max_dp)) : max_dp;
      c.gpus = c.mixed.config.total_gpus();
      const double groups = static_cast<double>(c.mixed.config.dp) * L.config.attn_dp;
      c.goodput_rps = groups * c.mixed.max_rate_per_group;
      c.goodput_tok_s_per_gpu = c.goodput_rps * load.output_mean / c.gpus;
      const PoolPoint best = pm.at(c.mixed.max_rate_per_group > 0 ? c.mixed.max_rate_per_group : 1e-9);
      c.tok_s_per_user = best.stable && best.tpot_mean_s > 0 ? 1 / best.tpot_mean_s : 0;
      const PoolPoint now = pm.at(load.rate_per_s / groups);
      c.violation = violation_at(now, PoolRole::kMixed, in.slo, 0, load.output_mean, load.rate_per_s);
      if (fewest && needed > max_dp) c.violation = over_budget(needed * L.config.instance_size());
      c.meets_slo = c.violation.empty();
      c.ttft_p99_s = now.ttft_p99_s, c.tpot_p99_s = now.tpot_p99_s, c.tpot_mean_s = now.tpot_mean_s;
      ++res.stats.candidates;
      offer(std::move(c));
    }
  }

  std::vector<PoolModel> pre, dec;
  std::vector<double> a, b;         // per-group goodput of each layout as prefill / as decode
  std::vector<double> alpha, beta;  // the same per GPU of an instance (req/s)
  std::vector<int> size;            // GPUs of an instance
  for (const auto& L : layouts) size.push_back(L.config.instance_size());
  if (disagg) {
    for (const auto& L : layouts) {
      pre.push_back(pool_model(L, PoolRole::kPrefill));
      dec.push_back(pool_model(L, PoolRole::kDecode));
      a.push_back(pre.back().max_rate(in.slo, L.kv_transfer_s));
      b.push_back(dec.back().max_rate(in.slo));
      alpha.push_back(a.back() * L.config.attn_dp / L.config.instance_size());
      beta.push_back(b.back() * L.config.attn_dp / L.config.instance_size());
    }
  }
  // Scenario-load points per (layout, instances), memoized: they do not depend on the other pool.
  PointMemo pre_at(size, budget), dec_at(size, budget);
  auto point = [&](PointMemo& memo, std::vector<PoolModel>& pools, size_t i, int dp) -> const PoolPoint& {
    return memo.get(i, dp, [&] {
      const double groups = static_cast<double>(dp) * layouts[i].config.attn_dp;
      return pools[i].at(load.rate_per_s / groups);
    });
  };
  // The split of the budget with the highest goodput per GPU (the first of equals).
  struct Split {
    int dp_p = 1, dp_d = 1, gpus = 0;
    double rate = -1, per_gpu = -1;
  };
  auto best_split = [&](size_t p, size_t d) {
    const int sp = size[p], sd = size[d];
    const double ap = a[p] * layouts[p].config.attn_dp, bd = b[d] * layouts[d].config.attn_dp;
    Split s;
    s.dp_d = (budget - sp) / sd;
    for (int dp_p = 1; dp_p * sp + sd <= budget; ++dp_p) {
      const int dp_d = (budget - dp_p * sp) / sd;
      const int gpus = dp_p * sp + dp_d * sd;
      const double rate = std::min(dp_p * ap, dp_d * bd);
      const double per_gpu = rate / gpus;
      if (per_gpu > s.per_gpu) s.per_gpu = per_gpu, s.rate = rate, s.dp_p = dp_p, s.dp_d = dp_d, s.gpus = gpus;
    }
    return s;
  };
  auto goodput_per_gpu = [&](const Split& s) { return s.rate * load.output_mean / s.gpus; };
  // An upper bound of a pair's goodput/GPU: rate / GPUs = min(alpha x, beta y) / (x + y) <= alpha beta / (alpha + beta)
  // for any x, y GPUs of the two pools (with a margin for rounding).
  auto gpg_bound = [&](size_t p, size_t d) {
    return load.output_mean * alpha[p] * beta[d] / (alpha[p] + beta[d]) * (1 + 1e-9);
  };
  // The verdict at the scenario's load (as pair_candidate's violation, without the text).
  auto pair_meets = [&](size_t p, size_t d, const Split& s) {
    const double kv = layouts[p].kv_transfer_s;
    const PoolPoint& pn = point(pre_at, pre, p, s.dp_p);
    if (first_miss(pn, PoolRole::kPrefill, in.slo, kv, load.output_mean) != Miss::kNone) return false;
    const PoolPoint& dn = point(dec_at, dec, d, s.dp_d);
    if (first_miss(dn, PoolRole::kDecode, in.slo, 0, load.output_mean) != Miss::kNone) return false;
    return !(in.slo.e2e_p99_s &&
             pn.ttft_p99_s + kv + std::max(0.0, load.output_mean - 1) * dn.tpot_p99_s > *in.slo.e2e_p99_s);
  };
  auto pair_candidate = [&](size_t p, size_t d, const Split& s) {
    Candidate c;
    c.disaggregated = true;
    c.prefill = estimate(layouts[p], PoolRole::kPrefill, a[p]);
    c.decode = estimate(layouts[d], PoolRole::kDecode, b[d]);
    c.prefill.config.dp = s.dp_p;
    c.decode.config.dp = s.dp_d;
    c.gpus = s.gpus;
    c.kv_transfer_s = layouts[p].kv_transfer_s;
    c.goodput_rps = s.rate;
    c.goodput_tok_s_per_gpu = goodput_per_gpu(s);
    const double dec_groups = static_cast<double>(s.dp_d) * layouts[d].config.attn_dp;
    const PoolPoint at_goodput = dec[d].at(s.rate / dec_groups);
    c.tok_s_per_user = at_goodput.stable && at_goodput.tpot_mean_s > 0 ? 1 / at_goodput.tpot_mean_s : 0;
    const PoolPoint& pn = point(pre_at, pre, p, s.dp_p);
    const PoolPoint& dn = point(dec_at, dec, d, s.dp_d);
    c.violation = violation_at(pn, PoolRole::kPrefill, in.slo, c.kv_transfer_s, load.output_mean, load.rate_per_s);
    if (c.violation.empty())
      c.violation = violation_at(dn, PoolRole::kDecode, in.slo, 0, load.output_mean, load.rate_per_s);
    if (c.violation.empty() && in.slo.e2e_p99_s) {
      const double e2e = pn.ttft_p99_s + c.kv_transfer_s + std::max(0.0, load.output_mean - 1) * dn.tpot_p99_s;
      if (e2e > *in.slo.e2e_p99_s)
        c.violation = "E2E p99 " + format_time(e2e) + " > SLO " + format_time(*in.slo.e2e_p99_s);
    }
    c.meets_slo = c.violation.empty();
    c.ttft_p99_s = pn.ttft_p99_s + c.kv_transfer_s, c.tpot_p99_s = dn.tpot_p99_s, c.tpot_mean_s = dn.tpot_mean_s;
    return c;
  };

  if (disagg) {
    // Counts in closed form (every pair that fits and each of its splits, pruned or not).
    const size_t n = layouts.size();
    for (size_t p = 0; p < n; ++p)
      for (size_t d = 0; d < n; ++d)
        if (size[p] + size[d] <= budget) {
          ++res.stats.pairs;
          res.stats.candidates += (budget - size[d]) / size[p];
          // A pair is ranked when some split has a non-zero rate: both pools meet their SLOs at some load.
          if (a[p] > 0 && b[d] > 0) ++res.ranked_total;
        }
  }

  if (disagg && fewest) {
    // Each pool sized to the rate: the fewest instances of each that carry it (a split that does not fit the budget
    // falls back to the budget's best split and misses the SLOs). Keys are O(1) per pair; only the pairs that can be
    // among the best keep_top (ties with the last included) are estimated in full.
    struct PairKey {
      size_t p, d;
      Split s;
      int64_t needed_gpus;  // the sizing to the rate (over the budget: the split is the budget's best instead)
      bool meets;
      double gpg;
    };
    std::vector<PairKey> keys;
    for (size_t p = 0; p < layouts.size(); ++p)
      for (size_t d = 0; d < layouts.size(); ++d) {
        if (size[p] + size[d] > budget || !(a[p] > 0 && b[d] > 0)) continue;
        ++res.stats.pairs_split;
        const int64_t np = instances_for_rate(a[p], layouts[p].config.attn_dp);
        const int64_t nd = instances_for_rate(b[d], layouts[d].config.attn_dp);
        PairKey k{p, d, {}, np * size[p] + nd * size[d], false, 0};
        if (k.needed_gpus > budget) {
          k.s = best_split(p, d);
        } else {
          k.s.dp_p = static_cast<int>(np), k.s.dp_d = static_cast<int>(nd);
          k.s.gpus = k.s.dp_p * size[p] + k.s.dp_d * size[d];
          k.s.rate = std::min(np * a[p] * layouts[p].config.attn_dp, nd * b[d] * layouts[d].config.attn_dp);
          k.s.per_gpu = k.s.rate / k.s.gpus;
          k.meets = pair_meets(p, d, k.s);
        }
        k.gpg = goodput_per_gpu(k.s);
        keys.push_back(k);
      }
    auto key_before = [](const PairKey& x, const PairKey& y) {
      if (x.meets != y.meets) return x.meets;
      if (x.s.gpus != y.s.gpus) return x.s.gpus < y.s.gpus;
      return x.gpg > y.gpg;
    };
    size_t n = keys.size();
    if (!keep_all && n > static_cast<size_t>(in.keep_top)) {
      const auto kth = keys.begin() + in.keep_top - 1;
      std::nth_element(keys.begin(), kth, keys.end(), key_before);
      const PairKey last = *kth;
      auto tail = std::partition(kth + 1, keys.end(), [&](const PairKey& x) { return !key_before(last, x); });
      n = static_cast<size_t>(tail - keys.begin());
    }
    for (size_t i = 0; i < n; ++i) {
      const PairKey& k = keys[i];
      ++res.stats.pairs_estimated;
      Candidate c = pair_candidate(k.p, k.d, k.s);
      if (k.needed_gpus > budget) {
        c.meets_slo = false;
        c.violation = over_budget(k.needed_gpus);
      }
      all.push_back(std::move(c));
    }
  }

  if (disagg && keep_all && !fewest) {
    for (size_t p = 0; p < layouts.size(); ++p)
      for (size_t d = 0; d < layouts.size(); ++d) {
        if (size[p] + size[d] > budget) continue;
        ++res.stats.pairs_split;
        const Split s = best_split(p, d);
        if (!(s.rate > 0)) continue;  // no split meets the SLOs even at a trickle: not ranked
        ++res.stats.pairs_estimated;
        all.push_back(pair_candidate(p, d, s));
      }
  } else if (disagg && !fewest) {
    // Pruned evaluation (docs/search.md): a pair's goodput/GPU is at most O x alpha beta / (alpha + beta) (the best
    // continuous split of the two per-GPU rates), its tokens/s/user at most 1 / a lower bound of the decode cycle;
    // a pair is estimated in full only when those bounds leave it a chance among the top N or on the frontier.
    // Prefill layouts by alpha and decode layouts by beta, best first, so that the thresholds rise early.
    std::vector<size_t> ps, ds;
    for (size_t i = 0; i < layouts.size(); ++i) {
      if (a[i] > 0) ps.push_back(i);
      if (b[i] > 0) ds.push_back(i);
    }
    std::stable_sort(ps.begin(), ps.end(), [&](size_t x, size_t y) { return alpha[x] > alpha[y]; });
    std::stable_sort(ds.begin(), ds.end(), [&](size_t x, size_t y) { return beta[x] > beta[y]; });
    std::vector<double> user_max(layouts.size(), 0);  // tokens/s/user bound of each decode layout at any load
    for (size_t d : ds) user_max[d] = user_bound(dec[d].cycle_lower_bound(0));
    std::vector<double> user_max_after(ds.size() + 1, 0);  // over ds[k..]
    for (size_t k = ds.size(); k-- > 0;) user_max_after[k] = std::max(user_max_after[k + 1], user_max[ds[k]]);
    for (size_t p : ps)
      for (size_t k = 0; k < ds.size(); ++k) {
        const size_t d = ds[k];
        const double g_max = gpg_bound(p, d);
        if (!keep.top_open_below(g_max) && !keep.frontier_open(g_max, user_max_after[k])) break;  // nor any later d
        if (size[p] + size[d] > budget) continue;
        if (!keep.top_open_below(g_max) && !keep.frontier_open(g_max, user_max[d])) continue;
        ++res.stats.pairs_split;
        const Split s = best_split(p, d);
        const double g = goodput_per_gpu(s);
        bool open = keep.top_open_below(g) && keep.top_open(pair_meets(p, d, s), g);
        if (!open) {
          const double dec_groups = static_cast<double>(s.dp_d) * layouts[d].config.attn_dp;
          open = keep.frontier_open(g, user_bound(dec[d].tpot_mean_lower_bound(s.rate / dec_groups)));
        }
        if (!open) continue;
        ++res.stats.pairs_estimated;
        keep.offer(pair_candidate(p, d, s));
      }
  }

  for (const auto& [k, t] : timers) {
    res.stats.step_evaluations += t->evaluations();
    res.stats.one_rank_steps += t->one_rank_evaluations();
    res.stats.step_lookups += t->lookups();
  }

  if (fewest) {
    std::sort(all.begin(), all.end(), [](const Candidate& x, const Candidate& y) {
      return ranks_before_under(x, y, spec::Objective::kFewestGpus);
    });
    if (!keep_all && all.size() > static_cast<size_t>(in.keep_top)) all.resize(static_cast<size_t>(in.keep_top));
    res.ranked = std::move(all);
    return res;
  }

  if (keep_all) {
    std::sort(all.begin(), all.end(), ranks_before);
    // Pareto frontier over (goodput/GPU, tokens/s/user), both maximized: sweep by goodput/GPU descending.
    std::vector<size_t> order;
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].goodput_tok_s_per_gpu > 0) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
      const auto& u = all[x];
      const auto& v = all[y];
      if (u.goodput_tok_s_per_gpu != v.goodput_tok_s_per_gpu) return u.goodput_tok_s_per_gpu > v.goodput_tok_s_per_gpu;
      return u.tok_s_per_user > v.tok_s_per_user;
    });
    double best_user = -1;
    for (size_t i : order)
      if (all[i].tok_s_per_user > best_user) {
        res.pareto.push_back({static_cast<int64_t>(i) + 1, all[i]});
        best_user = all[i].tok_s_per_user;
      }
    res.ranked_total = static_cast<int64_t>(all.size());
    res.ranked = std::move(all);
    return res;
  }

  // The frontier's ranks in the full ranking: one more pass over the keys of every ranked candidate.
  res.ranked = keep.top();
  FrontierRanks ranks(keep.frontier());
  for (const auto& c : colocated_list) ranks.add_full(c);
  if (disagg)
    for (size_t p = 0; p < layouts.size(); ++p)
      for (size_t d = 0; d < layouts.size(); ++d) {
        if (size[p] + size[d] > budget || !(a[p] > 0 && b[d] > 0)) continue;
        if (!ranks.matters(gpg_bound(p, d))) continue;
        ++res.stats.rank_pass_splits;
        const Split s = best_split(p, d);
        const bool meets = pair_meets(p, d, s);
        const double g = goodput_per_gpu(s);
        if (ranks.ties(meets, g))
          ranks.add_full(pair_candidate(p, d, s));
        else
          ranks.add(meets, g);
      }
  const std::vector<int64_t> r = ranks.ranks();
  for (size_t i = 0; i < r.size(); ++i) res.pareto.push_back({r[i], keep.frontier()[i]});
  return res;
}

plan::MadePlan candidate_plan(const SearchInput& in, const Candidate& c) {
  plan::PlanOptions options = in.options;
  options.weight_dtype_set = true;
  options.weight_dtype = in.space.weight_dtype;
  options.kv_dtype_set = true;
  options.kv_dtype = in.space.kv_dtype;
  options.allow_cross_domain_tp = in.space.allow_cross_domain_tp;
  if (!c.disaggregated) return plan::make_plan(in.model, *in.cluster, in.gpu_type, c.mixed.config, options);
  return plan::make_plan(in.model, *in.cluster, in.gpu_type, plan::DisaggConfig{c.prefill.config, c.decode.config},
                         options);
}

}  // namespace parasol::search

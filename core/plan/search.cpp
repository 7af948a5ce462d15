// Plan search (search.hpp): enumeration of layouts, per-pool estimates, colocated and disaggregated candidates.
#include "core/plan/search.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <tuple>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/cost/collective_cost.hpp"
#include "core/plan/feasibility.hpp"

namespace parasol::plan {

namespace {

std::vector<int> powers_of_two(int64_t max) {
  std::vector<int> out;
  for (int64_t v = 1; v <= max; v *= 2) out.push_back(static_cast<int>(v));
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
  ParallelConfig config;  // dp = 1
  FeasibilityResult feas;
  std::vector<int> gpus;  // instance 0's placement
  double p2p_s_per_token = 0, p2p_latency_s = 0;
  double kv_transfer_s = 0;  // a mean prompt's KV from this layout (as prefill) to another instance
  StageTimer* timer = nullptr;
};

struct ShapeKey {
  int tp, adp, ep;
  bool operator<(const ShapeKey& o) const { return std::tie(tp, adp, ep) < std::tie(o.tp, o.adp, o.ep); }
};

std::string violation_at(const PoolPoint& p, PoolRole role, const spec::Slo& slo, double extra_ttft_s,
                         double output_mean, double rate) {
  char at[64];
  std::snprintf(at, sizeof at, " at %.4g req/s", rate);
  if (!p.stable) return std::string(to_string(role)) + " pool overloaded (" + p.limit + ")" + at;
  const double ttft = p.ttft_p99_s + extra_ttft_s;
  if (role != PoolRole::kDecode && slo.ttft_p99_s && ttft > *slo.ttft_p99_s)
    return "TTFT p99 " + format_time(ttft) + " > SLO " + format_time(*slo.ttft_p99_s) + at;
  if (role != PoolRole::kPrefill && slo.tpot_p99_s && p.tpot_p99_s > *slo.tpot_p99_s)
    return "TPOT p99 " + format_time(p.tpot_p99_s) + " > SLO " + format_time(*slo.tpot_p99_s) + at;
  if (role == PoolRole::kMixed && slo.e2e_p99_s) {
    const double e2e = p.ttft_p99_s + std::max(0.0, output_mean - 1) * p.tpot_p99_s;
    if (e2e > *slo.e2e_p99_s) return "E2E p99 " + format_time(e2e) + " > SLO " + format_time(*slo.e2e_p99_s) + at;
  }
  return "";
}

}  // namespace

std::string Candidate::label() const {
  if (!disaggregated) return mixed.config.label();
  return DisaggConfig{prefill.config, decode.config}.label();
}

bool ranks_before(const Candidate& a, const Candidate& b) {
  if (a.meets_slo != b.meets_slo) return a.meets_slo;
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

  PlanOptions options = in.options;
  options.weight_dtype_set = true;
  options.weight_dtype = in.space.weight_dtype;
  options.kv_dtype_set = true;
  options.kv_dtype = in.space.kv_dtype;
  options.allow_cross_domain_tp = in.space.allow_cross_domain_tp;

  SearchResult res;
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
  const std::vector<int> tps = !in.space.tp.empty()
                                   ? in.space.tp
                                   : divisors(model.heads, in.space.allow_cross_domain_tp ? budget : domain);
  const std::vector<int> pps =
      !in.space.pp.empty() ? in.space.pp : powers_of_two(std::min<int64_t>(model.layers, budget));
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
      if (in.space.attn_dp.empty() && adp > 1 && in.max_ranks_per_stage > 0 && stage > in.max_ranks_per_stage)
        continue;
      for (int ep : stage_eps(stage)) {
        for (int pp : pps) {
          if (stage * pp > budget) continue;
          ParallelConfig c;
          c.tp = tp, c.attn_dp = adp, c.ep = ep, c.pp = pp, c.dp = 1;
          ++res.stats.layouts;
          Layout L;
          L.config = c;
          L.feas = check_feasibility(model, gpu, c, options);
          Feasibility f = L.feas.feasibility;
          if (f.ok) {
            PlacementResult pr = place(cluster, in.gpu_type, c, options);
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
    const ParallelConfig& c = L.config;
    auto& timer = timers[{c.tp, c.attn_dp, c.ep}];
    if (!timer) timer = std::make_unique<StageTimer>(model, cluster, in.gpu_type, c, options, tables);
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
      kv_rank = std::max(kv_rank, rank_kv_bytes_per_token(model, c.tp, options.kv_dtype, layers));
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

  if (colocated) {
    for (const auto& L : layouts) {
      PoolModel pm = pool_model(L, PoolRole::kMixed);
      Candidate c;
      c.mixed = estimate(L, PoolRole::kMixed, pm.max_rate(in.slo));
      c.mixed.config.dp = budget / L.config.instance_size();
      c.gpus = c.mixed.config.total_gpus();
      const double groups = static_cast<double>(c.mixed.config.dp) * L.config.attn_dp;
      c.goodput_rps = groups * c.mixed.max_rate_per_group;
      c.goodput_tok_s_per_gpu = c.goodput_rps * load.output_mean / c.gpus;
      const PoolPoint best = pm.at(c.mixed.max_rate_per_group > 0 ? c.mixed.max_rate_per_group : 1e-9);
      c.tok_s_per_user = best.stable && best.tpot_mean_s > 0 ? 1 / best.tpot_mean_s : 0;
      const PoolPoint now = pm.at(load.rate_per_s / groups);
      c.violation = violation_at(now, PoolRole::kMixed, in.slo, 0, load.output_mean, load.rate_per_s);
      c.meets_slo = c.violation.empty();
      c.ttft_p99_s = now.ttft_p99_s, c.tpot_p99_s = now.tpot_p99_s, c.tpot_mean_s = now.tpot_mean_s;
      ++res.stats.candidates;
      res.ranked.push_back(std::move(c));
    }
  }

  if (disagg) {
    std::vector<PoolModel> pre, dec;
    std::vector<double> a, b;  // per-group goodput of each layout as prefill / as decode
    for (const auto& L : layouts) {
      pre.push_back(pool_model(L, PoolRole::kPrefill));
      dec.push_back(pool_model(L, PoolRole::kDecode));
      a.push_back(pre.back().max_rate(in.slo, L.kv_transfer_s));
      b.push_back(dec.back().max_rate(in.slo));
    }
    // Scenario-load points per (layout, instances), memoized: they do not depend on the other pool.
    std::map<std::pair<size_t, int>, PoolPoint> pre_at, dec_at;
    auto point = [&](std::map<std::pair<size_t, int>, PoolPoint>& memo, std::vector<PoolModel>& pools, size_t i,
                     int dp) -> const PoolPoint& {
      auto it = memo.find({i, dp});
      if (it != memo.end()) return it->second;
      const double groups = static_cast<double>(dp) * layouts[i].config.attn_dp;
      return memo.emplace(std::make_pair(i, dp), pools[i].at(load.rate_per_s / groups)).first->second;
    };
    for (size_t p = 0; p < layouts.size(); ++p)
      for (size_t d = 0; d < layouts.size(); ++d) {
        const int sp = layouts[p].config.instance_size(), sd = layouts[d].config.instance_size();
        if (sp + sd > budget) continue;
        const double ap = a[p] * layouts[p].config.attn_dp, bd = b[d] * layouts[d].config.attn_dp;
        int best_p = 1, best_d = (budget - sp) / sd, best_gpus = 0;
        double best_rate = -1, best_per_gpu = -1;
        for (int dp_p = 1; dp_p * sp + sd <= budget; ++dp_p) {
          const int dp_d = (budget - dp_p * sp) / sd;
          const int gpus = dp_p * sp + dp_d * sd;
          const double rate = std::min(dp_p * ap, dp_d * bd);
          const double per_gpu = rate / gpus;
          ++res.stats.candidates;
          if (per_gpu > best_per_gpu)
            best_per_gpu = per_gpu, best_rate = rate, best_p = dp_p, best_d = dp_d, best_gpus = gpus;
        }
        if (!(best_rate > 0)) continue;  // no split meets the SLOs even at a trickle: not ranked
        Candidate c;
        c.disaggregated = true;
        c.prefill = estimate(layouts[p], PoolRole::kPrefill, a[p]);
        c.decode = estimate(layouts[d], PoolRole::kDecode, b[d]);
        c.prefill.config.dp = best_p;
        c.decode.config.dp = best_d;
        c.gpus = best_gpus;
        c.kv_transfer_s = layouts[p].kv_transfer_s;
        c.goodput_rps = best_rate;
        c.goodput_tok_s_per_gpu = best_rate * load.output_mean / best_gpus;
        const double dec_groups = static_cast<double>(best_d) * layouts[d].config.attn_dp;
        const PoolPoint at_goodput = dec[d].at(best_rate / dec_groups);
        c.tok_s_per_user = at_goodput.stable && at_goodput.tpot_mean_s > 0 ? 1 / at_goodput.tpot_mean_s : 0;
        const PoolPoint& pn = point(pre_at, pre, p, best_p);
        const PoolPoint& dn = point(dec_at, dec, d, best_d);
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
        res.ranked.push_back(std::move(c));
      }
  }

  for (const auto& [k, t] : timers) {
    res.stats.step_evaluations += t->evaluations();
    res.stats.one_rank_steps += t->one_rank_evaluations();
    res.stats.step_lookups += t->lookups();
  }
  std::sort(res.ranked.begin(), res.ranked.end(), ranks_before);

  // Pareto frontier over (goodput/GPU, tokens/s/user), both maximized: sweep by goodput/GPU descending.
  std::vector<size_t> order;
  for (size_t i = 0; i < res.ranked.size(); ++i)
    if (res.ranked[i].goodput_tok_s_per_gpu > 0) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    const auto& a = res.ranked[x];
    const auto& b = res.ranked[y];
    if (a.goodput_tok_s_per_gpu != b.goodput_tok_s_per_gpu) return a.goodput_tok_s_per_gpu > b.goodput_tok_s_per_gpu;
    return a.tok_s_per_user > b.tok_s_per_user;
  });
  double best_user = -1;
  for (size_t i : order)
    if (res.ranked[i].tok_s_per_user > best_user) {
      res.pareto.push_back(i);
      best_user = res.ranked[i].tok_s_per_user;
    }
  return res;
}

MadePlan candidate_plan(const SearchInput& in, const Candidate& c) {
  PlanOptions options = in.options;
  options.weight_dtype_set = true;
  options.weight_dtype = in.space.weight_dtype;
  options.kv_dtype_set = true;
  options.kv_dtype = in.space.kv_dtype;
  options.allow_cross_domain_tp = in.space.allow_cross_domain_tp;
  if (!c.disaggregated) return make_plan(in.model, *in.cluster, in.gpu_type, c.mixed.config, options);
  return make_plan(in.model, *in.cluster, in.gpu_type, DisaggConfig{c.prefill.config, c.decode.config}, options);
}

}  // namespace parasol::plan

// Plan search reports (search.hpp): why a runner-up lost, the Pareto CSV, the JSON ranking.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/units.hpp"
#include "core/search/search.hpp"

namespace parasol::search {

namespace {

nlohmann::json pool_json(const PoolEstimate& p) {
  return {{"role", to_string(p.role)},
          {"layout", p.config.label()},
          {"tp", p.config.tp},
          {"pp", p.config.pp},
          {"ep", p.config.ep},
          {"attn_dp", p.config.attn_dp},
          {"dp", p.config.dp},
          {"kv_tokens_per_group", p.kv_tokens},
          {"max_rate_per_group", p.max_rate_per_group}};
}

}  // namespace

std::string why_lost(const Candidate& c, const Candidate& best, spec::Objective objective) {
  if (!c.meets_slo && best.meets_slo) return c.violation;
  if (objective == spec::Objective::kFewestGpus && c.gpus > best.gpus)
    return std::to_string(c.gpus) + " GPUs for the load, not " + std::to_string(best.gpus);
  if (c.goodput_tok_s_per_gpu < best.goodput_tok_s_per_gpu) {
    if (c.goodput_tok_s_per_gpu <= 0) return "no load meets the SLOs";
    const double pct = 100.0 * (1.0 - c.goodput_tok_s_per_gpu / best.goodput_tok_s_per_gpu);
    return format_number(pct >= 1 ? "%.0f%% lower goodput/GPU" : "%.2g%% lower goodput/GPU", pct);
  }
  if (c.tok_s_per_user < best.tok_s_per_user) {
    const double pct = 100.0 * (1.0 - c.tok_s_per_user / best.tok_s_per_user);
    return format_number("same goodput/GPU, %.2g%% lower tokens/s/user", pct);
  }
  if (c.gpus > best.gpus) return "same goodput, more GPUs";
  return "tie (broken by label)";
}

std::string pareto_csv(const SearchResult& r) {
  std::ostringstream o;
  o << "rank,layout,gpus,goodput_tok_s_per_gpu,tok_s_per_user,goodput_req_s,meets_slo,ttft_p99_s,tpot_p99_s\n";
  for (const ParetoPoint& pt : r.pareto) {
    const Candidate& c = pt.candidate;
    o << pt.rank << ',' << c.label() << ',' << c.gpus << ',' << format_number("%.6g", c.goodput_tok_s_per_gpu) << ','
      << format_number("%.6g", c.tok_s_per_user) << ',' << format_number("%.6g", c.goodput_rps) << ','
      << (c.meets_slo ? 1 : 0) << ',' << format_number("%.6g", c.ttft_p99_s) << ','
      << format_number("%.6g", c.tpot_p99_s) << '\n';
  }
  return o.str();
}

nlohmann::json to_json(const SearchResult& r, int top_n) {
  nlohmann::json j;
  j["objective"] = spec::to_string(r.objective);
  j["load"] = {
      {"rate_per_s", r.load.rate_per_s}, {"input_mean", r.load.input_mean}, {"output_mean", r.load.output_mean}};
  j["gpu_budget"] = r.gpu_budget;
  j["stats"] = {{"layouts", r.stats.layouts},
                {"feasible_layouts", r.stats.feasible_layouts},
                {"stage_shapes", r.stats.stage_shapes},
                {"candidates", r.stats.candidates},
                {"pairs", r.stats.pairs},
                {"pairs_estimated", r.stats.pairs_estimated},
                {"step_evaluations", r.stats.step_evaluations},
                {"step_lookups", r.stats.step_lookups}};
  nlohmann::json ranked = nlohmann::json::array();
  for (size_t i = 0; i < r.ranked.size() && static_cast<int>(i) < top_n; ++i) {
    const Candidate& c = r.ranked[i];
    nlohmann::json e = {{"rank", i + 1},
                        {"layout", c.label()},
                        {"disaggregated", c.disaggregated},
                        {"gpus", c.gpus},
                        {"goodput_req_s", c.goodput_rps},
                        {"goodput_tok_s_per_gpu", c.goodput_tok_s_per_gpu},
                        {"tok_s_per_user", c.tok_s_per_user},
                        {"meets_slo", c.meets_slo},
                        {"ttft_p99_s", c.ttft_p99_s},
                        {"tpot_p99_s", c.tpot_p99_s},
                        {"tpot_mean_s", c.tpot_mean_s},
                        {"why_lost", i == 0 ? std::string() : why_lost(c, r.ranked[0])}};
    if (!c.meets_slo) e["violation"] = c.violation;
    if (c.disaggregated) {
      e["pools"] = {pool_json(c.prefill), pool_json(c.decode)};
      e["kv_transfer_s"] = c.kv_transfer_s;
    } else {
      e["pools"] = {pool_json(c.mixed)};
    }
    ranked.push_back(std::move(e));
  }
  j["ranked"] = std::move(ranked);
  j["ranked_total"] = r.ranked_total;
  nlohmann::json pareto = nlohmann::json::array();
  for (const ParetoPoint& pt : r.pareto)
    pareto.push_back({{"rank", pt.rank},
                      {"layout", pt.candidate.label()},
                      {"goodput_tok_s_per_gpu", pt.candidate.goodput_tok_s_per_gpu},
                      {"tok_s_per_user", pt.candidate.tok_s_per_user}});
  j["pareto"] = std::move(pareto);
  nlohmann::json inf = nlohmann::json::array();
  for (const auto& x : r.infeasible) inf.push_back({{"layout", x.config.label()}, {"reasons", x.reasons}});
  j["infeasible"] = std::move(inf);
  return j;
}

}  // namespace parasol::search

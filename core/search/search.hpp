// Plan search: every layout of a model on a cluster (or a GPU budget), estimated with the steady-state model of
// core/search/goodput.hpp and ranked. What `parasol plan` runs; docs/search.md documents the space, the estimate and
// the objective.
//   Space: instance layouts tp x attn_dp x pp with ep dividing tp x attn_dp. The scenario's `search:` lists are used
//   as given; otherwise every legal value: tp dividing the attention heads, up to the scale-up domain (or the budget
//   when cross-domain TP is allowed); for MoE models every attn_dp and ep with ep dividing the routed experts and the
//   stage (tp x attn_dp ranks) and the expert tensor parallelism stage / ep dividing the expert FFN, the stage
//   fitting the budget (dense models: attn_dp = ep = 1); every pp from 1 to the layers whose stages fit the budget
//   (uneven layer splits); every feasible layout (core/plan/feasibility.hpp + placement) is a pool; a colocated
//   candidate fills the budget with dp instances of one layout; a disaggregated candidate pairs a prefill layout with a
//   decode layout and tries every split of the budget (dp_p, dp_d filling the rest), keeping the split with the highest
//   goodput per GPU. Objective (the ranking, in order): meets the SLOs at the scenario's load; goodput per GPU (output
//   tokens/s per GPU at the largest load that meets the SLOs), higher first; tokens/s per user at that load, higher
//   first; fewer GPUs; the label (so the order is total and deterministic). Objective fewest_gpus (`search.objective`):
//   every pool is sized to the workload's rate instead, the fewest instances whose goodput (the largest per-group load
//   meeting the SLOs, times the groups) carries it, and the ranking puts fewer GPUs first after the SLO verdict (then
//   goodput per GPU, ...). A layout whose sizing exceeds the budget is ranked as missing the SLOs ("needs N GPUs"). No
//   Pareto frontier is kept under this objective. Pairs: with keep_top > 0 only the best keep_top candidates and the
//   Pareto frontier are kept, and a pair is estimated in full only when bounds (goodput/GPU <= O x the harmonic
//   combination of the two pools' per-GPU rates, tokens/s/user <= 1 / a lower bound of the decode cycle) leave it a
//   chance to be kept: the same top keep_top, the same frontier and the same frontier ranks as the exhaustive
//   evaluation (keep_top = 0, every candidate kept), which tests compare.
// Thread behaviour: search() is reentrant (no shared state); results are plain values.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/plan/feasibility.hpp"
#include "core/plan/placement.hpp"
#include "core/plan/plan.hpp"
#include "core/search/goodput.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::search {

struct SearchInput {
  spec::Model model;
  const spec::Cluster* cluster = nullptr;
  std::string gpu_type;  // resolved (resolve_gpu_type)
  spec::SearchSpace space;
  spec::Slo slo;
  WorkloadLoad load;
  plan::PlanOptions options;           // search() sets the dtypes and cross-domain flag from `space`
  std::optional<spec::Engine> engine;  // the serving engine (the scenario's `engine:`); nullopt: the bare GPU program
  // > 0: keep only the best keep_top ranked candidates (and the Pareto frontier), pruning the prefill/decode pairs
  // that cannot be kept (what `parasol plan` runs, with the N it prints). 0: every candidate is estimated and kept
  // (the exhaustive reference evaluation).
  int64_t keep_top = 0;
};

// What one pool contributes to a candidate (per attention-DP group numbers scale with dp x attn_dp).
struct PoolEstimate {
  plan::ParallelConfig config;  // dp = instances
  PoolRole role = PoolRole::kMixed;
  int64_t kv_tokens = 0;          // per attention-DP group of one instance
  double max_rate_per_group = 0;  // goodput of one group
};

struct Candidate {
  bool disaggregated = false;
  PoolEstimate mixed;            // colocated
  PoolEstimate prefill, decode;  // disaggregated
  int gpus = 0;                  // GPUs used
  double kv_transfer_s = 0;      // disaggregated: a mean prompt's KV, prefill -> decode
  // At the largest load that meets the SLOs.
  double goodput_rps = 0;            // requests/s
  double goodput_tok_s_per_gpu = 0;  // output tokens/s per GPU
  double tok_s_per_user = 0;         // 1 / mean TPOT at that load
  // At the scenario's load.
  bool meets_slo = false;
  std::string violation;  // the first SLO missed (or why the load is unsustainable); "" when met
  double ttft_p99_s = 0, tpot_p99_s = 0, tpot_mean_s = 0;

  std::string label() const;  // ParallelConfig / DisaggConfig label
};

struct InfeasibleLayout {
  plan::ParallelConfig config;  // dp = 1
  std::vector<std::string> reasons;
};

struct SearchStats {
  int64_t layouts = 0;  // instance layouts enumerated (tp, pp, ep, attn_dp)
  int64_t feasible_layouts = 0;
  int64_t stage_shapes = 0;      // distinct (tp, attn_dp, ep) costed
  int64_t candidates = 0;        // deployments considered (colocated layouts + every P/D split), pruned or not
  int64_t pairs = 0;             // (prefill layout, decode layout) pairs that fit the budget
  int64_t pairs_split = 0;       // of those: best split computed (split loop run), in the ranking pass
  int64_t pairs_estimated = 0;   // of those: estimated in full (tokens/s/user, SLOs at load)
  int64_t rank_pass_splits = 0;  // pairs whose best split the frontier-rank pass recomputed
  int64_t step_evaluations = 0;  // steps built and costed
  int64_t one_rank_steps = 0;    // of those: costed from one representative rank (symmetric ranks)
  int64_t step_lookups = 0;      // memoized step-time queries
};

struct ParetoPoint {
  int64_t rank = 0;  // 1-based, in the full ranking
  Candidate candidate;
};

struct SearchResult {
  spec::Objective objective = spec::Objective::kGoodputPerGpu;  // the ranking's (the search space's)
  WorkloadLoad load;
  int gpu_budget = 0;
  std::vector<Candidate> ranked;  // best first (the objective above): every one, or the best keep_top
  int64_t ranked_total = 0;       // candidates ranked (kept or not)
  std::vector<InfeasibleLayout> infeasible;
  std::vector<ParetoPoint> pareto;  // by goodput/GPU descending
  SearchStats stats;
};

SearchResult search(const SearchInput& in);

// True when a ranks before b under the documented objective (goodput per GPU).
bool ranks_before(const Candidate& a, const Candidate& b);
// The same under `objective`: fewest GPUs puts fewer GPUs first among those that meet (or that miss) the SLOs, then
// goodput per GPU and the rest as above. (kMaxRate ranks as goodput per GPU: the rate search follows the pick.)
bool ranks_before_under(const Candidate& a, const Candidate& b, spec::Objective objective);
// Why `c` lost to `best` (the winner), e.g. "TPOT p99 52 ms > SLO 50 ms at 5.5 req/s" or "12% lower goodput/GPU".
std::string why_lost(const Candidate& c, const Candidate& best,
                     spec::Objective objective = spec::Objective::kGoodputPerGpu);
// The candidate as a full Plan (make_plan with its dp counts): what `parasol plan` writes.
plan::MadePlan candidate_plan(const SearchInput& in, const Candidate& c);

// Pareto frontier as CSV: label, gpus, goodput tokens/s/GPU, tokens/s/user, goodput req/s, TTFT and TPOT p99 at load.
std::string pareto_csv(const SearchResult& r);
nlohmann::json to_json(const SearchResult& r, int top_n);

}  // namespace parasol::search

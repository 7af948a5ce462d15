// Steady-state estimator: how one pool of identical instances behaves under a Poisson stream of requests with given
// mean prompt and output lengths, from the cost model alone (no simulation). The search (core/search/search.hpp) asks
// it, for every layout, the latencies at the scenario's load and the largest load that meets the SLOs (goodput).
// The model (docs/search.md has the derivation):
//   - Step times come from cost::CostModel on Steps built by build_step for representative batches (every attention-DP
//     group gets the same sequences). Costing is done once per *stage shape* (tp, attn_dp, ep) on a proxy model with
//     one layer of each kind (dense, MoE); the time of every layer kind, of the ends (embedding, LM head, sampling) and
//     the pipeline transfers then give the stage times of any pp (stages grouped by kind: O(1) per pool in pp).
//     Results are memoized on the batch signature.
//     When every rank of the stage runs the same program (checked per batch: ranks 0 and R-1 built and compared, the
//     routed token counts equal for every expert, and every group of a size has the same links), one rank is built
//     and costed (CostModel::cost_symmetric_rank) instead of all R: the same numbers, bit for bit (tested).
//   - A pool of pp stages keeps pp micro-batches in flight: a micro-batch's iteration (its latency) is the sum of the
//     stage times T; its cycle is C = max(T, pp x slowest stage). Each sequence gets one token per cycle.
//   - Steady state per attention-DP group at arrival rate lambda (Little's law): with chunked prefill (mixed pools),
//     tokens per micro-batch tau solves tau = lambda x (I + O) x C(tau) / pp; decode pools: B = lambda x O x C(B) / pp.
//     Limits: the token budget, sequences per iteration and the KV cache (sequences x (I + O/2) tokens).
//   - TPOT p99: the cycle at the p99 batch: the number of running sequences is Poisson (M/G/inf) with the steady-state
//     mean, p99 ~ mean + 2.326 sd.
//   - TTFT p99: prompts queue for the group's prefill capacity R (tokens/s with full-budget prefill iterations) as a
//     G/G/1 queue with mean service s = I / R and load rho = lambda I / R; Kingman's heavy-traffic approximation gives
//     the waiting time an exponential tail P(W > t) = rho exp(-2 (1 - rho) t / (s (ca2 + cs2))) with ca2 and cs2 the
//     squared coefficients of variation of the inter-arrival times and of the prompt lengths (measured from the
//     workload; a group sees its 1/n share of the stream, n = the workload's rate / the group's, as a random split:
//     ca2 = 1 + (ca2_workload - 1) / n, Whitt's splitting formula; Poisson arrivals of one prompt length, ca2 = 1
//     and cs2 = 0, are the M/D/1 case), so
//     W_p99 = s (ca2 + cs2) ln(100 rho) / (2 (1 - rho)) (0 when rho <= 0.01) and E[W] = s (ca2 + cs2) rho /
//     (2 (1 - rho)). The prompt's own chunks add to it; in a prefill pool long prompts make their own tail: TTFT
//     p99 = max(W_p99 + own(I), E[W] + own(I_p99)) with own(x) the prefill of an x-token prompt, I_p99 the 99th
//     percentile prompt (in mixed pools, whose prompts' chunks share iterations with decode, that term
//     over-estimated the simulated TTFT p99 by 40-100% on the shipped scenarios and is not taken). Plus, in a
//     disaggregated deployment, the KV transfer to the decode pool.
// Lengths are otherwise the means (I prompt, O output tokens).
// Thread behaviour: a StageTimer and the PoolModels using it belong to one thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/cost/step_cost.hpp"
#include "core/plan/feasibility.hpp"
#include "core/plan/plan.hpp"
#include "core/plan/step.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::search {

// The load a layout is judged at: mean arrival rate and mean prompt / output lengths.
struct WorkloadLoad {
  double rate_per_s = 1;
  double input_mean = 512;
  double output_mean = 128;
  // The variability the TTFT tail depends on (defaults: Poisson arrivals of prompts of one length).
  double input_p99 = 0;    // 99th percentile prompt length, tokens (0: the mean)
  double arrival_cv2 = 1;  // squared coefficient of variation of the inter-arrival times
  double input_cv2 = 0;    // of the prompt lengths (prefill service time is proportional to them)
};

enum class PoolRole { kMixed, kPrefill, kDecode };
const char* to_string(PoolRole r);

// Time of each layer kind for one representative batch (per attention-DP group) on a stage shape.
struct LayerTimes {
  double dense_s = 0;  // one dense layer
  double moe_s = 0;    // one MoE layer
  double ends_s = 0;   // embedding + final norm + LM head + sampling
  int64_t tokens = 0;  // new tokens per attention-DP group (for pipeline transfers)
};

// What a group runs in one iteration: decode sequences at one context, prefill tokens of prompts of one length.
struct GroupBatch {
  int64_t decode_seqs = 0;
  int64_t decode_context = 0;
  int64_t prefill_tokens = 0;
  int64_t prompt_len = 0;
  bool operator<(const GroupBatch& o) const;
  plan::Batch to_batch(int attn_dp) const;  // the same sequences in every attention-DP group
};

// Costs representative batches on one stage shape (tp, attn_dp, ep of `shape`; pp and dp ignored), memoized.
class StageTimer {
 public:
  // `engine` (may be null; must outlive the timer): its fusion and dispatch shape the steps, and its per-iteration
  // CPU cost joins ends_s as an addition (serial, plus the CPU work unless the engine overlaps it with the GPU: the
  // proxy model's GPU time is not the real one's, so max(GPU, CPU) is not taken; nor are launch floors).
  StageTimer(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
             const plan::ParallelConfig& shape, const plan::PlanOptions& options, const spec::Engine* engine = nullptr);
  // Same, with link tables shared with other timers of the cluster (must outlive the timer).
  StageTimer(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
             const plan::ParallelConfig& shape, const plan::PlanOptions& options, cost::LinkTables& shared,
             const spec::Engine* engine = nullptr);
  ~StageTimer();
  StageTimer(StageTimer&&) noexcept;
  StageTimer& operator=(StageTimer&&) noexcept;

  const LayerTimes& times(const GroupBatch& batch);
  int64_t evaluations() const;           // steps built and costed
  int64_t lookups() const;               // calls to times()
  int64_t one_rank_evaluations() const;  // of evaluations(): costed from one representative rank
  // Allow (default) or forbid the one-rank path (tests compare both).
  void set_one_rank(bool allowed);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The proxy model a StageTimer costs: one layer of each kind the model has, same shapes.
spec::Model proxy_model(const spec::Model& m);

// Latencies of a pool at one per-group arrival rate.
struct PoolPoint {
  bool stable = false;
  std::string limit;       // why not stable ("KV cache", "token budget", "sequences per iteration", "prefill")
  double batch = 0;        // steady-state tokens (mixed, prefill) or sequences (decode) per micro-batch
  double ttft_p99_s = 0;   // mixed, prefill (prefill: incl. queueing and the prompt's own iterations)
  double tpot_mean_s = 0;  // mixed, decode
  double tpot_p99_s = 0;
};

// One pool layout (config incl. pp) in one role, under a workload. Uses (does not own) a StageTimer of its shape.
class PoolModel {
 public:
  PoolModel(StageTimer& timer, const spec::Model& model, const plan::ParallelConfig& config,
            const plan::MemoryBudget& memory, const std::vector<std::pair<int64_t, int64_t>>& stage_layers,
            double p2p_s_per_token, double p2p_latency_s, PoolRole role, const WorkloadLoad& load,
            const plan::PlanOptions& options);

  // Per attention-DP group.
  PoolPoint at(double rate_per_s);
  // The largest per-group rate at which the pool is stable and meets the SLOs relevant to its role (mixed: all;
  // prefill: TTFT, with `extra_ttft_s` added (the KV transfer); decode: TPOT). 0 when even a trickle misses them.
  double max_rate(const spec::Slo& slo, double extra_ttft_s = 0);
  bool meets(const PoolPoint& p, const spec::Slo& slo, double extra_ttft_s) const;

  // Micro-batch latency T and cycle C at `tau` tokens (mixed, prefill) or sequences (decode) per micro-batch.
  double latency_s(double tau);
  double cycle_s(double tau);
  // A lower bound of cycle_s(tau) over every tau in [tau_min, the last grid point] (every tau at() settles on lies
  // there): from the cost grid (all of whose points it costs), exact up to a relative margin of 1e-9 for rounding.
  // The search uses it to bound tokens/s per user without solving the steady state.
  double cycle_lower_bound(double tau_min);
  // A lower bound of at(rate).tpot_mean_s where the pool is stable at `rate` (mixed and decode pools): the steady
  // state tau satisfies tau >= rate x (tokens per tau) x C(tau) / pp >= rate x ... x cycle_lower_bound(0) / pp.
  double tpot_mean_lower_bound(double rate);
  PoolRole role() const { return role_; }
  int64_t kv_tokens() const { return kv_tokens_; }

 private:
  struct Curve {
    std::vector<double> tau;
    std::vector<LayerTimes> times;
    std::vector<bool> done;
  };
  LayerTimes interpolate(double tau);
  // Stages with the same layers (dense, MoE), ends (last stage) and incoming transfer (every stage but the first):
  // an uneven split of L layers over pp stages has at most four kinds, so a stage time costs O(1) in pp.
  struct StageKind {
    double dense = 0, moe = 0;
    bool ends = false, p2p = false;
    double count = 0;
  };
  void stage_times(const LayerTimes& t, double& latency, double& cycle) const;
  const LayerTimes& grid(size_t k);
  GroupBatch batch_at(int64_t tau) const;
  double tau_limit(std::string& why) const;

  StageTimer* timer_;
  plan::ParallelConfig config_;
  std::vector<StageKind> kinds_;       // in order of first appearance
  std::vector<double> segment_bound_;  // suffix minima of the per-segment lower bounds of the cycle (lazy)
  double p2p_s_per_token_, p2p_latency_s_;
  PoolRole role_;
  WorkloadLoad load_;
  plan::PlanOptions options_;
  int64_t kv_tokens_;
  int64_t window_ = 0;  // KV tokens a sequence holds at most under a sliding window (0: no window)
  Curve curve_;
};

}  // namespace parasol::search

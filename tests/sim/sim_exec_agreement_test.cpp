// sim and exec run one serving loop: the same plan and workload served by `sim` (analytic fidelity, on SimGrid) and
// by `exec` on the cpu backend with a virtual clock (every step takes the cost model's time, the tokens are computed
// for real by the ranks) give the same schedule — every iteration on the same replica, at the same start and end,
// with the same sequences, new tokens, contexts and attention groups — and the same per-request records. The KV
// capacity is small so that the schedules include preemptions and re-prefills. Over the shipped exec scenarios (TP 2;
// TP 2 x EP 2 MoE; attention-DP 2 x EP 2 MLA), and two of them with two instances (exec: 2 x n ranks, the second
// instance driven through its leader; the router spreads the requests).
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "core/plan/plan_io.hpp"
#include "core/serve/analytic_step_runner.hpp"
#include "core/serve/metrics.hpp"
#include "core/spec/scenario.hpp"
#include "exec/generate.hpp"
#include "exec/serving.hpp"
#include "exec/weights.hpp"
#include "sim/plan_choice.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

struct Iter {
  int replica = 0;
  int64_t index = 0;
  double start_s = 0, end_s = 0;
  std::vector<std::tuple<int64_t, int64_t, int64_t, int>> seqs;  // id, new tokens, context, attention group
  bool operator==(const Iter&) const = default;
};

struct Rec {
  int64_t id = 0;
  int replica = 0;
  double first_token_s = 0, finish_s = 0;
  int64_t generated = 0;
  int32_t preemptions = 0;
  std::string outcome;
  bool operator==(const Rec&) const = default;
};

struct Schedule {
  std::vector<Iter> iterations;
  std::vector<Rec> records;
  void iteration(const serve::IterationView& v) {
    Iter it{v.replica, v.index, v.start_s, v.end_s, {}};
    for (const plan::SeqWork& w : v.it->batch.seqs)
      it.seqs.emplace_back(w.seq_id, w.new_tokens, w.context, w.attn_group);
    iterations.push_back(std::move(it));
  }
  void record(const serve::RequestRecord& r) {
    records.push_back({r.id, r.replica, r.first_token_s, r.finish_s, r.generated_tokens, r.preemptions,
                       serve::to_string(r.outcome)});
  }
};

class SimExecAgreement : public ::testing::TestWithParam<std::string> {};

TEST_P(SimExecAgreement, SameScheduleIterationByIteration) {
  const std::string dir = std::string(PARASOL_DATA_DIR) + "/scenarios/exec/";
  // "NAME@dpK": the shipped plan NAME with K instances (placed on the next GPUs of the node).
  const std::string param = GetParam();
  const std::string name = param.substr(0, param.find('@'));
  const int dp = param.find("@dp") == std::string::npos ? 1 : std::stoi(param.substr(param.find("@dp") + 3));
  const spec::Scenario sc = spec::load_scenario_file(dir + name + ".yaml");
  plan::Plan plan = plan::load_plan_file(dir + name + ".plan.yaml");
  {
    plan::Pool& pool = plan.pools[0];
    const int n = pool.config.instance_size();
    pool.config.dp = dp;
    pool.placement.resize(1);
    for (int i = 1; i < dp; ++i) {
      pool.placement.emplace_back();
      for (int g = 0; g < n; ++g) pool.placement.back().push_back(pool.placement[0][static_cast<size_t>(g)] + i * n);
    }
  }
  std::string note;
  serve::WorkloadSpec ws = *scenario_workload(sc, note);
  ws.max_requests = 24 * dp;
  ws.arrival.rate_per_s = 2000;  // a burst: the KV cache fills and sequences are preempted
  const uint64_t seed = 5;
  exec::ServeConfig cfg = exec::make_serve_config(plan, 0, 6);  // 6 blocks of 16 tokens per attention group
  cfg.seed = seed;

  Schedule sim;
  {
    auto src = serve::make_source(ws, seed);
    serve::MetricsCollector metrics(serve::MetricsConfig{});
    ServeOptions o;
    o.schedulers = {cfg.scheduler};
    o.engine = &sc.engine;
    o.on_iteration = [&](const serve::IterationView& v) { sim.iteration(v); };
    o.on_record = [&](const serve::RequestRecord& r) { sim.record(r); };
    const ServeResult r = simulate_serving(plan, sc.cluster, *src, metrics, o);
    ASSERT_EQ(r.requests, ws.max_requests);
  }

  Schedule ex;
  exec::ServeResult exr;
  {
    auto src = serve::make_source(ws, seed);
    serve::MetricsCollector metrics(serve::MetricsConfig{});
    serve::AnalyticStepRunner timer(plan, 0, sc.cluster, &sc.engine);
    cfg.timer = &timer;
    serve::LoopOptions lo;
    lo.on_iteration = [&](const serve::IterationView& v) { ex.iteration(v); };
    lo.on_record = [&](const serve::RequestRecord& r) { ex.record(r); };
    exec::SyntheticWeights weights(seed);
    const int ranks = plan.pools[0].config.instance_size() * dp;
    exec::run_local(ranks, 30.0, [&](int rank, exec::Communicator& comm) {
      exec::ServeResult r = exec::serve_rank(plan, weights, comm, {cfg}, rank == 0 ? src.get() : nullptr,
                                             rank == 0 ? &metrics : nullptr, lo);
      if (rank == 0) exr = std::move(r);
    });
  }

  ASSERT_EQ(exr.requests, ws.max_requests);
  int64_t preemptions = 0, generated = 0;
  for (const Rec& r : sim.records) {
    preemptions += r.preemptions;
    generated += r.generated;
    EXPECT_EQ(r.outcome, "completed") << "request " << r.id;
  }
  EXPECT_GT(preemptions, 0) << "the KV cache was meant to be tight enough to preempt";
  std::set<int> replicas;
  for (const Rec& r : sim.records) replicas.insert(r.replica);
  EXPECT_EQ(static_cast<int>(replicas.size()), dp) << "every instance serves";
  EXPECT_GT(generated, 0);
  ASSERT_EQ(sim.iterations.size(), ex.iterations.size());
  for (size_t i = 0; i < sim.iterations.size(); ++i) ASSERT_EQ(sim.iterations[i], ex.iterations[i]) << "iteration " << i;
  ASSERT_EQ(sim.records, ex.records);
  // exec computed every token the schedule asked for (recomputed ones included), for every request.
  EXPECT_GE(exr.generated_tokens, generated);
  EXPECT_EQ(static_cast<int64_t>(exr.outputs.size()), ws.max_requests);
  for (const Rec& r : ex.records) EXPECT_EQ(static_cast<int64_t>(exr.outputs[r.id].size()), r.generated) << r.id;
}

INSTANTIATE_TEST_SUITE_P(ExecScenarios, SimExecAgreement,
                         ::testing::Values("tiny-llama-tp2", "tiny-mixtral-tp2-ep2", "tiny-deepseek-adp2-ep2",
                                           "tiny-llama-tp2@dp2", "tiny-mixtral-tp2-ep2@dp2"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             if (c == '-' || c == '@') c = '_';
                           return s;
                         });

}  // namespace
}  // namespace parasol::sim

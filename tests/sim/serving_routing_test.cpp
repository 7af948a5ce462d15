// Router policies and prefill/decode disaggregation in the serving simulation. Round-robin sends request i to replica
// i mod n; least-outstanding-tokens sends each request to the replica with the least remaining work (prompt + output
// tokens), lowest index on ties, which for a burst arriving at once is the greedy assignment computed here. A P/D plan
// completes every request, and a lone request's KV transfer shows up exactly: E2E = the prefill step + the uncontended
// transfer (route latency + bytes / bottleneck bandwidth) + every decode step; TTFT = prefill + transfer with
// first_token: decode (the default), TTFT = prefill with first_token: prefill. One simulation per TEST.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "core/serve/metrics.hpp"
#include "sim/routing.hpp"
#include "sim/serving.hpp"
#include "tests/sim/list_source.hpp"

namespace parasol::sim {
namespace {

const std::string kData = PARASOL_DATA_DIR;

using testing::ListSource;

serve::Request request(int64_t id, double t, int64_t in, int64_t out) {
  serve::Request r;
  r.id = id;
  r.arrival_s = t;
  r.input_tokens = in;
  r.output_tokens = out;
  return r;
}

// id -> (replica, prefill_replica, outcome) from the per-request CSV.
struct Row {
  int replica = -1, prefill_replica = -1;
  std::string outcome;
};
std::map<int64_t, Row> rows(const std::string& csv) {
  std::map<int64_t, Row> out;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, outcome, rep, pre;
    std::getline(f, id, ',');
    std::getline(f, outcome, ',');
    std::getline(f, rep, ',');
    std::getline(f, pre, ',');
    out[std::stoll(id)] = {std::stoi(rep), std::stoi(pre), outcome};
  }
  return out;
}

struct Dgx {
  spec::Model model = spec::load_model_file(kData + "/scenarios/models/llama-3.1-8b.yaml");
  spec::Cluster cluster = spec::load_cluster_file(kData + "/topologies/clusters/dgx-h100.yaml");
};

std::map<int64_t, Row> serve_list(const Dgx& d, const plan::Plan& p, std::vector<serve::Request> reqs,
                                  const std::string& router, serve::Summary* summary = nullptr,
                                  bool first_token_at_decode = true) {
  ListSource src(std::move(reqs));
  std::ostringstream csv;
  serve::MetricsConfig mc;
  mc.replicas = 8;
  mc.requests_csv = &csv;
  serve::MetricsCollector metrics(mc);
  ServeOptions o;
  o.router.policy = serve::parse_router_policy(router);
  o.first_token_at_decode = first_token_at_decode;
  const ServeResult res = simulate_serving(p, d.cluster, src, metrics, o);
  const serve::Summary s = metrics.finish(res.end_s);
  if (summary) *summary = s;
  for (const auto& e : res.replica_end) EXPECT_EQ(e.kv_used_blocks, 0);
  return rows(csv.str());
}

TEST(ServingRouter, RoundRobinSendsRequestIToReplicaIModN) {
  Dgx d;
  plan::ParallelConfig pc;
  pc.dp = 3;
  const auto made = plan::make_plan(d.model, d.cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok);
  std::vector<serve::Request> reqs;
  for (int i = 0; i < 30; ++i) reqs.push_back(request(i, 0.01 * i, 100 + 97 * (i % 7), 5 + 3 * (i % 5)));
  const auto r = serve_list(d, made.plan, reqs, "round_robin");
  ASSERT_EQ(r.size(), 30u);
  for (const auto& [id, row] : r) {
    EXPECT_EQ(row.replica, id % 3) << "request " << id;
    EXPECT_EQ(row.outcome, "completed");
  }
}

TEST(ServingRouter, LeastOutstandingTokensIsTheGreedyAssignmentForABurst) {
  Dgx d;
  plan::ParallelConfig pc;
  pc.dp = 4;
  const auto made = plan::make_plan(d.model, d.cluster, "", pc);
  ASSERT_TRUE(made.feasibility.ok);
  // A burst at t = 0 (nothing completes in between): each request goes to the replica with the least prompt + output
  // tokens assigned so far, lowest index on ties.
  std::vector<serve::Request> reqs;
  std::vector<int64_t> load(4, 0);
  std::vector<int> want;
  for (int i = 0; i < 40; ++i) {
    const int64_t in = 50 + (i * 7919) % 3000, out = 1 + (i * 104729) % 400;
    reqs.push_back(request(i, 0.0, in, out));
    int best = 0;
    for (int k = 1; k < 4; ++k)
      if (load[k] < load[best]) best = k;
    load[best] += in + out;
    want.push_back(best);
  }
  const auto r = serve_list(d, made.plan, reqs, "least_outstanding_tokens");
  ASSERT_EQ(r.size(), 40u);
  for (const auto& [id, row] : r) EXPECT_EQ(row.replica, want[static_cast<size_t>(id)]) << "request " << id;
}

plan::Plan disaggregated(const Dgx& d, int prefill_dp, int decode_dp) {
  plan::ParallelConfig p, q;
  p.dp = prefill_dp;
  q.dp = decode_dp;
  auto made = plan::make_plan(d.model, d.cluster, "", plan::DisaggConfig{p, q});
  EXPECT_TRUE(made.feasibility.ok);
  return made.plan;
}

TEST(ServingDisaggregated, EveryRequestCompletesAndIsDecodedInTheDecodePool) {
  Dgx d;
  const plan::Plan p = disaggregated(d, 3, 5);
  ASSERT_EQ(p.pools.size(), 2u);
  std::vector<serve::Request> reqs;
  for (int i = 0; i < 300; ++i) reqs.push_back(request(i, 0.02 * i, 200 + (i * 7919) % 4000, 1 + (i * 104729) % 300));
  serve::Summary s;
  const auto r = serve_list(d, p, reqs, "least_outstanding_tokens", &s);
  EXPECT_EQ(s.arrived, 300);
  EXPECT_EQ(s.completed, 300);
  for (const auto& [id, row] : r) {
    EXPECT_EQ(row.outcome, "completed");
    EXPECT_GE(row.prefill_replica, 0);
    EXPECT_LT(row.prefill_replica, 3) << "request " << id;  // prefill pool: replicas 0-2
    if (reqs[static_cast<size_t>(id)].output_tokens > 1) {
      EXPECT_GE(row.replica, 3) << "request " << id;  // decode pool
    }
  }
}

double step_time(const plan::Plan& p, const spec::Cluster& c, int pool, int64_t new_tokens, int64_t context) {
  plan::Batch b;
  plan::SeqWork w;
  w.new_tokens = new_tokens;
  w.context = context;
  b.seqs.push_back(w);
  cost::CostOptions o;
  return cost::CostModel(p, c, o).step_time_s(plan::build_step(p, pool, b));
}

// A lone request: the prefill instance computes its first token, its KV (prompt x KV bytes per token) crosses the
// NVSwitch uncontended, then the decode instance decodes the rest. first_token_at_decode: the first token is delivered
// when the decode instance starts on it (TTFT = prefill + transfer, the idle decode replica starts at once);
// otherwise at the end of the prefill. E2E is the same either way.
void lone_request(bool first_token_at_decode) {
  Dgx d;
  const plan::Plan p = disaggregated(d, 1, 1);
  const int64_t in = 3000, out = 12;
  const double prefill = step_time(p, d.cluster, 0, in, 0);
  double decode = 0;
  for (int64_t k = 1; k < out; ++k) decode += step_time(p, d.cluster, 1, 1, in + k - 1);
  RouteTable routes(d.cluster);
  const Route& route = routes.gpu_route(p.pools[0].placement[0][0], p.pools[1].placement[0][0]);
  const double bytes = static_cast<double>(in) * spec::kv_bytes_per_token(d.model);
  const double transfer = route.latency_s + bytes / route.min_bw_Bps;
  ASSERT_GT(route.latency_s, 0);
  ASSERT_GT(transfer, 1e-5);

  serve::Summary s;
  const auto r = serve_list(d, p, {request(0, 0.5, in, out)}, "round_robin", &s, first_token_at_decode);
  ASSERT_EQ(s.completed, 1);
  EXPECT_EQ(r.at(0).prefill_replica, 0);
  EXPECT_EQ(r.at(0).replica, 1);
  EXPECT_NEAR(s.e2e_s.mean, prefill + transfer + decode, 1e-12);
  const double first_decode = step_time(p, d.cluster, 1, 1, in);
  if (first_token_at_decode) {
    EXPECT_NEAR(s.ttft_s.mean, prefill + transfer, 1e-12);
    // Every gap is one decode step (the transfer is in TTFT): the largest is the last, at the longest context.
    EXPECT_NEAR(s.itl_s.max, step_time(p, d.cluster, 1, 1, in + out - 2), 1e-12);
    EXPECT_NEAR(s.tpot_s.mean, decode / double(out - 1), 1e-12);
  } else {
    EXPECT_NEAR(s.ttft_s.mean, prefill, 1e-12);
    // The second token waits for the transfer: the largest inter-token gap is transfer + the first decode step.
    EXPECT_NEAR(s.itl_s.max, transfer + first_decode, 1e-12);
  }
}

TEST(ServingDisaggregated, LoneRequestFirstTokenAtDecodeHasTtftPrefillPlusKvTransfer) { lone_request(true); }

TEST(ServingDisaggregated, LoneRequestFirstTokenAtPrefillHasTtftPrefill) { lone_request(false); }

}  // namespace
}  // namespace parasol::sim

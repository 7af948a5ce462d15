// Router policies (core/serve/router.hpp): load-aware policies beat round-robin on unequal replicas, prefix-aware
// routing raises prefix-cache hits within bounds derived from where each tenant's requests went, its load bound
// sends work away from an overloaded cache holder, sessions stick to one replica, power-of-two is a function of its
// seed, and the `router:` loader and the trace readers' session fields reject bad input with the key named.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>

#include "core/common/error.hpp"
#include "core/serve/event_loop.hpp"
#include "core/serve/router.hpp"
#include "sim/list_source.hpp"

namespace parasol::serve {
namespace {

using parasol::testing::ListSource;

using parasol::testing::make_request;

// Wraps a router and remembers, per request id, the replica it chose and the request's session.
class RecordingRouter final : public Router {
 public:
  explicit RecordingRouter(Router& inner) : inner_(inner) {}
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override {
    const int i = inner_.route(r, replicas);
    replica_of[r.id] = i;
    session_of[r.id] = r.session;
    return i;
  }
  std::string name() const override { return inner_.name(); }
  std::map<int64_t, int> replica_of;
  std::map<int64_t, int64_t> session_of;

 private:
  Router& inner_;
};

// The linear runner's step time times a per-replica factor (replica 0 of {4, 1, 1, 1} is 4x slower).
class UnequalRunner final : public StepRunner {
 public:
  UnequalRunner(std::vector<double> slowdown, LinearStepRunner base) : slowdown_(std::move(slowdown)), base_(base) {}
  StepTiming run(int replica, const plan::Batch& batch) override {
    StepTiming t = base_.run(replica, batch);
    t.total_s *= slowdown_[size_t(replica)];
    return t;
  }
  std::string name() const override { return "unequal"; }

 private:
  std::vector<double> slowdown_;
  LinearStepRunner base_;
};

SchedulerConfig roomy_config(bool prefix_caching = false) {
  SchedulerConfig c;
  c.kv_blocks = int64_t{1} << 16;  // 1 Mi tokens: nothing is rejected, preempted or evicted in these tests
  c.kv_block_tokens = 16;
  c.prefix_caching = prefix_caching;
  return c;
}

Summary serve(RequestSource& src, int replicas, const SchedulerConfig& cfg, Router& router, StepRunner& runner) {
  std::vector<Scheduler> scheds;
  for (int r = 0; r < replicas; ++r) scheds.emplace_back(cfg, r);
  MetricsConfig mc;
  mc.replicas = replicas;
  MetricsCollector metrics(mc);
  const EventLoopResult res = run_event_loop(src, router, scheds, runner, metrics);
  return metrics.finish(res.end_s);
}

// 2000 Poisson arrivals at 200 req/s of 512 + 64 tokens on 4 replicas, replica 0 four times slower. Its decode
// throughput is at most 256 / (4 x (1 ms + 256 x 0.1 ms)) = 2.4k tokens/s = 37.6 req/s, below the 50 req/s
// round-robin sends it, so its queue grows for the whole run; the three others have capacity to spare (~135 req/s
// each), which a load-aware router uses.
double mean_e2e(const std::string& policy) {
  WorkloadSpec w;
  w.arrival.kind = ArrivalKind::kPoisson;
  w.arrival.rate_per_s = 200;
  w.input = fixed_length(512);
  w.output = fixed_length(64);
  w.max_requests = 2000;
  auto src = make_source(w, 7);
  RouterConfig rc;
  rc.policy = parse_router_policy(policy);
  rc.seed = 3;
  auto router = make_router(rc);
  UnequalRunner runner({4, 1, 1, 1}, LinearStepRunner(1e-3, 2e-6, 1e-4));
  const Summary s = serve(*src, 4, roomy_config(), *router, runner);
  EXPECT_EQ(s.completed, 2000) << policy;
  return s.e2e_s.mean;
}

TEST(ServeRouter, LoadAwarePoliciesBeatRoundRobinWhenOneReplicaIsFourTimesSlower) {
  const double rr = mean_e2e("round_robin");
  const double p2c = mean_e2e("power_of_two");
  const double lor = mean_e2e("least_outstanding_requests");
  const double lot = mean_e2e("least_outstanding_tokens");
  std::printf(
      "mean e2e: round_robin %.4f s, power_of_two %.4f s, least_outstanding_requests %.4f s, "
      "least_outstanding_tokens %.4f s\n",
      rr, p2c, lor, lot);
  // Round-robin's slow replica is past saturation, the load-aware routers keep every queue bounded: the gap is
  // large, not a few percent.
  EXPECT_LT(p2c, 0.5 * rr);
  EXPECT_LT(lor, 0.5 * rr);
  EXPECT_LT(lot, 0.5 * rr);
}

TEST(ServeRouter, LeastOutstandingRequestsPicksFewestRequestsThenFewestTokensAndSkipsDead) {
  std::vector<ReplicaLoad> loads(4);
  loads[0].outstanding_requests = 3;
  loads[1].outstanding_requests = 2, loads[1].outstanding_tokens = 900;
  loads[2].outstanding_requests = 2, loads[2].outstanding_tokens = 100;
  loads[3].outstanding_requests = 0, loads[3].alive = false;
  LeastOutstandingRequestsRouter lor;
  const Request r = make_request(0, 0, 10, 10);
  EXPECT_EQ(lor.route(r, loads), 2);
  loads[2].outstanding_tokens = 900;
  EXPECT_EQ(lor.route(r, loads), 1);  // full tie: lowest index
  for (auto& l : loads) l.alive = false;
  EXPECT_EQ(lor.route(r, loads), -1);
}

// A multi-tenant trace: 8 tenants, each with a 6-block (3072-token) system prompt, every request adding one block of
// its own; tenants drawn at random (seeded) for 400 requests 10 ms apart. Every prefill (3.6k tokens: ~5 ms) ends
// long before the next request of its tenant could reuse it, and nothing is evicted (roomy KV), so on each replica a
// tenant's shared blocks miss exactly once, on its first request there, and hit on every later one.
constexpr int kTenants = 8, kSharedBlocks = 6, kTenantRequests = 400, kTenantReplicas = 4;

std::vector<Request> tenant_trace(std::vector<int>& tenant_of) {
  std::mt19937_64 rng(11);
  std::vector<Request> out;
  for (int i = 0; i < kTenantRequests; ++i) {
    const int t = int(rng() % kTenants);
    tenant_of.push_back(t);
    std::vector<uint64_t> h;
    for (int k = 0; k < kSharedBlocks; ++k) h.push_back(uint64_t(1000 * (t + 1) + k));
    h.push_back(uint64_t(1'000'000 + i));
    out.push_back(make_request(i, 0.01 * i, (kSharedBlocks + 1) * kPrefixHashTokens, 16, std::move(h)));
  }
  return out;
}

struct TenantRun {
  int64_t hit_tokens = 0;
  int64_t placements = 0;  // sum over tenants of the replicas its requests used
  std::set<int> replicas_used;
};

TenantRun run_tenants(RouterPolicy policy) {
  std::vector<int> tenant_of;
  ListSource src(tenant_trace(tenant_of));
  RouterConfig rc;
  rc.policy = policy;
  auto inner = make_router(rc);
  RecordingRouter router(*inner);
  LinearStepRunner runner(1e-3, 1e-6, 1e-5);
  const Summary s = serve(src, kTenantReplicas, roomy_config(true), router, runner);
  EXPECT_EQ(s.completed, kTenantRequests);
  TenantRun out;
  out.hit_tokens = s.prefix_hit_tokens;
  std::vector<std::set<int>> where(kTenants);
  for (const auto& [id, replica] : router.replica_of) {
    where[size_t(tenant_of[size_t(id)])].insert(replica);
    out.replicas_used.insert(replica);
  }
  for (const auto& w : where) out.placements += int64_t(w.size());
  return out;
}

TEST(ServeRouter, PrefixAwareRaisesPrefixHitsOverRoundRobinWithinTheDerivedBounds) {
  const int64_t shared = kSharedBlocks * kPrefixHashTokens;
  const TenantRun pa = run_tenants(RouterPolicy::kPrefixAware);
  const TenantRun rr = run_tenants(RouterPolicy::kRoundRobin);
  std::printf("prefix hit tokens: prefix_aware %lld (tenant placements %lld), round_robin %lld (placements %lld)\n",
              (long long)pa.hit_tokens, (long long)pa.placements, (long long)rr.hit_tokens, (long long)rr.placements);
  // The load stays far below the balance thresholds, so each tenant's requests all follow its first one.
  EXPECT_EQ(pa.placements, kTenants);
  EXPECT_EQ(pa.replicas_used.size(), size_t(kTenantReplicas));  // first requests go to the emptiest record
  // Each request hits the whole shared prefix except the first of its tenant on each replica it lands on.
  EXPECT_EQ(pa.hit_tokens, (kTenantRequests - pa.placements) * shared);
  EXPECT_EQ(rr.hit_tokens, (kTenantRequests - rr.placements) * shared);
  // Round-robin spreads every tenant over all 4 replicas; prefix-aware prefills each shared prefix once.
  EXPECT_EQ(rr.placements, kTenants * kTenantReplicas);
  EXPECT_GT(pa.hit_tokens, rr.hit_tokens);
}

TEST(ServeRouter, PrefixAwareLeavesAnOverloadedCacheHolderPastBothThresholds) {
  const std::vector<uint64_t> prefix = {7, 8, 9, 10};
  const Request req = make_request(0, 0, 4 * kPrefixHashTokens, 8, prefix);
  struct Case {
    int64_t holder, others;
    int expect;
  };
  // SGLang's defaults (abs 32 requests, rel 1.1): overloaded <=> holder - least > 32 and holder > 1.1 x least.
  const Case cases[] = {
      {32, 0, 0},     // a difference of 32 is not more than 32
      {33, 0, 1},     // past both
      {140, 100, 1},  // 40 > 32 and 140 > 110
      {105, 70, 1},   // 35 > 32 and 105 > 77
      {400, 366, 0},  // 34 > 32 but 400 < 402.6: within the relative bound, the holder keeps it
  };
  for (const Case& c : cases) {
    RouterConfig rc;
    rc.policy = RouterPolicy::kPrefixAware;
    PrefixAwareRouter router(rc);
    std::vector<ReplicaLoad> loads(3);
    ASSERT_EQ(router.route(req, loads), 0);  // empty records, equal loads: the lowest index holds the prefix
    ASSERT_EQ(router.matched_tokens(req, 1), 0);
    loads[0].outstanding_requests = c.holder;
    loads[1].outstanding_requests = loads[2].outstanding_requests = c.others;
    EXPECT_EQ(router.route(req, loads), c.expect) << c.holder << " vs " << c.others;
    // Whoever took it now holds the prefix in its record.
    EXPECT_EQ(router.matched_tokens(req, c.expect), 4 * kPrefixHashTokens);
  }
}

TEST(ServeRouter, PrefixAwareRecordIsBoundedAndEvictsDeepestBlocksFirst) {
  RouterConfig rc;
  rc.policy = RouterPolicy::kPrefixAware;
  rc.cache_blocks = 4;
  PrefixAwareRouter router(rc);
  std::vector<ReplicaLoad> one(1);
  const Request a = make_request(0, 0, 3 * kPrefixHashTokens, 1, {1, 2, 3});
  const Request b = make_request(1, 0, 3 * kPrefixHashTokens, 1, {4, 5, 6});
  router.route(a, one);
  router.route(b, one);
  EXPECT_EQ(router.record_blocks(0), 4);
  EXPECT_EQ(router.matched_tokens(b, 0), 3 * kPrefixHashTokens);
  EXPECT_EQ(router.matched_tokens(a, 0), 1 * kPrefixHashTokens);  // a's first block survives, its tail went

  // Without a configured capacity, the replica's own prefix-cache size bounds the record.
  rc.cache_blocks = 0;
  PrefixAwareRouter by_load(rc);
  one[0].prefix_cache_blocks = 2;
  by_load.route(a, one);
  EXPECT_EQ(by_load.record_blocks(0), 2);
  EXPECT_EQ(by_load.matched_tokens(a, 0), 2 * kPrefixHashTokens);
}

TEST(ServeRouter, PrefixAwareForgetsTheRecordOfAReplicaSeenDead) {
  RouterConfig rc;
  rc.policy = RouterPolicy::kPrefixAware;
  PrefixAwareRouter router(rc);
  std::vector<ReplicaLoad> loads(2);
  const Request r = make_request(0, 0, 2 * kPrefixHashTokens, 1, {1, 2});
  ASSERT_EQ(router.route(r, loads), 0);
  loads[0].alive = false;
  EXPECT_EQ(router.route(r, loads), 1);
  EXPECT_EQ(router.record_blocks(0), 0);  // its KV cache died with it
  loads[0].alive = true;
  EXPECT_EQ(router.matched_tokens(r, 0), 0);
  EXPECT_EQ(router.route(r, loads), 1);  // the prefix now lives on replica 1
}

TEST(ServeRouter, PrefixAwareFollowsAMatchOnlyPastTheCacheThreshold) {
  RouterConfig rc;
  rc.policy = RouterPolicy::kPrefixAware;  // cache_threshold 0.5
  PrefixAwareRouter router(rc);
  std::vector<ReplicaLoad> loads(2);
  ASSERT_EQ(router.route(make_request(0, 0, 2 * kPrefixHashTokens, 1, {1, 2}), loads), 0);
  // Shares 1 of 4 blocks with replica 0's record (0.25 <= 0.5): the smallest record, replica 1's, takes it.
  EXPECT_EQ(router.route(make_request(1, 0, 4 * kPrefixHashTokens, 1, {1, 3, 4, 5}), loads), 1);
  // Shares 2 of 3 blocks with replica 0 (0.67 > 0.5): follows the match, though replica 0 holds more blocks.
  EXPECT_EQ(router.route(make_request(2, 0, 3 * kPrefixHashTokens, 1, {1, 2, 6}), loads), 0);
  // No prefix hashes: least load (requests, then tokens).
  loads[0].outstanding_requests = 1;
  EXPECT_EQ(router.route(make_request(3, 0, 100, 1), loads), 1);
}

TEST(ServeRouter, SessionAffinityKeepsEverySessionOnOneReplicaAndSpreadsSessions) {
  constexpr int kSessions = 16, kTurns = 20;
  std::vector<Request> reqs;
  std::mt19937_64 rng(5);
  for (int i = 0; i < kSessions * kTurns; ++i) {
    // Sessions interleave at random; every fifth request has no session.
    const int64_t session = i % 5 == 4 ? -1 : int64_t(rng() % kSessions);
    reqs.push_back(make_request(i, 0.005 * i, 256 + int64_t(rng() % 512), 32, {}, session));
  }
  ListSource src(reqs);
  auto inner = make_router("session_affinity");
  RecordingRouter router(*inner);
  LinearStepRunner runner(1e-3, 1e-6, 1e-5);
  const Summary s = serve(src, 4, roomy_config(), router, runner);
  EXPECT_EQ(s.completed, int64_t(reqs.size()));
  std::map<int64_t, std::set<int>> where;
  for (const auto& [id, replica] : router.replica_of) {
    const int64_t session = router.session_of[id];
    if (session >= 0) where[session].insert(replica);
  }
  std::set<int> first_replicas;
  for (const auto& [session, replicas] : where) {
    EXPECT_EQ(replicas.size(), 1u) << "session " << session;
    first_replicas.insert(*replicas.begin());
  }
  EXPECT_EQ(first_replicas.size(), 4u);  // each session starts on the least loaded replica: all four get some
}

TEST(ServeRouter, SessionAffinityMovesASessionOnlyWhenItsReplicaDies) {
  SessionAffinityRouter router;
  std::vector<ReplicaLoad> loads(3);
  loads[0].outstanding_tokens = 50, loads[1].outstanding_tokens = 10, loads[2].outstanding_tokens = 30;
  const Request turn = make_request(0, 0, 100, 10, {}, 42);
  ASSERT_EQ(router.route(turn, loads), 1);  // first turn: least outstanding tokens
  loads[1].outstanding_tokens = 1000;
  EXPECT_EQ(router.route(turn, loads), 1);  // sticks, however loaded
  loads[1].alive = false;
  EXPECT_EQ(router.route(turn, loads), 2);  // its replica died: the least loaded survivor
  loads[1].alive = true;
  loads[1].outstanding_tokens = 0;
  EXPECT_EQ(router.route(turn, loads), 2);                         // and stays there
  EXPECT_EQ(router.route(make_request(1, 0, 100, 10), loads), 1);  // no session: least outstanding tokens
}

// 1000 decisions of power-of-two on 5 replicas (one dead) whose loads evolve with the choices.
std::vector<int> p2c_choices(uint64_t seed) {
  PowerOfTwoRouter router(seed);
  std::vector<ReplicaLoad> loads(5);
  loads[3].alive = false;
  std::vector<int> out;
  for (int i = 0; i < 1000; ++i) {
    const int r = router.route(make_request(i, 0, 1, 1), loads);
    out.push_back(r);
    loads[size_t(r)].outstanding_tokens += 1 + i % 7;
    if (i % 3 == 0) loads[size_t(i % 5)].outstanding_tokens /= 2;
  }
  return out;
}

TEST(ServeRouter, PowerOfTwoIsAFunctionOfItsSeedAndNeverPicksTheDeadOrTheStrictlyHeaviest) {
  const std::vector<int> a = p2c_choices(1), b = p2c_choices(1), c = p2c_choices(2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (int r : a) EXPECT_NE(r, 3);
  // The chosen replica is the lighter of two distinct ones, so never the unique heaviest.
  PowerOfTwoRouter router(9);
  std::vector<ReplicaLoad> loads(4);
  loads[2].outstanding_tokens = 100;
  std::vector<int> count(4);
  for (int i = 0; i < 400; ++i) ++count[size_t(router.route(make_request(i, 0, 1, 1), loads))];
  EXPECT_EQ(count[2], 0);
  // With 0, 1, 3 equal, the pair's lower index wins: of the 6 equally likely pairs, 0 takes 3, 1 takes 2 and 3 takes
  // one ({2, 3}). Each count is within 5 binomial standard deviations of 400 x its share.
  const double share[] = {1.0 / 2, 1.0 / 3, 0, 1.0 / 6};
  for (size_t i : {0u, 1u, 3u}) {
    const double mean = 400 * share[i], sd = std::sqrt(400 * share[i] * (1 - share[i]));
    EXPECT_NEAR(count[i], mean, 5 * sd) << "replica " << i;
  }
  // One alive replica is always the answer; none alive is -1.
  std::vector<ReplicaLoad> lone(3);
  lone[0].alive = lone[2].alive = false;
  EXPECT_EQ(router.route(make_request(0, 0, 1, 1), lone), 1);
  lone[1].alive = false;
  EXPECT_EQ(router.route(make_request(0, 0, 1, 1), lone), -1);
}

TEST(ServeRouter, UpdateLoadFillsEveryFieldFromTheScheduler) {
  SchedulerConfig c = roomy_config(true);
  c.kv_blocks = 3200;  // 51200 tokens = 100 prefix blocks
  Scheduler s(c, 0);
  ASSERT_FALSE(s.add(make_request(0, 0, 1000, 50), 0));
  ASSERT_FALSE(s.add(make_request(1, 0, 200, 5), 0));
  ReplicaLoad load;
  load.alive = false;
  update_load(load, s);
  EXPECT_EQ(load.outstanding_requests, 2);
  EXPECT_EQ(load.outstanding_tokens, 1000 + 50 + 200 + 5);
  EXPECT_EQ(load.prefix_cache_blocks, 100);
  EXPECT_FALSE(load.alive);  // the driver's to set
  c.prefix_caching = false;
  update_load(load, Scheduler(c, 1));
  EXPECT_EQ(load.prefix_cache_blocks, 0);
  EXPECT_EQ(load.outstanding_requests, 0);
}

RouterConfig load_text(const std::string& text, RouterConfig defaults = {}) {
  return load_router(yaml::load_string(text, "router.yaml").at("router"), defaults);
}

std::string error_of(const std::string& text) {
  try {
    load_text(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(ServeRouter, LoadRouterReadsEveryKeyAndNamesTheKeyOfABadValue) {
  const RouterConfig c = load_text(
      "router:\n  policy: prefix_aware\n  seed: 17\n  cache_threshold: 0.25\n  balance_abs_threshold: 8\n"
      "  balance_rel_threshold: 1.5\n  cache_blocks: 1000\n");
  EXPECT_EQ(c.policy, RouterPolicy::kPrefixAware);
  EXPECT_EQ(c.seed, 17u);
  EXPECT_EQ(c.cache_threshold, 0.25);
  EXPECT_EQ(c.balance_abs_threshold, 8);
  EXPECT_EQ(c.balance_rel_threshold, 1.5);
  EXPECT_EQ(c.cache_blocks, 1000);
  RouterConfig d;
  d.seed = 99;
  EXPECT_EQ(load_text("router: power_of_two\n", d).policy, RouterPolicy::kPowerOfTwo);
  EXPECT_EQ(load_text("router: {policy: round_robin}\n", d).seed, 99u);  // absent keys keep the defaults

  std::string e = error_of("router:\n  policy: round_robin\n  balance_abs_treshold: 3\n");
  EXPECT_NE(e.find("router.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("router.balance_abs_treshold"), std::string::npos) << e;
  EXPECT_NE(e.find("balance_abs_threshold"), std::string::npos) << e;  // did you mean
  e = error_of("router:\n  balance_rel_threshold: 0.5\n");
  EXPECT_NE(e.find("router.balance_rel_threshold"), std::string::npos) << e;
  e = error_of("router:\n  cache_threshold: 2\n");
  EXPECT_NE(e.find("router.cache_threshold"), std::string::npos) << e;
  e = error_of("router:\n  seed: -1\n");
  EXPECT_NE(e.find("router.seed"), std::string::npos) << e;
  e = error_of("router:\n  cache_blocks: many\n");
  EXPECT_NE(e.find("router.cache_blocks"), std::string::npos) << e;
  e = error_of("router:\n  policy: random\n");
  EXPECT_NE(e.find("router.policy"), std::string::npos) << e;
  for (const char* p : {"round_robin", "least_outstanding_tokens", "least_outstanding_requests", "power_of_two",
                        "prefix_aware", "session_affinity"}) {
    EXPECT_NE(e.find(p), std::string::npos) << e;
    EXPECT_EQ(make_router(p)->name(), p);
  }
  try {
    make_router("random");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("session_affinity"), std::string::npos) << err.what();
  }
}

std::string write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("parasol_router_test_" + name);
  std::ofstream(path) << text;
  return path.string();
}

TEST(ServeRouter, TraceReadersTakeTheSessionColumnAndField) {
  const std::string csv = write_temp("sessions.csv",
                                     "arrival_s,input_tokens,output_tokens,session\n"
                                     "0,10,1,7\n0.5,20,2,\n1,30,3,0\n");
  auto src = open_trace(trace_spec(csv, TraceFormat::kParasol));
  EXPECT_EQ(src->next()->session, 7);
  EXPECT_EQ(src->next()->session, -1);  // empty: no session
  EXPECT_EQ(src->next()->session, 0);
  const std::string jsonl = write_temp("sessions.jsonl",
                                       "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, "
                                       "\"session_id\": 12}\n"
                                       "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1}\n");
  src = open_trace(trace_spec(jsonl, TraceFormat::kMooncake));
  EXPECT_EQ(src->next()->session, 12);
  EXPECT_EQ(src->next()->session, -1);

  const std::string bad_csv = write_temp("bad_session.csv", "arrival_s,input_tokens,output_tokens,session\n0,1,1,x\n");
  try {
    validate_trace(trace_spec(bad_csv, TraceFormat::kParasol));
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "session");
    EXPECT_EQ(e.line(), 2);
  }
  const std::string bad_jsonl = write_temp(
      "bad_session.jsonl", "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"session_id\": -3}\n");
  try {
    validate_trace(trace_spec(bad_jsonl, TraceFormat::kMooncake));
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "session_id");
  }
  for (const auto& p : {csv, jsonl, bad_csv, bad_jsonl}) std::filesystem::remove(p);
}

}  // namespace
}  // namespace parasol::serve

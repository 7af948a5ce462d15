// Metrics: percentile interpolation (closed forms), ITL histogram resolution, goodput, MFU, conservation of counts,
// the CSV and trace JSON shapes, and the router policies.
#include <gtest/gtest.h>

#include <cmath>

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/error.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"

namespace parasol::serve {
namespace {

RequestRecord done(int64_t id, double arrival, double ttft, double tpot, int64_t out) {
  RequestRecord r;
  r.id = id;
  r.arrival_s = arrival;
  r.first_scheduled_s = arrival;
  r.first_token_s = arrival + ttft;
  r.finish_s = r.first_token_s + tpot * double(out - 1);
  r.input_tokens = 100;
  r.output_tokens = r.generated_tokens = out;
  return r;
}

TEST(ServeMetrics, PercentilesInterpolateLinearlyBetweenClosestRanks) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  EXPECT_DOUBLE_EQ(percentile(v, 0.5), 50.5);
  EXPECT_DOUBLE_EQ(percentile(v, 0.9), 90.1);
  EXPECT_DOUBLE_EQ(percentile(v, 0.99), 99.01);
  EXPECT_DOUBLE_EQ(percentile(v, 1.0), 100);
  EXPECT_DOUBLE_EQ(percentile(v, 0.0), 1);
  std::vector<double> one{3.5};
  EXPECT_DOUBLE_EQ(percentile(one, 0.999), 3.5);
}

TEST(ServeMetrics, SummaryCountsGoodputAndLatencies) {
  MetricsConfig c;
  c.slo.ttft_s = 0.2;
  c.slo.tpot_s = 0.05;
  c.replicas = 2;
  c.gpus_per_replica = 4;
  c.peak_flops_per_gpu = 1e12;
  c.peak_bw_per_gpu = 1e9;
  c.kv_sample_interval_s = 1.0;
  std::ostringstream csv;
  c.requests_csv = &csv;
  MetricsCollector m(c);
  // TTFT 0.01 .. 1.00 over 100 requests, TPOT 0.04 for even ids, 0.06 for odd ones.
  for (int i = 0; i < 100; ++i) m.on_request(done(i, i * 0.1, 0.01 * (i + 1), i % 2 ? 0.06 : 0.04, 11));
  RequestRecord rej;
  rej.id = 100;
  rej.outcome = Outcome::kRejected;
  rej.reason = "too long, really";
  m.on_request(rej);
  StepSample s;
  s.replica = 1;
  s.start_s = 0;
  s.end_s = 2;
  s.flops = 8e12;  // over 4 GPUs for the 20 s run: 8e12 / (4 x 1e12 x 20) = 10%
  s.bytes = 4e9;
  s.kv_utilization = 0.5;
  m.on_step(s);
  Summary sum = m.finish(20.0);
  EXPECT_EQ(sum.arrived, 101);
  EXPECT_EQ(sum.completed, 100);
  EXPECT_EQ(sum.rejected, 1);
  ASSERT_EQ(sum.reasons.size(), 1u);
  EXPECT_EQ(sum.reasons[0].second, 1);
  EXPECT_NEAR(sum.ttft_s.p50, 0.505, 1e-12);
  EXPECT_NEAR(sum.ttft_s.p99, 0.9901, 1e-12);
  EXPECT_NEAR(sum.ttft_s.mean, 0.505, 1e-12);
  EXPECT_NEAR(sum.tpot_s.p50, 0.05, 1e-12);  // between the 0.04s and the 0.06s
  EXPECT_EQ(sum.slo_met, 10);                 // even ids with ttft <= 0.2: ids 0, 2, ..., 18
  EXPECT_NEAR(sum.goodput_fraction, 10.0 / 101, 1e-12);
  EXPECT_FALSE(sum.ttft_p99_met);
  EXPECT_NEAR(sum.request_throughput, 5.0, 1e-12);
  EXPECT_EQ(sum.output_tokens, 1100);
  ASSERT_EQ(sum.replica_mfu.size(), 2u);
  EXPECT_NEAR(sum.replica_mfu[1], 0.1, 1e-12);
  EXPECT_NEAR(sum.replica_mbu[1], 0.05, 1e-12);
  EXPECT_NEAR(sum.mfu_mean, 0.05, 1e-12);
  // KV samples at 0, 1, ..., 20 s: the step ended at 2 s, so from t = 2 on replica 1 is half full.
  ASSERT_EQ(sum.kv_utilization.size(), 21u);
  EXPECT_DOUBLE_EQ(sum.kv_utilization[1].mean, 0);
  EXPECT_DOUBLE_EQ(sum.kv_utilization[2].mean, 0.25);
  EXPECT_DOUBLE_EQ(sum.kv_utilization[2].max, 0.5);
  // CSV: header + one line per request; the reason with a comma is quoted.
  const std::string text = csv.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 102);
  EXPECT_NE(text.find("\"too long, really\""), std::string::npos);
  std::ostringstream json;
  MetricsCollector::write_summary_json(sum, json);
  auto j = nlohmann::json::parse(json.str());
  EXPECT_EQ(j["requests"]["arrived"], 101);
  EXPECT_NEAR(j["latency_s"]["ttft"]["p99"].get<double>(), 0.9901, 1e-9);
  EXPECT_FALSE(MetricsCollector::summary_text(sum).empty());
}

// A run that spans years (an idle gap between two arrivals) keeps a bounded KV series: neighbours merge and the
// interval doubles, and the series still covers the whole span with the right mean.
TEST(ServeMetrics, KvSeriesStaysBoundedOverAYearsLongSpan) {
  MetricsConfig c;
  c.replicas = 1;
  c.kv_sample_interval_s = 1.0;
  MetricsCollector m(c);
  StepSample s;
  s.replica = 0;
  s.start_s = 0;
  s.end_s = 1;
  s.kv_utilization = 1.0;  // full for [1 s, 1e9 s), empty after
  m.on_step(s);
  s.start_s = 1e9 - 1;
  s.end_s = 1e9;
  s.kv_utilization = 0.0;
  m.on_step(s);
  const Summary sum = m.finish(2e9);
  ASSERT_GE(sum.kv_utilization.size(), 2048u);
  ASSERT_LE(sum.kv_utilization.size(), 4096u);
  const double step = sum.kv_utilization[1].t_s - sum.kv_utilization[0].t_s;  // a power of two seconds
  EXPECT_EQ(step, std::exp2(std::round(std::log2(step))));
  for (size_t i = 0; i < sum.kv_utilization.size(); ++i) EXPECT_EQ(sum.kv_utilization[i].t_s, double(i) * step);
  EXPECT_LT(sum.kv_utilization.back().t_s, 2e9);
  EXPECT_GE(sum.kv_utilization.back().t_s + step, 2e9 - step);
  EXPECT_NEAR(sum.kv_utilization_mean, 0.5, 1e-3);  // full for half of the span
}

TEST(ServeMetrics, ItlPercentilesAreWithinHistogramResolution) {
  MetricsConfig c;
  MetricsCollector m(c);
  std::vector<double> v;
  for (int i = 1; i <= 10000; ++i) v.push_back(1e-3 * (1 + 0.37 * std::sin(i)) + 1e-6 * i);
  m.on_itl(v);
  Summary s = m.finish(1.0);
  EXPECT_EQ(s.itl_s.count, 10000);
  std::vector<double> w = v;
  for (double p : {0.5, 0.9, 0.99, 0.999}) {
    const double exact = percentile(w, p);
    const double got = p == 0.5 ? s.itl_s.p50 : p == 0.9 ? s.itl_s.p90 : p == 0.99 ? s.itl_s.p99 : s.itl_s.p999;
    EXPECT_NEAR(got, exact, exact * 5e-4) << p;
  }
  double mx = 0;
  for (double x : v) mx = std::max(mx, x);
  EXPECT_DOUBLE_EQ(s.itl_s.max, mx);
}

// Run-length encoded ITL samples (the scheduler's StepEvents::itl_s) give the same summary, bit for bit, as the same
// samples one by one: count, mean (the sum is accumulated sample by sample), max and every percentile.
TEST(ServeMetrics, ItlRunsEqualIndividualSamples) {
  MetricsCollector one(MetricsConfig{}), runs(MetricsConfig{});
  std::vector<double> v;
  std::vector<ItlRun> r;
  for (int i = 1; i <= 3000; ++i) {
    const double gap = i % 7 == 0 ? 0.0 : 1e-3 * (1 + 0.37 * std::sin(i / 13));  // runs of equal gaps, some zero
    v.push_back(gap);
    if (!r.empty() && r.back().gap_s == gap) ++r.back().count;
    else r.push_back({gap, 1});
  }
  ASSERT_LT(r.size(), v.size() / 2);
  one.on_itl(v);
  runs.on_itl(r);
  const Summary a = one.finish(1.0), b = runs.finish(1.0);
  EXPECT_EQ(a.itl_s.count, b.itl_s.count);
  EXPECT_EQ(a.itl_s.mean, b.itl_s.mean);
  EXPECT_EQ(a.itl_s.max, b.itl_s.max);
  EXPECT_EQ(a.itl_s.p50, b.itl_s.p50);
  EXPECT_EQ(a.itl_s.p90, b.itl_s.p90);
  EXPECT_EQ(a.itl_s.p99, b.itl_s.p99);
  EXPECT_EQ(a.itl_s.p999, b.itl_s.p999);
}

TEST(ServeMetrics, HumanNumbersHaveThreeSignificantFigures) {
  EXPECT_EQ(human_number(1234.6), "1235");
  EXPECT_EQ(human_number(123.45), "123");
  EXPECT_EQ(human_number(12.345), "12.3");
  EXPECT_EQ(human_number(1.2345), "1.23");
  EXPECT_EQ(human_number(0.012345), "0.0123");
  EXPECT_EQ(human_number(0), "0");
  EXPECT_EQ(human_number(-2.5), "-2.50");
  EXPECT_EQ(human_number(std::numeric_limits<double>::quiet_NaN()), "-");
}

TEST(ServeMetrics, TraceJsonIsValidAndCapped) {
  MetricsConfig c;
  std::ostringstream trace;
  c.trace_json = &trace;
  c.trace_max_steps = 3;
  MetricsCollector m(c);
  for (int i = 0; i < 5; ++i) {
    StepSample s;
    s.replica = i % 2;
    s.start_s = i;
    s.end_s = i + 0.5;
    s.prefill_tokens = 10;
    m.on_step(s);
  }
  m.finish(6);
  auto j = nlohmann::json::parse(trace.str());
  int steps = 0;
  for (const auto& e : j["traceEvents"]) steps += e["ph"] == "X";
  EXPECT_EQ(steps, 3);
}

TEST(ServeRouter, RoundRobinSkipsDeadAndLeastOutstandingPicksMin) {
  std::vector<ReplicaLoad> loads(3);
  loads[1].alive = false;
  RoundRobinRouter rr;
  Request r;
  EXPECT_EQ(rr.route(r, loads), 0);
  EXPECT_EQ(rr.route(r, loads), 2);
  EXPECT_EQ(rr.route(r, loads), 0);
  LeastOutstandingTokensRouter lot;
  loads[0].outstanding_tokens = 50;
  loads[1].outstanding_tokens = 10;
  loads[2].outstanding_tokens = 40;
  EXPECT_EQ(lot.route(r, loads), 2);
  loads[2].outstanding_tokens = 50;
  EXPECT_EQ(lot.route(r, loads), 0);  // tie: lowest index
  for (auto& l : loads) l.alive = false;
  EXPECT_EQ(lot.route(r, loads), -1);
  EXPECT_EQ(rr.route(r, loads), -1);
  EXPECT_THROW(make_router("random"), ConfigError);
}

}  // namespace
}  // namespace parasol::serve

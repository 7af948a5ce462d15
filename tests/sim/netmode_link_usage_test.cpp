// Per-link utilization over time (sim/link_usage.hpp): every byte a link carried lands in its time series (the bucket
// totals equal the per-link totals, also after the bucket width doubled), a lone flow's bytes sit in the buckets of
// its lifetime at its rate, flows are grouped by collective for the Chrome trace, and the trace events append to a
// trace file as valid JSON. One simulation per TEST (own process).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/serve/metrics.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"
#include "tests/sim/test_clusters.hpp"

namespace parasol::sim {
namespace {

namespace sg4 = simgrid::s4u;
using plan::CollectiveAlgo;

TEST(NetmodeLinkUsage, BucketsConserveBytesAndPlaceALoneFlowAtItsRate) {
  testing::FabricSpec f;
  f.gpus_per_node = 4;
  f.scaleup_reduces = true;
  const spec::Cluster c = testing::fabric(f);
  auto engine = make_engine();
  LinkUsage::Options o;
  o.bucket_s = 1e-4;
  o.max_buckets = 64;
  Platform p(c, o);
  const double S = 450e6;  // 1 ms on one NVLink at 450 GB/s
  double t_flow = 0;
  sg4::Actor::create("driver", p.gpu_host(0), [&] {
    FlowSet one;
    one.algo = CollectiveAlgo::kDirect;
    one.flows.push_back({p.routes().gpu_vertex(0), p.routes().gpu_vertex(1), S});
    t_flow = run_flows(p, one);
    for (auto a : {CollectiveAlgo::kRing, CollectiveAlgo::kNvls}) {
      Collective coll;
      coll.kind = CollKind::kAllReduce;
      coll.gpus = {0, 1, 2, 3};
      coll.bytes = 64e6;
      coll.algo = a;
      run_flows(p, plan_collective(coll, p.routes()));
    }
    sg4::this_actor::sleep_until(0.05);  // 500 initial buckets: the width doubles to fit 64
    Collective late;
    late.kind = CollKind::kAllGather;
    late.gpus = {0, 1, 2, 3};
    late.bytes = 32e6;
    run_flows(p, plan_collective(late, p.routes()));
  });
  engine->run();
  const auto& u = *p.usage();
  EXPECT_GE(u.bucket_s(), 0.05 / 64);
  double total = 0;
  for (size_t l = 0; l < u.link_count(); ++l) {
    EXPECT_NEAR(u.total_bytes(l), p.link_bytes()[l], 1e-9 * (1 + p.link_bytes()[l]))
        << p.link_name(int(l / 2), l % 2 == 0);
    EXPECT_LE(u.series(l).size(), 64u);
    total += u.total_bytes(l);
  }
  EXPECT_GT(total, 2 * S);
  // Groups: the lone flow, the ring, NVLS and the late all-gather, labelled by algorithm.
  ASSERT_EQ(u.groups().size(), 4u);
  EXPECT_EQ(u.groups()[0].label, "direct");
  EXPECT_EQ(u.groups()[1].label, "ring");
  EXPECT_EQ(u.groups()[2].label, "nvls");
  EXPECT_EQ(u.groups()[1].flows, 4);
  EXPECT_EQ(u.groups()[2].flows, 8);
  for (const auto& g : u.groups()) {
    EXPECT_EQ(g.open, 0);
    EXPECT_GT(g.end_s, g.start_s);
    for (const auto& r : g.records) EXPECT_GE(r.end_s, r.start_s);
  }
  // The lone flow: GPU 0's uplink carried S during [0, t_flow] and nothing else before the ring started at t_flow.
  const int up0 = p.link_index(p.routes().gpu_route(0, 1).hops.front());
  const auto& s = u.series(static_cast<size_t>(up0));
  const double w = u.bucket_s();
  const size_t k_end = static_cast<size_t>(t_flow / w);
  double before = 0;
  for (size_t k = 0; k < k_end && k < s.size(); ++k) before += s[k];
  EXPECT_NEAR(before, S * (k_end * w) / t_flow, 1e-6 * S);
  // CSV: header plus rows whose utilization is bytes / (bw x width).
  const std::string csv = link_usage_csv(p);
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "link,bw_Bps,t_start_s,t_end_s,bytes,utilization");
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    double bw = 0, t0 = 0, t1 = 0, bytes = 0, util = 0;
    const auto comma = line.find(',');
    ASSERT_EQ(std::sscanf(line.c_str() + comma + 1, "%lf,%lf,%lf,%lf,%lf", &bw, &t0, &t1, &bytes, &util), 5);
    EXPECT_NEAR(util, bytes / (bw * (t1 - t0)), 1e-6 * util);
  }
  EXPECT_GT(rows, 10);

  // Trace events: valid JSON, appended to a trace file with and without existing events.
  const std::string events = flow_trace_events(p);
  const auto parsed = nlohmann::json::parse("[" + events + "]");
  int slices = 0, starts = 0, finishes = 0;
  for (const auto& e : parsed) {
    slices += e["ph"] == "X";
    starts += e["ph"] == "s";
    finishes += e["ph"] == "f";
  }
  EXPECT_EQ(starts, 1 + 4 + 8 + 4);
  EXPECT_EQ(finishes, starts);
  EXPECT_GE(slices, 4);
  // Through the metrics' trace stream, alone and after the iterations' own events: one valid document.
  for (const bool with_step : {false, true}) {
    std::ostringstream trace;
    serve::MetricsConfig mc;
    mc.trace_json = &trace;
    serve::MetricsCollector metrics(mc);
    if (with_step) {
      serve::StepSample s;
      s.end_s = 1e-3;
      metrics.on_step(s);
    }
    metrics.add_trace_events(events);
    metrics.finish(1.0);
    const auto doc = nlohmann::json::parse(trace.str());
    int flow_starts = 0;
    for (const auto& e : doc["traceEvents"]) flow_starts += e["ph"] == "s";
    EXPECT_EQ(flow_starts, starts);
    if (with_step)
      EXPECT_GT(doc["traceEvents"].size(), parsed.size());  // the iteration's slice (and its track's name)
    else
      EXPECT_EQ(doc["traceEvents"].size(), parsed.size());
  }
}

}  // namespace
}  // namespace parasol::sim

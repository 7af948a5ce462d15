// Sliding-window attention (Mistral): a token attends only the last `sliding_window` tokens, so a decode step's
// attention costs what it costs at the window's length however long the context, and a sequence keeps only the
// window's KV (plus a block): a request whose whole context would not fit the KV cache is served when its window does.
#include <gtest/gtest.h>

#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "core/serve/analytic_step_runner.hpp"
#include "core/serve/event_loop.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "tests/sim/list_source.hpp"

namespace parasol::sim {
namespace {

constexpr int64_t kWindow = 4096;

plan::Plan plan_for(int64_t window, const spec::Cluster& c) {
  spec::Model m = spec::load_model_file(std::string(PARASOL_DATA_DIR) + "/scenarios/models/llama-3.1-8b.yaml");
  m.sliding_window = window;
  plan::ParallelConfig pc;
  auto made = plan::make_plan(m, c, "", pc);
  EXPECT_TRUE(made.feasibility.ok);
  return made.plan;
}

double decode_s(serve::AnalyticStepRunner& r, int64_t context, int64_t seqs = 8) {
  plan::Batch b;
  for (int64_t i = 0; i < seqs; ++i) b.seqs.push_back({i, 1, context, 0, true});
  return r.run(0, b).total_s;
}

TEST(SlidingWindow, DecodeAttentionCostsTheWindowWhateverTheContext) {
  const spec::Cluster c = spec::load_cluster_file(std::string(PARASOL_DATA_DIR) + "/topologies/clusters/dgx-h100.yaml");
  const plan::Plan windowed = plan_for(kWindow, c), full = plan_for(0, c);
  serve::AnalyticStepRunner w(windowed, 0, c), f(full, 0, c);
  // Within the window the two models are the same; past it the windowed step stops growing.
  EXPECT_DOUBLE_EQ(decode_s(w, 1000), decode_s(f, 1000));
  EXPECT_DOUBLE_EQ(decode_s(w, kWindow - 1), decode_s(f, kWindow - 1));
  EXPECT_DOUBLE_EQ(decode_s(w, 60000), decode_s(f, kWindow - 1));
  EXPECT_DOUBLE_EQ(decode_s(w, 120000), decode_s(w, 60000));
  EXPECT_GT(decode_s(f, 60000), 1.2 * decode_s(w, 60000));
  // The built op carries the window's context; a prefill chunk past the window attends q x window keys.
  plan::StepBuilder builder(windowed, 0);
  plan::Batch b;
  b.seqs.push_back({0, 1, 50000, 0, true});
  b.seqs.push_back({1, 1024, 20000, 0, true});
  const plan::Step step = builder.build(b);
  bool seen = false;
  for (const plan::Op& op : step.ranks[0].ops) {
    if (op.ctx_lens.empty()) continue;
    seen = true;
    ASSERT_EQ(op.ctx_lens.size(), 2u);
    EXPECT_EQ(op.ctx_lens[0], kWindow);
    EXPECT_EQ(op.ctx_lens[1], plan::attended_context(1024, 21024, kWindow));
    const double keys = 1024.0 * static_cast<double>(op.ctx_lens[1] - 1024) + 1024.0 * 1025.0 / 2.0;
    EXPECT_NEAR(keys, 1024.0 * kWindow, 1024.0);
  }
  EXPECT_TRUE(seen);
}

TEST(SlidingWindow, ASequenceKeepsOnlyItsWindowOfKv) {
  serve::SchedulerConfig cfg;
  cfg.kv_block_tokens = 16;
  cfg.kv_blocks = 300;  // 4,800 tokens: far less than the request's 20,100
  auto serve_one = [&](int64_t window) {
    serve::SchedulerConfig c = cfg;
    c.sliding_window = window;
    std::vector<serve::Scheduler> s;
    s.emplace_back(c, 0);
    serve::Request r;
    r.id = 0;
    r.input_tokens = 20000;
    r.output_tokens = 100;
    testing::ListSource src({r});
    serve::LinearStepRunner runner(1e-3, 1e-6, 1e-5);
    auto router = serve::make_router("round_robin");
    serve::MetricsCollector metrics(serve::MetricsConfig{});
    const serve::EventLoopResult res = serve::run_event_loop(src, *router, s, runner, metrics);
    return metrics.finish(res.end_s);
  };
  EXPECT_EQ(serve_one(0).rejected, 1) << "20,100 tokens of KV cannot fit 4,800";
  EXPECT_EQ(serve_one(kWindow).completed, 1);
  // The blocks a windowed sequence holds: its window plus one block.
  serve::SchedulerConfig c = cfg;
  c.sliding_window = kWindow;
  serve::Scheduler s(c, 0);
  serve::Request r;
  r.id = 7;
  r.input_tokens = 20000;
  r.output_tokens = 100;
  ASSERT_FALSE(s.add(r, 0));
  serve::StepEvents ev;
  double t = 0;
  int64_t peak = 0;
  while (!s.idle()) {
    auto it = s.schedule(t);
    ASSERT_TRUE(it);
    t += 1e-3;
    s.complete(*it, t, ev);
    peak = std::max(peak, s.kv_used_blocks());
  }
  EXPECT_LE(peak, (kWindow + 16) / 16 + 1);
  EXPECT_GE(peak, kWindow / 16);
}

}  // namespace
}  // namespace parasol::sim

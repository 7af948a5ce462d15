// Network mode keeps up to pp micro-batches in flight per replica, as the analytic mode does: the two modes agree
// when links are not shared. A lone pipelined replica with no cross traffic serves the same small Poisson workload in
// both modes: the step times agree (netmode_agreement_test.cpp) and the scheduling decisions are the same (next
// micro-batch when stage 0 is free, completion in order), so TTFT, TPOT and E2E must agree within 1 % (2 % for the
// p99s, which are one or two requests) and the iteration counts must be equal (micro-batches run one after another,
// as network mode once did, made fewer, larger iterations: docs/network.md). One SimGrid engine per process: the
// analytic run happens in a forked child that sends its figures back through a pipe.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <string>

#include "core/plan/placement.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

constexpr size_t kFigures = 11;  // iterations, completed, TTFT mean/p50/p99, TPOT mean/p50/p99, E2E mean/p50/p99

std::array<double, kFigures> serve_once(const plan::Plan& p, const spec::Cluster& c, spec::Fidelity fidelity,
                                        int64_t requests, double rate_per_s) {
  serve::WorkloadSpec w;
  w.arrival.rate_per_s = rate_per_s;
  w.input.kind = serve::LengthKind::kLognormal;
  w.input.mean = 600;
  w.input.cv = 1.0;
  w.input.min = 16;
  w.input.max = 4096;
  w.output.kind = serve::LengthKind::kLognormal;
  w.output.mean = 60;
  w.output.cv = 1.0;
  w.output.min = 2;
  w.output.max = 512;
  w.max_requests = requests;
  auto src = serve::make_source(w, 42);
  serve::MetricsConfig mc;
  serve::MetricsCollector metrics(mc);
  ServeOptions o;
  o.fidelity = fidelity;
  const ServeResult res = simulate_serving(p, c, *src, metrics, o);
  const serve::Summary s = metrics.finish(res.end_s);
  return {static_cast<double>(res.iterations), static_cast<double>(s.completed), s.ttft_s.mean, s.ttft_s.p50,
          s.ttft_s.p99, s.tpot_s.mean, s.tpot_s.p50, s.tpot_s.p99, s.e2e_s.mean, s.e2e_s.p50, s.e2e_s.p99};
}

void check_pipeline(int tp, int pp, int64_t requests, double rate_per_s) {
  const std::string dir = PARASOL_DATA_DIR;
  const spec::Model m = spec::load_model_file(dir + "/scenarios/models/llama-3.1-8b.yaml");
  const spec::Cluster c = spec::load_cluster_file(dir + "/topologies/clusters/dgx-h100.yaml");
  plan::ParallelConfig pc;
  pc.tp = tp;
  pc.pp = pp;
  auto made = plan::make_plan(m, c, "", pc);
  ASSERT_TRUE(made.feasibility.ok);
  const plan::Plan p = made.plan;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // analytic run in its own process (one engine per process)
    close(fds[0]);
    const auto a = serve_once(p, c, spec::Fidelity::kAnalytic, requests, rate_per_s);
    const ssize_t n = write(fds[1], a.data(), sizeof(a));
    _exit(n == static_cast<ssize_t>(sizeof(a)) ? 0 : 1);
  }
  close(fds[1]);
  std::array<double, kFigures> want{};
  size_t got_bytes = 0;
  while (got_bytes < sizeof(want)) {
    const ssize_t n = read(fds[0], reinterpret_cast<char*>(want.data()) + got_bytes, sizeof(want) - got_bytes);
    if (n <= 0) break;
    got_bytes += static_cast<size_t>(n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(got_bytes, sizeof(want));
  const auto got = serve_once(p, c, spec::Fidelity::kNetwork, requests, rate_per_s);
  const char* names[kFigures] = {"iterations", "completed", "TTFT mean", "TTFT p50", "TTFT p99", "TPOT mean",
                                 "TPOT p50",   "TPOT p99",  "E2E mean",  "E2E p50",  "E2E p99"};
  EXPECT_EQ(got[1], static_cast<double>(requests));
  EXPECT_EQ(got[1], want[1]);
  EXPECT_EQ(got[0], want[0]) << "iterations: the two modes made different scheduling decisions";
  for (size_t i = 2; i < kFigures; ++i) {
    // A p99 over 120 requests is one or two requests: 2 % there, 1 % for means and medians.
    const double tol = (i == 4 || i == 7 || i == 10) ? 0.02 : 0.01;
    EXPECT_NEAR(got[i], want[i], tol * want[i]) << names[i] << " TP" << tp << " x PP" << pp;
    std::printf("TP%d x PP%d %s: analytic %.6g s, network %.6g s (%+.3f %%)\n", tp, pp, names[i], want[i], got[i],
                100 * (got[i] / want[i] - 1));
  }
}

TEST(NetmodePpOverlap, LonePp2ReplicaServesAsInAnalyticMode) { check_pipeline(2, 2, 120, 12.0); }
TEST(NetmodePpOverlap, LonePp4ReplicaServesAsInAnalyticMode) { check_pipeline(2, 4, 120, 12.0); }

}  // namespace
}  // namespace parasol::sim

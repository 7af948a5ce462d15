#include "sim/plan_verify.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/common/error.hpp"
#include "core/serve/metrics.hpp"
#include "core/serve/router.hpp"
#include "core/serve/scheduler.hpp"
#include "sim/plan_choice.hpp"
#include "sim/serving.hpp"

namespace parasol::sim {
namespace {

// What a child reports: ok, requests, duration, SLO fraction, goodput, TTFT p99, TPOT p99.
constexpr size_t kFigures = 7;
using Figures = std::array<double, kFigures>;

Figures simulate(const spec::Scenario& s, const plan::SearchInput& in, const plan::Candidate& c, int64_t requests,
                 uint64_t seed) {
  const plan::MadePlan made = plan::candidate_plan(in, c);
  if (!made.feasibility.ok) throw RuntimeFailure("the layout " + c.label() + " cannot be made");
  std::string note;
  std::optional<serve::WorkloadSpec> ws = scenario_workload(s, note);
  if (!ws) throw ConfigError(s.file, 0, 0, "workload", "a workload section to verify plans on", "none");
  if (ws->max_requests < 0 || ws->max_requests > requests) ws->max_requests = requests;
  auto source = serve::make_source(*ws, seed);
  serve::MetricsConfig mc;
  if (s.slo.ttft_p99_s) mc.slo.ttft_s = *s.slo.ttft_p99_s;
  if (s.slo.tpot_p99_s) mc.slo.tpot_s = *s.slo.tpot_p99_s;
  int replicas = 0;
  for (const auto& p : made.plan.pools) replicas += static_cast<int>(p.placement.size());
  mc.replicas = replicas;
  mc.gpus_per_replica = made.plan.pools[0].config.instance_size();
  serve::MetricsCollector metrics(mc);
  const ServeOptions o = serve_options(s, made.plan, seed);
  const ServeResult r = simulate_serving(made.plan, s.cluster, *source, metrics, o);
  const serve::Summary sum = metrics.finish(r.end_s);
  return {1.0,
          static_cast<double>(sum.arrived),
          sum.duration_s,
          sum.goodput_fraction,
          sum.goodput_rps,
          sum.ttft_s.p99,
          sum.tpot_s.p99};
}

// Runs `simulate` in a child; its figures come back through a pipe, an error as text.
Figures simulate_in_child(const spec::Scenario& s, const plan::SearchInput& in, const plan::Candidate& c,
                          int64_t requests, uint64_t seed, std::string& error) {
  int fds[2];
  if (pipe(fds) != 0) throw RuntimeFailure(std::string("verify: pipe failed: ") + std::strerror(errno));
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) throw RuntimeFailure(std::string("verify: fork failed: ") + std::strerror(errno));
  if (child == 0) {
    close(fds[0]);
    std::string msg;
    Figures f{};
    try {
      f = simulate(s, in, c, requests, seed);
    } catch (const std::exception& e) {
      msg = e.what();
    }
    const auto write_all = [&](const void* p, size_t n) {
      const char* b = static_cast<const char*>(p);
      while (n > 0) {
        const ssize_t w = write(fds[1], b, n);
        if (w <= 0) _exit(3);
        b += w;
        n -= static_cast<size_t>(w);
      }
    };
    write_all(f.data(), sizeof f);
    write_all(msg.data(), msg.size());
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string bytes;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) bytes.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  Figures f{};
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || bytes.size() < sizeof f) {
    error = "the simulation process ended abnormally";
    return f;
  }
  std::memcpy(f.data(), bytes.data(), sizeof f);
  error = bytes.substr(sizeof f);
  return f;
}

}  // namespace

double estimate_error(double estimate, double simulated) {
  return simulated != 0 ? (estimate - simulated) / simulated : 0.0;
}

Verification verify_candidates(const spec::Scenario& s, const plan::SearchInput& in, const plan::SearchResult& r, int k,
                               int64_t requests, uint64_t seed) {
  Verification out;
  out.requests = requests;
  const size_t n = std::min(r.ranked.size(), static_cast<size_t>(std::max(k, 0)));
  for (size_t i = 0; i < n; ++i) {
    Verified v;
    v.estimator_rank = static_cast<int>(i + 1);
    v.candidate = r.ranked[i];
    const Figures f = simulate_in_child(s, in, v.candidate, requests, seed, v.error);
    v.ok = v.error.empty() && f[0] == 1.0;
    if (v.ok) {
      v.requests = static_cast<int64_t>(f[1]);
      v.duration_s = f[2];
      v.slo_fraction = f[3];
      v.goodput_rps = f[4];
      v.goodput_rps_per_gpu = v.candidate.gpus > 0 ? v.goodput_rps / v.candidate.gpus : 0;
      v.ttft_p99_s = f[5];
      v.tpot_p99_s = f[6];
      v.meets_slo = (!s.slo.ttft_p99_s || v.ttft_p99_s <= *s.slo.ttft_p99_s) &&
                    (!s.slo.tpot_p99_s || v.tpot_p99_s <= *s.slo.tpot_p99_s);
    }
    out.verified.push_back(std::move(v));
  }
  // Below saturation every candidate that meets the SLOs serves the offered load: goodputs within kTie of the best
  // are the same figure up to how the last requests drain, and the estimator's rank (its capacity) orders them.
  constexpr double kTie = 0.02;
  double best = 0;
  for (const Verified& v : out.verified)
    if (v.ok && v.meets_slo) best = std::max(best, v.goodput_rps_per_gpu);
  auto tier = [&](const Verified& v) {
    if (!v.ok) return 3;
    if (!v.meets_slo) return 2;
    return v.goodput_rps_per_gpu >= (1 - kTie) * best ? 0 : 1;
  };
  std::stable_sort(out.verified.begin(), out.verified.end(), [&](const Verified& a, const Verified& b) {
    if (tier(a) != tier(b)) return tier(a) < tier(b);
    if (tier(a) != 0 && a.goodput_rps_per_gpu != b.goodput_rps_per_gpu)
      return a.goodput_rps_per_gpu > b.goodput_rps_per_gpu;
    return a.estimator_rank < b.estimator_rank;
  });
  return out;
}

}  // namespace parasol::sim

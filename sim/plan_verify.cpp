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

Figures simulate(const spec::Scenario& s, const plan::Plan& plan, int64_t requests, uint64_t seed, double rate_scale,
                 bool replace_cap) {
  std::string note;
  std::optional<serve::WorkloadSpec> ws = scenario_workload(s, note);
  if (!ws) throw ConfigError(s.file, 0, 0, "workload", "a workload section to verify plans on", "none");
  if (replace_cap || ws->max_requests < 0 || ws->max_requests > requests) ws->max_requests = requests;
  ws->rate_scale *= rate_scale;
  auto source = serve::make_source(*ws, seed);
  serve::MetricsConfig mc;
  if (s.slo.ttft_p99_s) mc.slo.ttft_s = *s.slo.ttft_p99_s;
  if (s.slo.tpot_p99_s) mc.slo.tpot_s = *s.slo.tpot_p99_s;
  int replicas = 0;
  for (const auto& p : plan.pools) replicas += static_cast<int>(p.placement.size());
  mc.replicas = replicas;
  mc.gpus_per_replica = plan.pools[0].config.instance_size();
  serve::MetricsCollector metrics(mc);
  const ServeOptions o = serve_options(s, plan, seed);
  const ServeResult r = simulate_serving(plan, s.cluster, *source, metrics, o);
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
Figures simulate_in_child(const spec::Scenario& s, const plan::Plan& plan, int64_t requests, uint64_t seed,
                          double rate_scale, bool replace_cap, std::string& error) {
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
      f = simulate(s, plan, requests, seed, rate_scale, replace_cap);
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

// The candidate with `dp_p` / `dp_d` more (or fewer) instances in its pools (colocated: dp_p applies).
search::Candidate resized(const search::Candidate& c, int dp_p, int dp_d) {
  search::Candidate x = c;
  if (!x.disaggregated) {
    x.mixed.config.dp += dp_p;
    x.gpus = x.mixed.config.total_gpus();
  } else {
    x.prefill.config.dp += dp_p;
    x.decode.config.dp += dp_d;
    x.gpus = x.prefill.config.total_gpus() + x.decode.config.total_gpus();
  }
  return x;
}

bool sizes_ok(const search::Candidate& c, int budget) {
  if (!c.disaggregated) return c.mixed.config.dp >= 1 && c.gpus <= budget;
  return c.prefill.config.dp >= 1 && c.decode.config.dp >= 1 && c.gpus <= budget;
}

}  // namespace

Simulated simulate_isolated(const spec::Scenario& s, const plan::Plan& plan, int64_t requests, uint64_t seed,
                            double rate_scale, bool replace_cap) {
  Simulated v;
  const Figures f = simulate_in_child(s, plan, requests, seed, rate_scale, replace_cap, v.error);
  v.ok = v.error.empty() && f[0] == 1.0;
  if (!v.ok) return v;
  v.requests = static_cast<int64_t>(f[1]);
  v.duration_s = f[2];
  v.slo_fraction = f[3];
  v.goodput_rps = f[4];
  v.ttft_p99_s = f[5];
  v.tpot_p99_s = f[6];
  v.meets_slo = (!s.slo.ttft_p99_s || v.ttft_p99_s <= *s.slo.ttft_p99_s) &&
                (!s.slo.tpot_p99_s || v.tpot_p99_s <= *s.slo.tpot_p99_s);
  return v;
}

double estimate_error(double estimate, double simulated) {
  return simulated != 0 ? (estimate - simulated) / simulated : 0.0;
}

Verification verify_candidates(const spec::Scenario& s, const search::SearchInput& in, const search::SearchResult& r,
                               int k, int64_t requests, uint64_t seed) {
  Verification out;
  out.requests = requests;
  out.objective = in.space.objective;
  const bool fewest = out.objective == spec::Objective::kFewestGpus;
  auto run = [&](const search::Candidate& c, Verified& v) {
    const plan::MadePlan made = search::candidate_plan(in, c);
    ++v.simulations;
    if (!made.feasibility.ok) {
      static_cast<Simulated&>(v) = Simulated{};
      v.error = "the layout " + c.label() + " cannot be made";
      return;
    }
    static_cast<Simulated&>(v) = simulate_isolated(s, made.plan, requests, seed);
    v.candidate = c;
  };
  // A fewest-GPUs candidate's sizing in simulation (plan_verify.hpp); every trial must fit the budget.
  constexpr int kMaxSimulations = 16;
  auto resize_in_simulation = [&](Verified& v) {
    const search::Candidate base = v.candidate;
    const int dp_p = base.disaggregated ? base.prefill.config.dp : base.mixed.config.dp;
    const int dp_d = base.disaggregated ? base.decode.config.dp : 0;
    // Both pools scaled by f (instances rounded up, at least one).
    auto scaled = [&](double f) {
      auto n = [&](int dp) { return std::max(1, static_cast<int>(std::ceil(dp * f - 1e-9))); };
      return resized(base, n(dp_p) - dp_p, base.disaggregated ? n(dp_d) - dp_d : 0);
    };
    auto same = [](const search::Candidate& x, const search::Candidate& y) { return x.label() == y.label(); };
    std::optional<Verified> met, missed;  // the smallest sizing that met the SLOs, the largest that missed them
    auto trial = [&](const search::Candidate& c) -> const Verified* {
      if (!sizes_ok(c, r.gpu_budget) || v.simulations >= kMaxSimulations) return nullptr;
      Verified t = v;
      run(c, t);
      v.simulations = t.simulations;
      if (!t.ok) return nullptr;
      std::optional<Verified>& slot = t.meets_slo ? met : missed;
      slot = std::move(t);
      return &*slot;
    };
    double f_met = 0, f_missed = 0;
    (v.meets_slo ? met : missed) = v;
    (v.meets_slo ? f_met : f_missed) = 1;
    // Bracket: grow by 1.5x while it misses, shrink by 1.5x while it meets (a factor that rounds to the sizing
    // already met is passed over, down to one instance per pool).
    const search::Candidate floor = scaled(0);
    for (double f = 1;;) {
      const bool grow = !met;
      const double from = f;
      f = grow ? f * 1.5 : f / 1.5;
      search::Candidate c = scaled(f);
      if (grow && !sizes_ok(c, r.gpu_budget)) {
        // The largest factor below that fits the budget, tried once.
        double ok = from, bad = f;
        for (int i = 0; i < 40; ++i) {
          const double mid = 0.5 * (ok + bad);
          (sizes_ok(scaled(mid), r.gpu_budget) ? ok : bad) = mid;
        }
        f = ok;
        c = scaled(f);
        if (same(c, missed->candidate)) break;
      }
      if (!grow && same(c, met->candidate)) {
        if (same(c, floor)) break;
        f_met = f;
        continue;
      }
      const Verified* t = trial(c);
      if (!t) break;
      (t->meets_slo ? f_met : f_missed) = f;
      if (met && missed) break;
    }
    // Bisect the factor between the two: a factor that rounds to a sizing already simulated moves that end without
    // a simulation; stops when the factors meet (no sizing lies between the two) or the simulations run out.
    while (met && missed && f_met > f_missed * (1 + 1e-6) && v.simulations < kMaxSimulations) {
      const double f = std::sqrt(f_met * f_missed);
      const search::Candidate c = scaled(f);
      if (same(c, met->candidate)) {
        f_met = f;
        continue;
      }
      if (same(c, missed->candidate)) {
        f_missed = f;
        continue;
      }
      const Verified* t = trial(c);
      if (!t) break;
      (t->meets_slo ? f_met : f_missed) = f;
    }
    if (!met) {
      v = missed ? *missed : v;
      return;
    }
    // Trim each pool of a disaggregated candidate on its own while the SLOs still hold.
    for (const auto& [dp, dd] : base.disaggregated ? std::vector<std::pair<int, int>>{{-1, 0}, {0, -1}}
                                                   : std::vector<std::pair<int, int>>{})
      while (v.simulations < kMaxSimulations) {
        const search::Candidate keep = met->candidate;
        const Verified* t = trial(resized(keep, dp, dd));
        if (!t || !t->meets_slo) break;
      }
    const int sims = v.simulations;
    v = *met;
    v.simulations = sims;
    if (missed && missed->candidate.gpus < v.candidate.gpus) {
      v.smaller_candidate = missed->candidate;
      v.smaller = *missed;
    }
  };
  const size_t n = std::min(r.ranked.size(), static_cast<size_t>(std::max(k, 0)));
  for (size_t i = 0; i < n; ++i) {
    Verified v;
    v.estimator_rank = static_cast<int>(i + 1);
    v.candidate = r.ranked[i];
    v.estimated_gpus = v.candidate.gpus;
    run(r.ranked[i], v);
    if (fewest && v.ok) resize_in_simulation(v);
    if (v.ok) v.goodput_rps_per_gpu = v.candidate.gpus > 0 ? v.goodput_rps / v.candidate.gpus : 0;
    out.verified.push_back(std::move(v));
  }
  if (fewest) {
    std::stable_sort(out.verified.begin(), out.verified.end(), [](const Verified& a, const Verified& b) {
      if (a.ok != b.ok) return a.ok;
      if (a.meets_slo != b.meets_slo) return a.meets_slo;
      if (a.candidate.gpus != b.candidate.gpus) return a.candidate.gpus < b.candidate.gpus;
      if (a.goodput_rps_per_gpu != b.goodput_rps_per_gpu) return a.goodput_rps_per_gpu > b.goodput_rps_per_gpu;
      return a.estimator_rank < b.estimator_rank;
    });
    return out;
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

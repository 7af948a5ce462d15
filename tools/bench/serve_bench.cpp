// Throughput of core/serve on one core: the scheduler's schedule/complete hot path, the serving loop end to
// end (synthetic Poisson load over several replicas, closed-form step times), and trace reading.
//   build/parasol_bench --benchmark_filter=Serve
#include <benchmark/benchmark.h>

#include <filesystem>

#include "core/serve/event_loop.hpp"

namespace parasol::serve {
namespace {

// Steady state: `running` sequences decoding (each finishes after 256 tokens and is replaced), so every iteration
// schedules and completes `running` sequences. Items = sequence-iterations.
void BM_ServeSchedulerDecodeIteration(benchmark::State& state) {
  const int64_t running = state.range(0);
  SchedulerConfig c;
  c.max_batch_seqs = running;
  c.max_batch_tokens = 1 << 20;
  c.kv_blocks = running * 128;
  Scheduler s(c, 0);
  int64_t next_id = 0;
  double now = 0;
  auto add = [&] {
    Request r;
    r.id = next_id++;
    r.arrival_s = now;
    r.input_tokens = 64 + (r.id * 37) % 512;
    r.output_tokens = 256;
    s.add(std::move(r), now);
  };
  for (int64_t i = 0; i < running; ++i) add();
  StepEvents ev;
  for (auto _ : state) {
    auto it = s.schedule(now);
    now += 0.01;
    ev.clear();
    s.complete(*it, now, ev);
    for (size_t k = 0; k < ev.finished.size(); ++k) add();
    benchmark::DoNotOptimize(ev.output_tokens);
  }
  state.SetItemsProcessed(state.iterations() * running);
}
BENCHMARK(BM_ServeSchedulerDecodeIteration)->Arg(16)->Arg(256)->Arg(1024);

// End to end: N Poisson requests (lognormal lengths) over R replicas at ~80% load, least-outstanding-tokens routing.
void BM_ServeEventLoop(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int replicas = int(state.range(1));
  int64_t iterations = 0;
  for (auto _ : state) {
    WorkloadSpec w;
    w.arrival.rate_per_s = 4.0 * replicas;
    w.input.kind = LengthKind::kLognormal;
    w.input.mean = 1000;
    w.input.cv = 1.0;
    w.input.max = 16000;
    w.output.kind = LengthKind::kLognormal;
    w.output.mean = 200;
    w.output.cv = 1.0;
    w.output.max = 4000;
    w.max_requests = n;
    auto src = make_source(w, 1);
    SchedulerConfig c;
    c.kv_blocks = 8000;
    std::vector<Scheduler> scheds;
    for (int r = 0; r < replicas; ++r) scheds.emplace_back(c, r);
    LeastOutstandingTokensRouter router;
    LinearStepRunner runner(0.01, 2e-5, 1e-4);
    MetricsConfig mc;
    mc.replicas = replicas;
    MetricsCollector metrics(mc);
    EventLoopResult res = run_event_loop(*src, router, scheds, runner, metrics);
    Summary s = metrics.finish(res.end_s);
    iterations += res.iterations;
    benchmark::DoNotOptimize(s.completed);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["iterations_per_s"] = benchmark::Counter(double(iterations), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ServeEventLoop)->Args({10000, 8})->Args({100000, 8})->Args({100000, 64})->Unit(benchmark::kMillisecond);
// Fleet scale: a million requests over 512 replicas (one iteration; ~10 s).
BENCHMARK(BM_ServeEventLoop)->Args({1000000, 512})->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_ServeReadAzureConv(benchmark::State& state) {
  const std::string path = PARASOL_DATA_DIR "/../shared/traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv";
  if (!std::filesystem::exists(path)) {
    state.SkipWithError("trace absent");
    return;
  }
  int64_t n = 0;
  for (auto _ : state) {
    auto src = open_trace(trace_spec(path, TraceFormat::kAzure));
    while (auto r = src->next()) ++n;
  }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_ServeReadAzureConv)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace parasol::serve

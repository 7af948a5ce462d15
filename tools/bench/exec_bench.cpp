// Executor benchmarks (cpu backend). Figures go in docs/executor.md.
//   BM_ExecGemm/M/N/K:        backend gemm (fp32 weights), GFLOP/s as a counter; BM_ExecGemmBf16Weights converts the
//                             weights on the fly (the bf16-storage path).
//   BM_BlasPeak:              this machine's measured BLAS peak: a square 1024^3 sgemm through the same call; the
//                             ratio gemm / peak is what docs/executor.md quotes.
//   BM_ExecDecode100M/batch:  greedy decode of test-llama-100m (~100M parameters, fp32) on one cpu rank, tokens/s.
// Run: build/parasol_bench --benchmark_filter='Exec|BlasPeak'
#include <benchmark/benchmark.h>

#include <random>

#include "exec/backend.hpp"
#include "exec/generate.hpp"
#include "exec/test_models.hpp"

namespace parasol::exec {
namespace {

void gemm_case(benchmark::State& state, int64_t M, int64_t N, int64_t K, ElemType wt) {
  auto be = make_cpu_backend({0, 0});
  std::mt19937_64 g(1);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> x(M * K), w(N * K);
  for (auto& v : x) v = d(g);
  for (auto& v : w) v = d(g);
  OwnedTensor X(*be, ElemType::kF32, {M, K}), W(*be, wt, {N, K}), Y(*be, ElemType::kF32, {M, N});
  upload_f32(*be, x, *X);
  upload_f32(*be, w, *W);
  for (auto _ : state) {
    be->gemm(*X, *W, *Y);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * M * N * K * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_ExecGemm(benchmark::State& s) { gemm_case(s, s.range(0), s.range(1), s.range(2), ElemType::kF32); }
BENCHMARK(BM_ExecGemm)
    ->Args({1, 768, 768})
    ->Args({16, 768, 768})
    ->Args({128, 2560, 768})
    ->Args({512, 768, 2560})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
void BM_ExecGemmBf16Weights(benchmark::State& s) { gemm_case(s, s.range(0), s.range(1), s.range(2), ElemType::kBf16); }
BENCHMARK(BM_ExecGemmBf16Weights)->Args({16, 768, 768})->Args({128, 2560, 768})->Unit(benchmark::kMicrosecond)->UseRealTime();
void BM_BlasPeak(benchmark::State& s) { gemm_case(s, 1024, 1024, 1024, ElemType::kF32); }
BENCHMARK(BM_BlasPeak)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ExecDecode100M(benchmark::State& state) {
  spec::Model m = test_model("test-llama-100m");
  SyntheticWeights weights(1);
  auto be = make_cpu_backend({0, 0});
  auto world = make_local_world(1, 600);
  RunnerOptions opt;
  opt.kv_blocks = 256;
  ModelRunner runner(m, RankLayout::make(m, plan::ParallelConfig{}, {}, 0), *be, *world[0], weights, opt);
  const int batch = static_cast<int>(state.range(0));
  StepRequest prefill;
  for (int i = 0; i < batch; ++i) prefill.seqs.push_back({i, std::vector<int32_t>(32, 7 + i), 0, 0, true});
  StepResult r = runner.step(prefill);
  int64_t ctx = 32, tokens = 0;
  for (auto _ : state) {
    StepRequest dec;
    for (int i = 0; i < batch; ++i) dec.seqs.push_back({i, {r.next_tokens[i]}, ctx, 0, true});
    r = runner.step(dec);
    ++ctx;
    tokens += batch;
    if (ctx > 32 + 200) {  // keep the context bounded: restart the sequences
      state.PauseTiming();
      for (int i = 0; i < batch; ++i) runner.release(i);
      r = runner.step(prefill);
      ctx = 32;
      state.ResumeTiming();
    }
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ExecDecode100M)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

}  // namespace
}  // namespace parasol::exec

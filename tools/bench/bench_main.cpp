// The one main() of parasol_bench: every tools/bench/*.cpp only registers benchmarks (BENCHMARK(...)); do not add
// another BENCHMARK_MAIN.
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();

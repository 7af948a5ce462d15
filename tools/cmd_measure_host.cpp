// `parasol measure-host`: a device file (`schema: parasol.gpu/1`, vendor other) describing this CPU as the cpu backend
// uses it, so that the cost model can be fitted to and checked against the executor's own profiles without a GPU
// (`parasol calibrate --profile ... --device FILE`, `parasol validate`). What it measures:
//   fp32 peak      the cpu backend's GEMM path (Backend::gemm: BLAS sgemm when the build found one) on square
//                  matrices, timed with the backend's events as the profiler times ops; the best size's median;
//   bandwidth      a streaming triad a = b + s c over arrays several times the last-level cache, on one thread (the
//                  cpu backend's element-wise ops run on the rank's thread); STREAM's convention of 3 x 8 bytes per
//                  element; memcpy likewise (the local communicator copies through host memory: scaleup_bw);
//   fixed costs    in comments: an empty op between two timing events, and a minimal
//                  op of each family (the families' own sections are left to `parasol calibrate`, which owns
//                  their keys and fits them from the cost model's defaults).
// Every timing is the median of repetitions after a warm-up. Capacities come from the OS (/proc/meminfo, sysconf);
// power cannot be read here, so tdp/idle_power are placeholders and say so. Every value carries a comment naming
// this command, the date and the host. The file is loaded back (spec::load_gpu) before it is written.
// Thread behaviour: single-threaded command (BLAS may use its own threads: OPENBLAS_NUM_THREADS).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "core/common/error.hpp"
#include "core/common/yaml_node.hpp"
#include "core/spec/gpu.hpp"
#include "exec/backend.hpp"
#include "exec/tensor.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {
namespace {

struct MeasureOptions {
  std::string name = "cpu-host";
  int reps = 7;
  double min_footprint_bytes = 256.0 * (1 << 20);  // streaming arrays: at least this, and 4x the last-level cache
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median of `reps` timings of `fn` (seconds) after `warmup` untimed runs.
double median_time_s(int warmup, int reps, const std::function<double()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(fn());
  return median(t);
}

// Seconds of one backend op between two timing events, as the profiler measures it (exec/model_runner.cpp).
double timed_op_s(exec::Backend& be, const std::function<void()>& op) {
  auto a = be.create_event(), b = be.create_event();
  be.record(*a);
  op();
  be.record(*b);
  return be.elapsed_s(*a, *b);
}

double wall_s(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct HostFacts {
  std::string host, date;
  int hw_threads = 0;
  std::string blas_threads;  // OPENBLAS_NUM_THREADS as set, or "" (the BLAS default)
  double mem_bytes = 0, l2_bytes = 0, llc_bytes = 0;
};

HostFacts host_facts() {
  HostFacts f;
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) == 0) f.host = buf;
  if (f.host.empty()) f.host = "unknown-host";
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d", &tm);
  f.date = date;
  f.hw_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (const char* t = std::getenv("OPENBLAS_NUM_THREADS")) f.blas_threads = t;
  std::ifstream mi("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (mi >> key >> kib) {
    if (key == "MemTotal:") {
      f.mem_bytes = kib * 1024.0;
      break;
    }
    mi.ignore(256, '\n');
  }
  const long l2 = ::sysconf(_SC_LEVEL2_CACHE_SIZE), l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  f.l2_bytes = l2 > 0 ? static_cast<double>(l2) : 0;
  f.llc_bytes = static_cast<double>(std::max({l2, l3, 0L}));
  return f;
}

struct HostMeasurements {
  double fp32_flops = 0;
  int64_t gemm_size = 0;
  double triad_Bps = 0, copy_Bps = 0, stream_bytes = 0;
  double event_s = 0, gemm_fixed_s = 0, elementwise_fixed_s = 0, attention_fixed_s = 0;
  int blas_threads = 1;
};

HostMeasurements measure(const MeasureOptions& o, const HostFacts& facts) {
  HostMeasurements m;
  auto be = exec::make_backend("cpu", {});
  using exec::ElemType;
  using exec::OwnedTensor;
  // Peak: the best median over a few square sizes (small ones lose to packing, the largest is the usual winner).
  for (int64_t n : {256, 512, 1024}) {
    OwnedTensor x(*be, ElemType::kF32, {n, n}), w(*be, ElemType::kF32, {n, n}), y(*be, ElemType::kF32, {n, n});
    exec::upload_f32(*be, std::vector<float>(static_cast<size_t>(n * n), 0.5f), *x);
    exec::upload_f32(*be, std::vector<float>(static_cast<size_t>(n * n), 0.25f), *w);
    const double t = median_time_s(2, o.reps, [&] { return timed_op_s(*be, [&] { be->gemm(*x, *w, *y); }); });
    const double flops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / t;
    if (flops > m.fp32_flops) m.fp32_flops = flops, m.gemm_size = n;
  }
  m.blas_threads = facts.blas_threads.empty() ? facts.hw_threads : std::max(1, std::atoi(facts.blas_threads.c_str()));

  // Streaming bandwidth on one thread: three arrays together at least 4x the last-level cache.
  const double footprint = std::max(o.min_footprint_bytes, 4.0 * facts.llc_bytes);
  const size_t n = static_cast<size_t>(footprint / (3 * sizeof(double)));
  std::vector<double> a(n, 0.0), b(n, 1.0), c(n, 2.0);
  const double s = 0.5;
  const double triad_s = median_time_s(1, o.reps, [&] {
    return wall_s([&] {
      double* __restrict pa = a.data();
      const double* __restrict pb = b.data();
      const double* __restrict pc = c.data();
      for (size_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
    });
  });
  m.stream_bytes = 3.0 * static_cast<double>(n) * sizeof(double);
  m.triad_Bps = m.stream_bytes / triad_s;
  const double copy_s =
      median_time_s(1, o.reps, [&] { return wall_s([&] { std::memcpy(a.data(), b.data(), n * sizeof(double)); }); });
  m.copy_Bps = 2.0 * static_cast<double>(n) * sizeof(double) / copy_s;
  if (a[n / 2] < 0) std::cerr << "";  // keeps the stores observable

  // Fixed costs: minimal ops of each family, many repetitions (each is sub-microsecond to a few microseconds).
  const int fixed_reps = 201;
  m.event_s = median_time_s(20, fixed_reps, [&] { return timed_op_s(*be, [] {}); });
  {
    OwnedTensor x(*be, ElemType::kF32, {1, 1}), w(*be, ElemType::kF32, {1, 1}), y(*be, ElemType::kF32, {1, 1});
    exec::upload_f32(*be, {1.0f}, *x);
    exec::upload_f32(*be, {1.0f}, *w);
    m.gemm_fixed_s = median_time_s(20, fixed_reps, [&] { return timed_op_s(*be, [&] { be->gemm(*x, *w, *y); }); });
  }
  {
    OwnedTensor x(*be, ElemType::kF32, {1, 8}), w(*be, ElemType::kF32, {8}), y(*be, ElemType::kF32, {1, 8});
    exec::upload_f32(*be, std::vector<float>(8, 1.0f), *x);
    exec::upload_f32(*be, std::vector<float>(8, 1.0f), *w);
    m.elementwise_fixed_s =
        median_time_s(20, fixed_reps, [&] { return timed_op_s(*be, [&] { be->rms_norm(*x, *w, 1e-5f, *y); }); });
  }
  {
    const int64_t d = 16, slots = 16;
    OwnedTensor q(*be, ElemType::kF32, {1, 1, d}), k(*be, ElemType::kF32, {slots, 1, d}),
        v(*be, ElemType::kF32, {slots, 1, d}), out(*be, ElemType::kF32, {1, 1, d});
    exec::upload_f32(*be, std::vector<float>(static_cast<size_t>(d), 0.1f), *q);
    exec::upload_f32(*be, std::vector<float>(static_cast<size_t>(slots * d), 0.1f), *k);
    exec::upload_f32(*be, std::vector<float>(static_cast<size_t>(slots * d), 0.1f), *v);
    exec::SeqBatch seqs;
    seqs.q_lens = {1};
    seqs.ctx_lens = {1};
    seqs.block_tables = {{0}};
    seqs.block_tokens = slots;
    m.attention_fixed_s = median_time_s(20, fixed_reps, [&] {
      return timed_op_s(*be, [&] { be->attention(*q, *k, *v, seqs, exec::HeadMap{}, 0.25f, *out); });
    });
  }
  return m;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// "123.4 GFLOP/s", "12.34 GB/s", "0.2134 us", "23.45 GiB": four significant digits in a fixed unit each.
std::string flops_text(double v) { return "\"" + fmt("%.4g", v / 1e9) + " GFLOP/s\""; }
std::string bw_text(double v) { return "\"" + fmt("%.4g", v / 1e9) + " GB/s\""; }
std::string us_text(double v) { return "\"" + fmt("%.4g", v * 1e6) + " us\""; }
std::string gib_text(double v) { return "\"" + fmt("%.4g", v / (1024.0 * 1024 * 1024)) + " GiB\""; }
std::string mib_text(double v) { return "\"" + fmt("%.4g", v / (1024.0 * 1024)) + " MiB\""; }

std::string device_yaml(const MeasureOptions& o, const HostFacts& f, const HostMeasurements& m) {
  const std::string by = "measured by parasol measure-host on " + f.date + ", host " + f.host;
  const std::string read = "read by parasol measure-host on " + f.date + ", host " + f.host;
  const std::string reps = "median of " + std::to_string(o.reps);
  const std::string threads = f.blas_threads.empty() ? "the BLAS default threads (" + std::to_string(f.hw_threads) +
                                                          " hardware threads)"
                                                    : "OPENBLAS_NUM_THREADS=" + f.blas_threads;
  std::ostringstream y;
  y << "# This CPU as parasol's cpu backend uses it (GEMMs on " << threads << ", element-wise ops on one thread).\n"
    << "# Written by `parasol measure-host` on " << f.date << ", host " << f.host << ". The cost-model sections are "
    << "starting points:\n"
    << "# `parasol calibrate --profile ops.csv --device THIS_FILE --write` fits them to an executor profile.\n"
    << "schema: parasol.gpu/1\n"
    << "name: " << o.name << "\n"
    << "vendor: other\n"
    << "peak_flops:\n"
    << "  fp32: " << flops_text(m.fp32_flops) << "  # " << by << ": fp32 GEMM " << m.gemm_size << "^3 through the cpu "
    << "backend (BLAS sgemm), " << reps << ", best of 256/512/1024\n"
    << "  bf16: " << flops_text(m.fp32_flops) << "  # " << by << ": the fp32 figure (the cpu backend computes bf16 "
    << "in fp32)\n"
    << "hbm: " << gib_text(f.mem_bytes) << "  # " << read << ": MemTotal of /proc/meminfo\n"
    << "hbm_bw: " << bw_text(m.triad_Bps) << "  # " << by << ": triad a = b + s c, one thread, 3 x "
    << fmt("%.4g", m.stream_bytes / 3 / (1024.0 * 1024)) << " MiB"
    << ", 24 B/element, " << reps << "\n"
    << "scaleup_bw: " << bw_text(m.copy_Bps) << "  # " << by << ": memcpy, one thread, 16 B/element, " << reps
    << " (ranks of the local communicator copy through host memory)\n";
  if (f.l2_bytes > 0) y << "l2: " << mib_text(f.l2_bytes) << "  # " << read << ": sysconf(_SC_LEVEL2_CACHE_SIZE)\n";
  y << "tdp: \"1 W\"  # not measured (no power sensor is readable here): a placeholder; energy figures of this "
       "device mean nothing\n"
    << "idle_power: \"0 W\"  # not measured: a placeholder, as tdp\n"
    << "sm_count: " << m.blas_threads << "  # " << read << ": the threads the GEMMs ran on (" << threads << ")\n"
    << "# An empty op between two timing events: " << us_text(m.event_s) << " (" << by << ", median of 201).\n"
    << "# Fixed costs of a minimal op per family, " << by << " (medians of 201). Not written as keys: the\n"
    << "# families' sections and their defaults belong to the cost model; `parasol calibrate` fits them from there.\n"
    << "#   1x1x1 GEMM " << fmt("%.4g", m.gemm_fixed_s * 1e6) << " us, 1x8 rmsnorm "
    << fmt("%.4g", m.elementwise_fixed_s * 1e6) << " us, one decode token over one cached token " << fmt("%.4g", m.attention_fixed_s * 1e6) << " us\n";
  return y.str();
}

nlohmann::json measurements_json(const MeasureOptions& o, const HostFacts& f, const HostMeasurements& m) {
  return {{"name", o.name},
          {"host", f.host},
          {"date", f.date},
          {"hardware_threads", f.hw_threads},
          {"blas_threads", m.blas_threads},
          {"fp32_flops", m.fp32_flops},
          {"gemm_size", m.gemm_size},
          {"triad_Bps", m.triad_Bps},
          {"copy_Bps", m.copy_Bps},
          {"stream_bytes", m.stream_bytes},
          {"memory_bytes", f.mem_bytes},
          {"l2_bytes", f.l2_bytes},
          {"event_s", m.event_s},
          {"gemm_fixed_s", m.gemm_fixed_s},
          {"elementwise_fixed_s", m.elementwise_fixed_s},
          {"attention_fixed_s", m.attention_fixed_s},
          {"repetitions", o.reps}};
}

int run_measure_host(const MeasureOptions& o, const CommonOptions& common) {
  if (o.name.empty()) throw ConfigError("", 0, 0, "--name", "a non-empty device name", "''");
  if (o.reps < 3) throw ConfigError("", 0, 0, "--reps", "at least 3 repetitions (medians)", std::to_string(o.reps));
  const HostFacts facts = host_facts();
  const HostMeasurements m = measure(o, facts);
  const std::string yaml = device_yaml(o, facts, m);
  // The file must load as a device file: a unit or key the loader does not take fails here, not in calibrate.
  const spec::Gpu gpu = spec::load_gpu(yaml::load_string(yaml, o.name + ".yaml"));
  if (!common.out_dir.empty()) {
    const std::filesystem::path p(common.out_dir);
    write_file_atomic(p.has_parent_path() ? p.parent_path().string() : ".", p.filename().string(), yaml);
  }
  if (common.json) {
    std::cout << measurements_json(o, facts, m).dump(2) << "\n";
  } else if (common.out_dir.empty()) {
    std::cout << yaml;
  } else if (common.verbosity > 0) {
    std::cout << "measure-host: " << gpu.name << " on " << facts.host << ": fp32 " << fmt("%.4g", m.fp32_flops / 1e9)
              << " GFLOP/s (GEMM " << m.gemm_size << "^3), triad " << fmt("%.4g", m.triad_Bps / 1e9)
              << " GB/s, memcpy " << fmt("%.4g", m.copy_Bps / 1e9) << " GB/s\n"
              << "wrote " << common.out_dir << "\n";
  }
  return 0;
}

PARASOL_COMMAND("measure-host", 75, [](CLI::App& app, CommonOptions& common) {
  auto o = std::make_shared<MeasureOptions>();
  CLI::App* sub = app.add_subcommand(
      "measure-host", "Measure this CPU (GEMM peak, bandwidth, fixed op costs) into a device file: --out FILE");
  add_common_options(sub, common);
  sub->add_option("--name", o->name, "The device's name (the file's `name:`)")->capture_default_str();
  sub->add_option("--reps", o->reps, "Timed repetitions of each measurement (medians)")->capture_default_str();
  set_examples(sub, {"parasol measure-host --out host.yaml  # a device file for the cpu backend",
                     "OPENBLAS_NUM_THREADS=1 parasol measure-host --name cpu-1t --out cpu-1t.yaml",
                     "parasol measure-host --json  # the raw measurements"});
  return [o, &common] { return run_measure_host(*o, common); };
});

}  // namespace
}  // namespace parasol::tools

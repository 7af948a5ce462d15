// Loading a Gpu from `schema: parasol.gpu/1` (docs/schema-gpu.md). Every quantity is a string with a unit, read
// through yaml::Node so that errors carry file:line:column and the key path. Unknown keys are errors.
#include <string>

#include "core/common/error.hpp"
#include "core/spec/gpu.hpp"

namespace parasol::spec {
namespace {

using yaml::Node;

constexpr double kMaxFlops = 1e18;  // 1 EFLOP/s per chip: far above any part, catches unit slips ("989 PFLOP/s")

void load_peaks(const Node& n, Gpu& g) {
  n.allow_keys({"fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"});
  for (const auto& [key, value] : n.entries()) {
    const double v = value.as_quantity(Dimension::kFlopRate, 1e9, kMaxFlops);
    if (key == "tf32") {
      g.tf32_flops = v;
      continue;
    }
    g.peak_flops[*parse_dtype(key)] = v;  // allow_keys admitted only dtype names
  }
  // peak() falls back towards fp32 and bf16; both must exist so every dtype resolves.
  n.at("bf16");
  n.at("fp32");
}

Efficiency load_efficiency(const Node& n) {
  // The plain roofline's keys, now the kernel sections' parameters: say where they went.
  for (const char* old : {"max_compute", "m_half", "memory", "attention_compute", "launch_overhead"})
    if (auto v = n.get(old))
      v->fail("no key here: GEMM efficiency and fixed cost are in `gemm:`, element-wise bandwidth and fixed cost in "
              "`elementwise:`, attention in `attention:` (docs/schema-gpu.md); efficiency: holds comm_efficiency, "
              "nvls_efficiency, collective_latency, nvls_latency",
              std::string("'") + old + "'");
  n.allow_keys({"comm_efficiency", "nvls_efficiency", "collective_latency", "nvls_latency"});
  Efficiency e;
  e.comm_efficiency = n.number_or("comm_efficiency", e.comm_efficiency, 0.01, 1.0);
  e.nvls_efficiency = n.number_or("nvls_efficiency", e.nvls_efficiency, 0.01, 1.0);
  e.collective_latency_s = n.quantity_or("collective_latency", Dimension::kTime, e.collective_latency_s, 0.0, 1e-3);
  e.nvls_latency_s = n.quantity_or("nvls_latency", Dimension::kTime, e.nvls_latency_s, 0.0, 1e-3);
  return e;
}

}  // namespace

Gpu load_gpu(const yaml::Node& root) {
  if (!root.is_map()) root.fail("a GPU description (a map)");
  root.allow_keys({"schema", "name", "vendor", "peak_flops", "hbm", "hbm_bw", "scaleup_bw", "l2", "tdp", "idle_power",
                   "efficiency", "sm_count", "gemm", "elementwise", "attention", "collective"});
  root.at("schema").as_enum({"parasol.gpu/1"});
  Gpu g;
  g.name = root.str("name");
  if (g.name.empty()) root.at("name").fail("a non-empty name");
  g.vendor = root.at("vendor").as_enum({"nvidia", "amd", "other"});
  load_peaks(root.at("peak_flops"), g);
  g.hbm_bytes = root.quantity("hbm", Dimension::kBytes, 1e6, 1e14);
  g.hbm_bw_Bps = root.quantity("hbm_bw", Dimension::kBandwidth, 1e6, 1e15);
  g.scaleup_bw_Bps = root.quantity("scaleup_bw", Dimension::kBandwidth, 0.0, 1e15);
  g.l2_bytes = root.quantity_or("l2", Dimension::kBytes, 0.0, 0.0, 1e11);
  g.tdp_W = root.quantity("tdp", Dimension::kPower, 1.0, 1e5);
  g.idle_W = root.quantity("idle_power", Dimension::kPower, 0.0, 1e5);
  if (g.idle_W > g.tdp_W)
    root.at("idle_power").fail("an idle power at most the TDP (" + std::to_string(g.tdp_W) + " W)");
  if (auto e = root.get("efficiency")) g.eff = load_efficiency(*e);
  g.sm_count = static_cast<int>(root.integer_or("sm_count", 0, 0, 100000));
  if (auto s = root.get("gemm")) load_gemm_params(*s, g.gemm);
  if (auto s = root.get("elementwise")) load_elementwise_params(*s, g.elementwise);
  if (auto s = root.get("attention")) load_attention_params(*s, g.attention);
  if (auto s = root.get("collective")) load_collective_params(*s, g.collective);
  return g;
}

Gpu load_gpu_file(const std::string& path) {
  return load_gpu(yaml::load_file(path));
}

}  // namespace parasol::spec

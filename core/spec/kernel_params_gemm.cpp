// Loading GemmParams and ElementwiseParams from the GPU YAML's `gemm:` and `elementwise:` sections (kernel_params.hpp,
// docs/schema-gpu.md).
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

void load_gemm_params(const yaml::Node& n, GemmParams& p) {
  n.allow_keys({"max_efficiency", "fp8_max_efficiency", "tile_intensity", "k_half", "k_step", "memory", "overlap",
                "fixed", "split_k_min", "split_k_fixed", "fp8_memory", "fp8_k_step", "fp8_fixed", "fp8_quant_fixed",
                "fp8_quant_row", "grouped_efficiency", "grouped_fixed", "fp8_grouped_efficiency", "fp8_grouped_fixed",
                "fp8_grouped_min_bm", "grouped_memory", "fp8_grouped_memory", "grouped_expert", "fp8_grouped_expert", "batched_efficiency", "batched_fixed", "fp8_tiles",
                "fp8_quant_pass_k", "fp8_quant_pass", "fp8_store_memory", "bench_l2_fraction", "bench_l2_bytes",
                "bench_l2_speedup"});
  p.max_efficiency = n.number_or("max_efficiency", p.max_efficiency, 0.01, 1.0);
  p.fp8_max_efficiency = n.number_or("fp8_max_efficiency", p.fp8_max_efficiency, 0.01, 1.0);
  p.tile_intensity = n.number_or("tile_intensity", p.tile_intensity, 0.01, 1e4);
  p.k_half = n.number_or("k_half", p.k_half, 0.0, 1e6);
  p.k_step_s = n.quantity_or("k_step", Dimension::kTime, p.k_step_s, 0.0, 1e-6);
  p.memory = n.number_or("memory", p.memory, 0.01, 1.0);
  p.overlap = n.number_or("overlap", p.overlap, 1.0, 64.0);
  p.fixed_s = n.quantity_or("fixed", Dimension::kTime, p.fixed_s, 0.0, 1e-3);
  p.split_k_min = n.number_or("split_k_min", p.split_k_min, 1.0, 1e7);
  p.split_k_fixed_s = n.quantity_or("split_k_fixed", Dimension::kTime, p.split_k_fixed_s, 0.0, 1e-3);
  p.fp8_memory = n.number_or("fp8_memory", p.fp8_memory, 0.01, 1.0);
  p.fp8_k_step_s = n.quantity_or("fp8_k_step", Dimension::kTime, p.fp8_k_step_s, 0.0, 1e-6);
  p.fp8_fixed_s = n.quantity_or("fp8_fixed", Dimension::kTime, p.fp8_fixed_s, 0.0, 1e-3);
  p.fp8_quant_fixed_s = n.quantity_or("fp8_quant_fixed", Dimension::kTime, p.fp8_quant_fixed_s, 0.0, 1e-3);
  p.fp8_quant_row_s = n.quantity_or("fp8_quant_row", Dimension::kTime, p.fp8_quant_row_s, 0.0, 1e-6);
  p.fp8_quant_pass_k = static_cast<int>(n.integer_or("fp8_quant_pass_k", p.fp8_quant_pass_k, 0, 1 << 20));
  p.fp8_quant_pass_s = n.quantity_or("fp8_quant_pass", Dimension::kTime, p.fp8_quant_pass_s, 0.0, 1e-6);
  p.fp8_store_memory = n.number_or("fp8_store_memory", p.fp8_store_memory, 0.0, 1.0);
  p.grouped_efficiency = n.number_or("grouped_efficiency", p.grouped_efficiency, 0.01, 4.0);
  p.grouped_fixed_s = n.quantity_or("grouped_fixed", Dimension::kTime, p.grouped_fixed_s, 0.0, 1e-3);
  p.fp8_grouped_efficiency = n.number_or("fp8_grouped_efficiency", p.fp8_grouped_efficiency, 0.01, 4.0);
  p.fp8_grouped_fixed_s = n.quantity_or("fp8_grouped_fixed", Dimension::kTime, p.fp8_grouped_fixed_s, 0.0, 1e-3);
  p.grouped_memory = n.number_or("grouped_memory", p.grouped_memory, 0.0, 1.0);
  p.fp8_grouped_memory = n.number_or("fp8_grouped_memory", p.fp8_grouped_memory, 0.0, 1.0);
  p.grouped_expert_s = n.quantity_or("grouped_expert", Dimension::kTime, p.grouped_expert_s, 0.0, 1e-3);
  p.fp8_grouped_expert_s = n.quantity_or("fp8_grouped_expert", Dimension::kTime, p.fp8_grouped_expert_s, 0.0, 1e-3);
  p.batched_efficiency = n.number_or("batched_efficiency", p.batched_efficiency, 0.01, 4.0);
  p.batched_fixed_s = n.quantity_or("batched_fixed", Dimension::kTime, p.batched_fixed_s, 0.0, 1e-3);
  p.bench_l2_fraction = n.number_or("bench_l2_fraction", p.bench_l2_fraction, 0.0, 100.0);
  p.bench_l2_bytes = n.number_or("bench_l2_bytes", p.bench_l2_bytes, 0.0, 1e12);  // plain bytes: the fitter writes numbers
  p.bench_l2_speedup = n.number_or("bench_l2_speedup", p.bench_l2_speedup, 0.0, 100.0);
  p.fp8_grouped_min_bm = static_cast<int>(n.integer_or("fp8_grouped_min_bm", p.fp8_grouped_min_bm, 0, 256));
  if (auto t = n.get("fp8_tiles")) {
    if (!t->is_seq())
      throw ConfigError(t->file(), t->line(), t->column(), t->path(), "a list of [max_m, bm, bn] or [max_m, bm, bn, sms]",
                        t->describe());
    p.fp8_tiles.clear();
    for (const auto& row : t->items()) {
      const auto v = row.items();
      if (!row.is_seq() || (v.size() != 3 && v.size() != 4))
        throw ConfigError(row.file(), row.line(), row.column(), row.path(),
                          "[max_m, bm, bn] or [max_m, bm, bn, sms] (max_m 0: any m; sms 1 or 2)", row.describe());
      GemmTile g;
      g.max_m = v[0].as_int(0, int64_t{1} << 40);
      g.bm = static_cast<int>(v[1].as_int(1, 1024));
      g.bn = static_cast<int>(v[2].as_int(1, 1024));
      if (v.size() == 4) g.sms = static_cast<int>(v[3].as_int(1, 2));
      if (!p.fp8_tiles.empty() && p.fp8_tiles.back().max_m == 0)
        throw ConfigError(row.file(), row.line(), row.column(), row.path(), "no row after the catch-all [0, bm, bn]",
                          row.describe());
      if (!p.fp8_tiles.empty() && g.max_m != 0 && g.max_m <= p.fp8_tiles.back().max_m)
        throw ConfigError(row.file(), row.line(), row.column(), row.path(), "max_m increasing", row.describe());
      p.fp8_tiles.push_back(g);
    }
  }
}

void load_elementwise_params(const yaml::Node& n, ElementwiseParams& p) {
  n.allow_keys({"memory", "default_memory", "fixed"});
  if (auto m = n.get("memory")) {
    m->allow_keys({"rmsnorm", "activation", "rope", "kv_append", "embedding", "moe_gate", "moe_dispatch", "moe_combine",
                   "sample"});
    for (const auto& [k, v] : m->entries()) p.memory[k] = v.as_double(0.01, 1.0);
  }
  p.default_memory = n.number_or("default_memory", p.default_memory, 0.01, 1.0);
  p.fixed_s = n.quantity_or("fixed", Dimension::kTime, p.fixed_s, 0.0, 1e-3);
}

nlohmann::json to_json(const GemmParams& p) {
  nlohmann::json tiles = nlohmann::json::array();
  for (const auto& t : p.fp8_tiles) tiles.push_back({t.max_m, t.bm, t.bn, t.sms});
  return {{"max_efficiency", p.max_efficiency},
          {"fp8_max_efficiency", p.fp8_max_efficiency},
          {"tile_intensity", p.tile_intensity},
          {"k_half", p.k_half},
          {"k_step_s", p.k_step_s},
          {"memory", p.memory},
          {"overlap", p.overlap},
          {"fixed_s", p.fixed_s},
          {"split_k_min", p.split_k_min},
          {"split_k_fixed_s", p.split_k_fixed_s},
          {"fp8_memory", p.fp8_memory},
          {"fp8_k_step_s", p.fp8_k_step_s},
          {"fp8_fixed_s", p.fp8_fixed_s},
          {"fp8_quant_fixed_s", p.fp8_quant_fixed_s},
          {"fp8_quant_row_s", p.fp8_quant_row_s},
          {"fp8_quant_pass_k", p.fp8_quant_pass_k},
          {"fp8_quant_pass_s", p.fp8_quant_pass_s},
          {"fp8_store_memory", p.fp8_store_memory},
          {"grouped_efficiency", p.grouped_efficiency},
          {"grouped_fixed_s", p.grouped_fixed_s},
          {"fp8_grouped_efficiency", p.fp8_grouped_efficiency},
          {"fp8_grouped_fixed_s", p.fp8_grouped_fixed_s},
          {"fp8_grouped_min_bm", p.fp8_grouped_min_bm},
          {"grouped_memory", p.grouped_memory},
          {"fp8_grouped_memory", p.fp8_grouped_memory},
          {"grouped_expert_s", p.grouped_expert_s},
          {"fp8_grouped_expert_s", p.fp8_grouped_expert_s},
          {"batched_efficiency", p.batched_efficiency},
          {"batched_fixed_s", p.batched_fixed_s},
          {"bench_l2_fraction", p.bench_l2_fraction},
          {"bench_l2_bytes", p.bench_l2_bytes},
          {"bench_l2_speedup", p.bench_l2_speedup},
          {"fp8_tiles", tiles}};
}

nlohmann::json to_json(const ElementwiseParams& p) {
  nlohmann::json m = nlohmann::json::object();
  for (const auto& [k, v] : p.memory) m[k] = v;
  return {{"memory", m}, {"default_memory", p.default_memory}, {"fixed_s", p.fixed_s}};
}

}  // namespace parasol::spec

// Loading AttentionParams from the GPU YAML's `attention:` section (kernel_params.hpp, docs/schema-gpu.md).
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/kernel_params.hpp"

namespace parasol::spec {

void load_attention_params(const yaml::Node& n, AttentionParams& p) {
  n.allow_keys({"tile_q",
                "tile_kv_elements",
                "prefill_pack_gqa",
                "tmem_columns",
                "decode_tile_q",
                "max_splits",
                "kv_block_tokens",
                "prefill_fixed",
                "prefill_max_efficiency",
                "prefill_sm_efficiency",
                "prefill_d_half",
                "prefill_per_tile",
                "prefill_per_kv_token",
                "prefill_memory",
                "prefill_overlap",
                "prefill_softmax_overlap",
                "prefill_tail",
                "prefill_fp8_tile",
                "prefill_fp8_tile_slope",
                "prefill_fp8_overhead",
                "prefill_fp8_fixed",
                "prefill_fp8_kv_write",
                "mla_prefill_factor",
                "mla_prefill_v_pad",
                "mla_prefill_tile_q",
                "mla_prefill_tmem",
                "mla_prefill_max_efficiency",
                "mla_prefill_per_token",
                "mla_prefill_fixed",
                "decode_fixed",
                "decode_fp8_fixed",
                "decode_memory",
                "decode_sm_bandwidth",
                "decode_mma_efficiency",
                "decode_fp8_mma",
                "mla_decode_mma_efficiency",
                "mla_decode_tile_q",
                "mla_decode_wide_above",
                "mla_decode_wide_tile_q",
                "mla_decode_tile_kv",
                "mla_decode_splits",
                "mla_decode_max_splits",
                "mla_decode_reread",
                "mla_decode_sm_bandwidth",
                "mla_decode_mha_kernel",
                "mla_decode_single_head",
                "mla_decode_fp8",
                "mla_decode_per_row",
                "mla_decode_fixed",
                "per_cta",
                "per_cta_dim",
                "per_block",
                "per_seq",
                "split",
                "decode_overlap",
                "bench_l2_fraction",
                "bench_l2_bytes",
                "bench_l2_speedup",
                "bench_mla_context",
                "bench_mla_generation"});
  auto num = [&n](const char* key, double& v, double lo, double hi) { v = n.number_or(key, v, lo, hi); };
  auto time = [&n](const char* key, double& v, double hi) { v = n.quantity_or(key, Dimension::kTime, v, 0.0, hi); };
  num("tile_q", p.tile_q, 1, 4096);
  num("tile_kv_elements", p.tile_kv_elements, 64, 1 << 22);
  p.prefill_pack_gqa = n.bool_or("prefill_pack_gqa", p.prefill_pack_gqa);
  // 0 (no limit), or at least the 32 columns of one allocation unit.
  num("tmem_columns", p.tmem_columns, 0, 1 << 16);
  if (p.tmem_columns > 0 && p.tmem_columns < 32) n.at("tmem_columns").fail("0 (no limit) or at least 32 columns");
  num("decode_tile_q", p.decode_tile_q, 1, 4096);
  num("max_splits", p.max_splits, 1, 4096);
  num("kv_block_tokens", p.kv_block_tokens, 1, 1 << 20);
  time("prefill_fixed", p.prefill_fixed_s, 1e-2);
  num("prefill_max_efficiency", p.prefill_max_efficiency, 0.01, 1.0);
  num("prefill_sm_efficiency", p.prefill_sm_efficiency, 0.01, 1.0);
  num("prefill_d_half", p.prefill_d_half, 0.0, 1e5);
  time("prefill_per_tile", p.prefill_per_tile_s, 1e-2);
  time("prefill_per_kv_token", p.prefill_per_kv_token_s, 1e-2);
  num("prefill_memory", p.prefill_memory, 0.01, 1.0);
  num("prefill_overlap", p.prefill_overlap, 1.0, 64.0);
  num("prefill_softmax_overlap", p.prefill_softmax_overlap, 1.0, 64.0);
  num("prefill_tail", p.prefill_tail, 0.0, 64.0);
  if (p.prefill_tail > 0 && p.prefill_tail < 1) n.at("prefill_tail").fail("0 (the larger term) or at least 1");
  num("prefill_fp8_tile", p.prefill_fp8_tile, 0.05, 20.0);
  num("prefill_fp8_tile_slope", p.prefill_fp8_tile_slope, -10.0, 10.0);
  num("prefill_fp8_overhead", p.prefill_fp8_overhead, 0.05, 20.0);
  time("prefill_fp8_fixed", p.prefill_fp8_fixed_s, 1e-2);
  num("prefill_fp8_kv_write", p.prefill_fp8_kv_write, 0.0, 20.0);
  num("mla_prefill_factor", p.mla_prefill_factor, 0.05, 20.0);
  p.mla_prefill_v_pad = n.bool_or("mla_prefill_v_pad", p.mla_prefill_v_pad);
  num("mla_prefill_tile_q", p.mla_prefill_tile_q, 0, 4096);
  p.mla_prefill_tmem = n.bool_or("mla_prefill_tmem", p.mla_prefill_tmem);
  num("mla_prefill_max_efficiency", p.mla_prefill_max_efficiency, 0.0, 1.0);
  if (n.has("mla_prefill_per_token")) time("mla_prefill_per_token", p.mla_prefill_per_token_s, 1e-2);
  if (n.has("mla_prefill_fixed")) time("mla_prefill_fixed", p.mla_prefill_fixed_s, 1e-2);
  time("decode_fixed", p.decode_fixed_s, 1e-2);
  time("decode_fp8_fixed", p.decode_fp8_fixed_s, 1e-2);
  num("decode_memory", p.decode_memory, 0.01, 1.0);
  num("decode_sm_bandwidth", p.decode_sm_bandwidth, 0.01, 1e4);
  num("decode_mma_efficiency", p.decode_mma_efficiency, 0.001, 1.0);
  num("decode_fp8_mma", p.decode_fp8_mma, 0.05, 20.0);
  num("mla_decode_mma_efficiency", p.mla_decode_mma_efficiency, 0.001, 1.0);
  num("mla_decode_tile_q", p.mla_decode_tile_q, 0, 4096);
  num("mla_decode_wide_above", p.mla_decode_wide_above, 0, 4096);
  num("mla_decode_wide_tile_q", p.mla_decode_wide_tile_q, 0, 4096);
  num("mla_decode_tile_kv", p.mla_decode_tile_kv, 0, 4096);
  num("mla_decode_splits", p.mla_decode_splits, 0, 4096);
  num("mla_decode_max_splits", p.mla_decode_max_splits, 0, 4096);
  num("mla_decode_reread", p.mla_decode_reread, 0.0, 1.0);
  num("mla_decode_sm_bandwidth", p.mla_decode_sm_bandwidth, 0.0, 1e4);
  p.mla_decode_mha_kernel = n.bool_or("mla_decode_mha_kernel", p.mla_decode_mha_kernel);
  num("mla_decode_single_head", p.mla_decode_single_head, 0.05, 100.0);
  num("mla_decode_fp8", p.mla_decode_fp8, 0.05, 20.0);
  time("mla_decode_per_row", p.mla_decode_per_row_s, 1e-2);
  if (n.has("mla_decode_fixed")) time("mla_decode_fixed", p.mla_decode_fixed_s, 1e-2);
  time("per_cta", p.per_cta_s, 1e-2);
  time("per_cta_dim", p.per_cta_dim_s, 1e-2);
  time("per_block", p.per_block_s, 1e-2);
  time("per_seq", p.per_seq_s, 1e-2);
  time("split", p.split_s, 1e-2);
  num("decode_overlap", p.decode_overlap, 1.0, 64.0);
  num("bench_l2_fraction", p.bench_l2_fraction, 0.0, 100.0);
  num("bench_l2_bytes", p.bench_l2_bytes, 0.0, 1e12);  // plain bytes: the fitter writes numbers
  num("bench_l2_speedup", p.bench_l2_speedup, 1.0, 100.0);
  time("bench_mla_context", p.bench_mla_context_s, 1.0);
  time("bench_mla_generation", p.bench_mla_generation_s, 1.0);
}

nlohmann::json to_json(const AttentionParams& p) {
  return {{"tile_q", p.tile_q},
          {"tile_kv_elements", p.tile_kv_elements},
          {"prefill_pack_gqa", p.prefill_pack_gqa},
          {"tmem_columns", p.tmem_columns},
          {"decode_tile_q", p.decode_tile_q},
          {"max_splits", p.max_splits},
          {"kv_block_tokens", p.kv_block_tokens},
          {"prefill_fixed_s", p.prefill_fixed_s},
          {"prefill_max_efficiency", p.prefill_max_efficiency},
          {"prefill_sm_efficiency", p.prefill_sm_efficiency},
          {"prefill_d_half", p.prefill_d_half},
          {"prefill_per_tile_s", p.prefill_per_tile_s},
          {"prefill_per_kv_token_s", p.prefill_per_kv_token_s},
          {"prefill_memory", p.prefill_memory},
          {"prefill_overlap", p.prefill_overlap},
          {"prefill_softmax_overlap", p.prefill_softmax_overlap},
          {"prefill_tail", p.prefill_tail},
          {"prefill_fp8_tile", p.prefill_fp8_tile},
          {"prefill_fp8_tile_slope", p.prefill_fp8_tile_slope},
          {"prefill_fp8_overhead", p.prefill_fp8_overhead},
          {"prefill_fp8_fixed_s", p.prefill_fp8_fixed_s},
          {"prefill_fp8_kv_write", p.prefill_fp8_kv_write},
          {"mla_prefill_factor", p.mla_prefill_factor},
          {"mla_prefill_v_pad", p.mla_prefill_v_pad},
          {"mla_prefill_tile_q", p.mla_prefill_tile_q},
          {"mla_prefill_tmem", p.mla_prefill_tmem},
          {"mla_prefill_max_efficiency", p.mla_prefill_max_efficiency},
          {"mla_prefill_per_token_s", p.mla_prefill_per_token_s},
          {"mla_prefill_fixed_s", p.mla_prefill_fixed_s},
          {"decode_fixed_s", p.decode_fixed_s},
          {"decode_fp8_fixed_s", p.decode_fp8_fixed_s},
          {"decode_memory", p.decode_memory},
          {"decode_sm_bandwidth", p.decode_sm_bandwidth},
          {"decode_mma_efficiency", p.decode_mma_efficiency},
          {"decode_fp8_mma", p.decode_fp8_mma},
          {"mla_decode_mma_efficiency", p.mla_decode_mma_efficiency},
          {"mla_decode_tile_q", p.mla_decode_tile_q},
          {"mla_decode_wide_above", p.mla_decode_wide_above},
          {"mla_decode_wide_tile_q", p.mla_decode_wide_tile_q},
          {"mla_decode_tile_kv", p.mla_decode_tile_kv},
          {"mla_decode_splits", p.mla_decode_splits},
          {"mla_decode_max_splits", p.mla_decode_max_splits},
          {"mla_decode_reread", p.mla_decode_reread},
          {"mla_decode_sm_bandwidth", p.mla_decode_sm_bandwidth},
          {"mla_decode_mha_kernel", p.mla_decode_mha_kernel},
          {"mla_decode_single_head", p.mla_decode_single_head},
          {"mla_decode_fp8", p.mla_decode_fp8},
          {"mla_decode_per_row_s", p.mla_decode_per_row_s},
          {"mla_decode_fixed_s", p.mla_decode_fixed_s},
          {"per_cta_s", p.per_cta_s},
          {"per_cta_dim_s", p.per_cta_dim_s},
          {"per_block_s", p.per_block_s},
          {"per_seq_s", p.per_seq_s},
          {"split_s", p.split_s},
          {"decode_overlap", p.decode_overlap},
          {"bench_l2_fraction", p.bench_l2_fraction},
          {"bench_l2_bytes", p.bench_l2_bytes},
          {"bench_l2_speedup", p.bench_l2_speedup},
          {"bench_mla_context_s", p.bench_mla_context_s},
          {"bench_mla_generation_s", p.bench_mla_generation_s}};
}

}  // namespace parasol::spec

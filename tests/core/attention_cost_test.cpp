// Attention cost model (core/cost/attention_cost.hpp): the prefill tile structure in closed form (unpacked GQA tiles
// per query head, tensor-memory passes, the MMA/softmax and throughput/tail combinations) and the YAML keys that set
// it (core/spec/kernel_params_attention.cpp).
#include "core/cost/attention_cost.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/common/error.hpp"
#include "plan_fixtures.hpp"

namespace parasol::cost {
namespace {

using plan::OpKind;

// A prefill op from an empty cache: `seqs` prompts of `len` tokens, bf16 Q/K/V, bytes = Q + O + K + V once.
plan::Op prefill_op(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t seqs, int64_t len, double kv_bytes = 2) {
  plan::Op op;
  op.kind = OpKind::kAttention;
  op.heads = heads, op.kv_heads = kv_heads, op.head_dim = head_dim;
  op.q_lens.assign(static_cast<size_t>(seqs), len);
  op.ctx_lens.assign(static_cast<size_t>(seqs), len);
  const double tokens = static_cast<double>(seqs * len);
  op.tokens = seqs * len;
  op.bytes = tokens * heads * 2 * head_dim * 2 + tokens * kv_heads * 2 * head_dim * kv_bytes;
  op.flops = 2 * tokens * tokens / static_cast<double>(seqs) * heads * 2 * head_dim;  // not read by the tile model
  return op;
}

// B200 with only the tile terms left in the SM time: no per-tile, per-token, per-sequence or fixed costs, no derate,
// the HBM stream far below the tiles; structure and combinations as each test sets them.
spec::Gpu tiles_only() {
  spec::Gpu g = testing::shipped_gpu("b200");
  auto& p = g.attention;
  p.prefill_fixed_s = 0, p.prefill_per_tile_s = 0, p.prefill_per_kv_token_s = 0, p.per_seq_s = 0;
  p.prefill_max_efficiency = 1, p.prefill_sm_efficiency = 1;
  p.prefill_memory = 1, p.prefill_overlap = 64;
  p.prefill_softmax_overlap = 1, p.prefill_tail = 0;
  p.prefill_pack_gqa = true, p.tmem_columns = 0, p.tile_q = 128;
  g.hbm_bw_Bps *= 1e6;
  return g;
}

TEST(AttentionCost, UnpackedPrefillTilesScaleWithQueryHeadsPackedOnesWithKvHeads) {
  spec::Gpu g = tiles_only();
  g.attention.prefill_pack_gqa = false;
  // Enough sequences that the SMs' throughput, not the longest tile, sets the time.
  const double t8 = attention_op_time(prefill_op(8, 8, 128, 64, 1024), g).compute_s;
  const double t32 = attention_op_time(prefill_op(32, 8, 128, 64, 1024), g).compute_s;
  const double t64 = attention_op_time(prefill_op(64, 8, 128, 64, 1024), g).compute_s;
  EXPECT_NEAR(t32 / t8, 4.0, 1e-12);
  EXPECT_NEAR(t64 / t8, 8.0, 1e-12);
  // MHA has nothing to pack: both layouts cost the same.
  spec::Gpu packed = g;
  packed.attention.prefill_pack_gqa = true;
  EXPECT_DOUBLE_EQ(attention_op_time(prefill_op(8, 8, 128, 64, 1024), packed).compute_s, t8);
  // Packed GQA tiles share each KV head's causal triangle: fewer pairs than one triangle per query head.
  EXPECT_LT(attention_op_time(prefill_op(64, 8, 128, 64, 1024), packed).compute_s, t64);
}

TEST(AttentionCost, TensorMemoryOverflowAtHeadDim512RepeatsTheQkPassAndTheSoftmax) {
  spec::Gpu g = tiles_only();
  g.attention.prefill_d_half = 0;  // the MMA alone
  auto compute = [&](int64_t hd, double tmem) {
    g.attention.tmem_columns = tmem;
    return attention_op_time(prefill_op(16, 16, hd, 64, 2048), g).compute_s;
  };
  // d 512: n_k = 16384 / 512 = 32 keys, S + O = 544 columns > 512: two passes, each recomputing Q K^T (d_qk) and
  // sharing P V (d_v): (2 x 512 + 512) / 1024 of the one-pass MMA, i.e. the Q K^T term doubles.
  EXPECT_NEAR(compute(512, 512) / compute(512, 0), 1.5, 1e-12);
  // d 128 and 256 fit (128 + 128 and 64 + 256 columns): unchanged.
  EXPECT_EQ(compute(128, 512), compute(128, 0));
  EXPECT_EQ(compute(256, 512), compute(256, 0));
  // The softmax runs once per pass: with MMA and softmax added (p = 1), d_half = D / 2 gives (1.5 + 2 x 0.5) / 1.5.
  g.attention.prefill_d_half = 512;
  EXPECT_NEAR(compute(512, 512) / compute(512, 0), 2.5 / 1.5, 1e-12);
}

TEST(AttentionCost, SoftmaxOverlapOneAddsTheSoftmaxAndLargeOverlapHidesIt) {
  spec::Gpu g = tiles_only();
  g.attention.prefill_d_half = 128;  // D = 256: softmax = half the MMA
  const plan::Op op = prefill_op(16, 16, 128, 64, 2048);
  g.attention.prefill_softmax_overlap = 1;
  const double added = attention_op_time(op, g).compute_s;
  g.attention.prefill_softmax_overlap = 64;
  const double hidden = attention_op_time(op, g).compute_s;
  g.attention.prefill_softmax_overlap = 2;
  const double between = attention_op_time(op, g).compute_s;
  EXPECT_NEAR(added / hidden, 1.5, 1e-12);  // (1 + 0.5) against max(1, 0.5): 0.5^64 vanishes in double
  EXPECT_NEAR(between / hidden, std::sqrt(1.25), 1e-12);
}

TEST(AttentionCost, TailOneAddsTheLongestTileToTheThroughputZeroTakesTheLarger) {
  spec::Gpu g = tiles_only();
  g.attention.prefill_pack_gqa = false, g.attention.tile_q = 256;
  // One prompt of 256 tokens, one head, d 128 (n_k 128): one tile of 2.5 pairs (keys 256: 2 whole KV tiles, the
  // closed form's half-pair rounding), longest tile 2 pairs; the throughput is 2.5 pairs over the SMs.
  const plan::Op op = prefill_op(1, 1, 128, 1, 256);
  const double S = g.sm_count;
  g.attention.prefill_tail = 0;
  const double larger = attention_op_time(op, g).compute_s;  // the longest tile
  g.attention.prefill_tail = 1;
  const double added = attention_op_time(op, g).compute_s;
  EXPECT_NEAR(added / larger, 1 + 2.5 / (2 * S), 1e-12);
  g.attention.prefill_tail = 64;
  EXPECT_NEAR(attention_op_time(op, g).compute_s / larger, 1.0, 1e-12);
  // Decode-only ops keep the larger term whatever the prefill tail.
  plan::Op dec = prefill_op(8, 8, 128, 4, 1);
  dec.ctx_lens.assign(4, 4096);
  dec.bytes = 4 * 8 * 256 * 2 + 4 * 4096 * 8 * 256 * 2;  // Q + O, and every context token's K and V
  g.attention.prefill_tail = 1;
  const double d1 = attention_op_time(dec, g).time_s;
  g.attention.prefill_tail = 0;
  EXPECT_EQ(attention_op_time(dec, g).time_s, d1);
}

TEST(AttentionCost, Fp8KvWriteFactorScalesOnlyTheNewTokensCacheWrite) {
  spec::Gpu g = testing::shipped_gpu("h100-sxm");
  const plan::Op op = prefill_op(32, 8, 128, 8, 2048, 1.0);  // fp8 KV: one byte per element
  const OpTime def = attention_op_time(op, g);
  g.attention.prefill_fp8_kv_write = g.attention.prefill_fp8_overhead;  // 0 means this
  const OpTime same = attention_op_time(op, g);
  EXPECT_EQ(same.time_s, def.time_s);
  g.attention.prefill_fp8_kv_write = 2 * g.attention.prefill_fp8_overhead;
  const OpTime twice = attention_op_time(op, g);
  EXPECT_EQ(twice.compute_s, def.compute_s);
  const double w_kv = g.attention.prefill_per_kv_token_s * g.attention.prefill_fp8_overhead * 8 * 2048 * 8 * 256 / 256;
  EXPECT_NEAR(twice.memory_s - def.memory_s, w_kv / g.sm_count, 1e-9 * def.memory_s);
  // bf16 KV ignores it.
  const plan::Op bf16 = prefill_op(32, 8, 128, 8, 2048);
  EXPECT_EQ(attention_op_time(bf16, g).time_s, attention_op_time(bf16, testing::shipped_gpu("h100-sxm")).time_s);
}

// MLA's absorbed decode: `seqs` sequences of one new token over `ctx` keys, `heads` query heads on one 576-wide latent
// KV head (d_v 512), bf16; bytes = Q + O + the latent KV once.
plan::Op mla_decode_op(int64_t heads, int64_t seqs, int64_t ctx) {
  plan::Op op;
  op.kind = OpKind::kMlaAttention;
  op.heads = heads, op.kv_heads = 1, op.head_dim = 576, op.v_head_dim = 512;
  op.q_lens.assign(static_cast<size_t>(seqs), 1);
  op.ctx_lens.assign(static_cast<size_t>(seqs), ctx);
  op.tokens = seqs;
  op.bytes = static_cast<double>(seqs) * heads * (576 + 512) * 2 + static_cast<double>(seqs * ctx) * 576 * 2;
  op.flops = 2.0 * static_cast<double>(seqs * ctx) * heads * (576 + 512);
  return op;
}

// A GPU whose MLA decode SM time is its KV tiles alone (no per-CTA, per-block, per-sequence or fixed costs).
spec::Gpu mla_tiles_only(const char* name) {
  spec::Gpu g = testing::shipped_gpu(name);
  auto& p = g.attention;
  p.per_cta_s = 0, p.per_cta_dim_s = 0, p.per_block_s = 0, p.per_seq_s = 0, p.decode_fixed_s = 0, p.split_s = 0;
  return g;
}

TEST(AttentionCost, MlaDecodeHeadTilesAreCtasThatEachStreamTheKv) {
  spec::Gpu g = mla_tiles_only("a100-sxm-80gb");
  auto& p = g.attention;
  p.mla_decode_tile_q = 16, p.mla_decode_splits = 0, p.mla_decode_reread = 0, p.mla_decode_per_row_s = 0;
  p.mla_decode_sm_bandwidth = 0.5;  // the per-CTA KV stream, not the tensor rate, sets a tile's time
  // Enough sequences to fill the SMs many times over: the time follows the CTAs' total work.
  const double t16 = attention_op_time(mla_decode_op(16, 4096, 1024), g).compute_s;
  const double t8 = attention_op_time(mla_decode_op(8, 4096, 1024), g).compute_s;
  const double t64 = attention_op_time(mla_decode_op(64, 4096, 1024), g).compute_s;
  EXPECT_DOUBLE_EQ(t8, t16);          // 8 heads pad to the 16-row tile
  EXPECT_NEAR(t64 / t16, 4.0, 1e-9);  // four head tiles, four KV streams
  // Re-reads that miss L2 add HBM bytes: (tiles - 1) x reread x the KV.
  const plan::Op op = mla_decode_op(64, 4096, 1024);
  const double m0 = attention_op_time(op, g).memory_s;
  p.mla_decode_reread = 1;
  const double kv = 4096.0 * 1024 * 576 * 2;
  EXPECT_NEAR(attention_op_time(op, g).memory_s - m0, 3 * kv / (g.hbm_bw_Bps * p.decode_memory), 1e-9 * m0);
  // Without head tiles (mla_decode_tile_q 0) every head shares one CTA and one KV read.
  p.mla_decode_tile_q = 0;
  EXPECT_DOUBLE_EQ(attention_op_time(op, g).memory_s, m0);
}

TEST(AttentionCost, MlaDecodeSingleHeadFactorOnlyWhereTheEngineRunsItsNonGroupedKernel) {
  spec::Gpu g = mla_tiles_only("a100-sxm-80gb");
  auto& p = g.attention;
  p.mla_decode_tile_q = 16, p.mla_decode_splits = 0, p.mla_decode_per_row_s = 0, p.mla_decode_single_head = 3;
  const plan::Op one = mla_decode_op(1, 4096, 1024), two = mla_decode_op(2, 4096, 1024);
  p.mla_decode_mha_kernel = false;
  const double grouped = attention_op_time(one, g).compute_s;
  EXPECT_DOUBLE_EQ(grouped, attention_op_time(two, g).compute_s);  // both pad to one 16-head CTA
  p.mla_decode_mha_kernel = true;
  EXPECT_NEAR(attention_op_time(one, g).compute_s / grouped, 3.0, 1e-9);
  EXPECT_DOUBLE_EQ(attention_op_time(two, g).compute_s, grouped);
}

TEST(AttentionCost, MlaDecodeFixedSplitsCutTheLongestCtaWhateverTheOccupancy) {
  spec::Gpu g = mla_tiles_only("a100-sxm-80gb");
  auto& p = g.attention;
  p.mla_decode_tile_q = 16, p.mla_decode_tile_kv = 32, p.mla_decode_sm_bandwidth = 0.5, p.mla_decode_per_row_s = 0;
  // One sequence of 32768 keys = 1024 tiles of 32: the longest CTA sets the SM time.
  p.mla_decode_splits = 4;
  const double four = attention_op_time(mla_decode_op(16, 1, 32768), g).compute_s;
  p.mla_decode_splits = 1;
  const double one = attention_op_time(mla_decode_op(16, 1, 32768), g).compute_s;
  EXPECT_NEAR(one / four, 4.0, 1e-9);
  // A fixed count holds at full occupancy too, where the heuristic would not split: same total work.
  p.mla_decode_splits = 4;
  const double full4 = attention_op_time(mla_decode_op(16, 4096, 1024), g).compute_s;
  p.mla_decode_splits = 1;
  EXPECT_NEAR(attention_op_time(mla_decode_op(16, 4096, 1024), g).compute_s / full4, 1.0, 1e-9);
}

TEST(AttentionCost, MlaDecodeWideTilesPastTheThresholdShareOneKvReadPerCluster) {
  spec::Gpu g = mla_tiles_only("b200");
  auto& p = g.attention;
  ASSERT_EQ(p.mla_decode_tile_q, 16);
  ASSERT_EQ(p.mla_decode_wide_above, 32);
  ASSERT_EQ(p.mla_decode_wide_tile_q, 128);
  p.mla_decode_reread = 1;  // every re-read from HBM: the reads show in the memory term
  const double kv = 1024.0 * 4096 * 576 * 2;
  auto kv_reads = [&](int64_t heads) {
    const plan::Op op = mla_decode_op(heads, 1024, 4096);
    const double qo = 1024.0 * heads * (576 + 512) * 2;
    return attention_op_time(op, g).memory_s * g.hbm_bw_Bps * p.decode_memory / kv - qo / kv;
  };
  EXPECT_NEAR(kv_reads(16), 1.0, 1e-9);   // one 16-head CTA
  EXPECT_NEAR(kv_reads(32), 2.0, 1e-9);   // two 16-head CTAs, each reading the KV
  EXPECT_NEAR(kv_reads(64), 1.0, 1e-9);   // one 64-head CTA of the high-throughput kernel
  EXPECT_NEAR(kv_reads(128), 1.0, 1e-9);  // two 64-head CTAs of one cluster, one read
  // Few sequences keep the low-latency kernel past the threshold (1 x ceil(64 / 16) x 2 <= SMs): four 16-head reads.
  const plan::Op small = mla_decode_op(64, 1, 4096);
  const double qo = 64.0 * (576 + 512) * 2, kv1 = 4096.0 * 576 * 2;
  EXPECT_NEAR(attention_op_time(small, g).memory_s * g.hbm_bw_Bps * p.decode_memory / kv1 - qo / kv1, 4.0, 1e-9);
}

TEST(AttentionCost, MlaKernelsFixedCostsReplaceTheSharedOnesOnlyForMla) {
  spec::Gpu g = testing::shipped_gpu("b200");
  auto& p = g.attention;
  const plan::Op dec = mla_decode_op(16, 512, 1024);  // enough CTAs: no split-KV, no combine kernel
  plan::Op gqa = dec;
  gqa.kind = OpKind::kAttention, gqa.heads = 16, gqa.kv_heads = 2, gqa.head_dim = 128, gqa.v_head_dim = 0;
  p.mla_decode_fixed_s = 1e-6, p.decode_fixed_s = 5e-6;
  EXPECT_DOUBLE_EQ(attention_op_time(dec, g).launch_s, 1e-6);
  EXPECT_DOUBLE_EQ(attention_op_time(gqa, g).launch_s, 5e-6);
  p.mla_decode_fixed_s = -1;  // negative: the shared figure
  EXPECT_DOUBLE_EQ(attention_op_time(dec, g).launch_s, 5e-6);
}

TEST(AttentionCost, MlaPrefillVPaddingAddsTheZeroColumnsToTheTileMath) {
  spec::Gpu g = tiles_only();
  g.attention.prefill_d_half = 0, g.attention.mla_prefill_factor = 1;
  plan::Op op = prefill_op(16, 16, 192, 64, 2048);
  op.kind = OpKind::kMlaAttention, op.v_head_dim = 128;
  g.attention.mla_prefill_v_pad = false;
  const double native = attention_op_time(op, g).compute_s;
  g.attention.mla_prefill_v_pad = true;
  EXPECT_NEAR(attention_op_time(op, g).compute_s / native, (192.0 + 192) / (192 + 128), 1e-12);
  // GQA attention ignores the MLA keys.
  plan::Op gqa = prefill_op(16, 16, 192, 64, 2048);
  gqa.v_head_dim = 128;
  g.attention.mla_prefill_v_pad = false;
  const double plain = attention_op_time(gqa, g).compute_s;
  g.attention.mla_prefill_v_pad = true, g.attention.mla_prefill_tile_q = 64;
  EXPECT_EQ(attention_op_time(gqa, g).compute_s, plain);
}

TEST(AttentionParams, DefaultsKeepTheFa3FormAndTheFa3GpuFilesDoNotChangeIt) {
  const spec::AttentionParams d;
  EXPECT_TRUE(d.prefill_pack_gqa);
  EXPECT_EQ(d.tmem_columns, 0);
  EXPECT_EQ(d.prefill_softmax_overlap, 1);
  EXPECT_EQ(d.prefill_tail, 0);
  EXPECT_EQ(d.prefill_fp8_kv_write, 0);
  for (const char* name : {"h100-sxm", "h200-sxm", "a100-sxm-80gb"}) {
    const spec::AttentionParams p = testing::shipped_gpu(name).attention;
    EXPECT_TRUE(p.prefill_pack_gqa) << name;
    EXPECT_EQ(p.tmem_columns, 0) << name;
    EXPECT_EQ(p.prefill_softmax_overlap, 1) << name;
    EXPECT_EQ(p.prefill_tail, 0) << name;
    EXPECT_EQ(p.prefill_fp8_kv_write, 0) << name;
  }
  const nlohmann::json j = spec::to_json(d);
  EXPECT_EQ(j.at("prefill_pack_gqa"), true);
  for (const char* key : {"tmem_columns", "prefill_softmax_overlap", "prefill_tail", "prefill_fp8_kv_write"})
    EXPECT_TRUE(j.contains(key));
}

TEST(AttentionParams, BlackwellFilesSetTheTrtllmGenPrefillStructure) {
  for (const char* name : {"b200", "gb200"}) {
    const spec::AttentionParams p = testing::shipped_gpu(name).attention;
    EXPECT_FALSE(p.prefill_pack_gqa) << name;
    EXPECT_EQ(p.tmem_columns, 512) << name;
    EXPECT_EQ(p.tile_q, 256) << name;
    EXPECT_GE(p.prefill_tail, 1) << name;
    const nlohmann::json j = spec::to_json(p);
    EXPECT_EQ(j.at("prefill_pack_gqa"), false);
    EXPECT_EQ(j.at("tmem_columns"), 512);
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void expect_attention_error(const std::string& line, const std::string& key) {
  std::string text = read_text(std::string(PARASOL_DATA_DIR) + "/topologies/gpus/b200.yaml");
  const std::string anchor = "\nattention:\n";
  const auto pos = text.find(anchor);
  ASSERT_NE(pos, std::string::npos);
  // The key's own line is replaced; a key the file lacks is added at the top of the section.
  const auto at = text.find("\n  " + key + ":", pos);
  if (at != std::string::npos)
    text.replace(at + 1, text.find('\n', at + 1) - at - 1, "  " + line);
  else
    text.insert(pos + anchor.size(), "  " + line + "\n");
  try {
    spec::load_gpu(yaml::load_string(text, "mutated.yaml"));
    ADD_FAILURE() << "no error for '" << line << "'";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.key_path(), "attention." + key) << e.what();
    EXPECT_GT(e.line(), 0) << e.what();
  }
}

TEST(AttentionParams, BadPrefillStructureValuesAreConfigErrorsAtTheirKey) {
  expect_attention_error("prefill_pack_gqa: maybe", "prefill_pack_gqa");
  expect_attention_error("tmem_columns: 16", "tmem_columns");
  expect_attention_error("tmem_columns: -1", "tmem_columns");
  expect_attention_error("prefill_tail: 0.5", "prefill_tail");
  expect_attention_error("prefill_softmax_overlap: 0.5", "prefill_softmax_overlap");
  expect_attention_error("prefill_fp8_kv_write: -1", "prefill_fp8_kv_write");
  expect_attention_error("mla_prefill_v_pad: maybe", "mla_prefill_v_pad");
  expect_attention_error("mla_decode_reread: 2", "mla_decode_reread");
  expect_attention_error("mla_decode_tile_q: -16", "mla_decode_tile_q");
}

}  // namespace
}  // namespace parasol::cost

// Executor profiles (core/cost/profile_samples.hpp): rows written by the profiler read back as the same ops, a
// calibration table still reads the extended format and the readers still read the old one, rows become one Sample
// per distinct shape with the median time, families are the registered names, bad cells are file:line errors.
#include <gtest/gtest.h>

#include <set>

#include "core/common/error.hpp"
#include "core/cost/calibration.hpp"
#include "core/cost/fit_family.hpp"
#include "core/cost/profile_samples.hpp"

namespace parasol::cost {
namespace {

using plan::Op;
using plan::OpKind;

Op gemm(int64_t m, int64_t n, int64_t k) {
  Op o;
  o.kind = OpKind::kGemm;
  o.name = "L0.mlp.down";
  o.layer = 0;
  o.dtype = DType::kFp32;
  o.m = m, o.n = n, o.k = k, o.tokens = m;
  o.flops = 2.0 * m * n * k;
  o.bytes = 4.0 * (m * k + k * n + m * n);
  return o;
}

Op attention(std::vector<int64_t> q, std::vector<int64_t> ctx) {
  Op o;
  o.kind = OpKind::kAttention;
  o.name = "L1.attn.core";
  o.layer = 1;
  o.dtype = DType::kFp32;
  o.heads = 8, o.kv_heads = 2, o.head_dim = 64, o.v_head_dim = 64;
  for (int64_t x : q) o.tokens += x;
  o.q_lens = std::move(q);
  o.ctx_lens = std::move(ctx);
  o.flops = 1e6, o.bytes = 2e5;
  return o;
}

Op elementwise(OpKind kind, int64_t tokens, int64_t n) {
  Op o;
  o.kind = kind;
  o.name = "L0.attn_norm";
  o.layer = 0;
  o.dtype = DType::kFp32;
  o.n = n, o.tokens = tokens;
  o.flops = 4.0 * tokens * n, o.bytes = 16.0 * tokens * n;
  return o;
}

std::string profile(const std::vector<std::pair<Op, double>>& ops, ProfileContext ctx = {}) {
  std::string t = profile_csv_header() + "\n";
  for (const auto& [op, time] : ops) t += profile_csv_row(op, "cpu-host", time, ctx) + "\n";
  return t;
}

TEST(ProfileSamples, RowsReadBackAsTheOpsTheProfilerWrote) {
  Op moe = gemm(12, 64, 32);
  moe.batch = 3;
  moe.expert_tokens = {5, 0, 7};
  const std::vector<std::pair<Op, double>> ops = {{gemm(7, 512, 1536), 1.5e-4},
                                                 {attention({1, 1, 37}, {17, 25, 37}), 3e-4},
                                                 {elementwise(OpKind::kRmsNorm, 39, 512), 2e-5},
                                                 {moe, 4e-5}};
  const auto rows = read_profile(CsvTable::parse(profile(ops, {2, 41, 0.0123}), "p.csv"));
  ASSERT_EQ(rows.size(), ops.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const Op& a = ops[i].first;
    const Op& b = rows[i].op;
    EXPECT_EQ(b.kind, a.kind);
    EXPECT_EQ(b.name, a.name);
    EXPECT_EQ(b.layer, a.layer);
    EXPECT_EQ(b.dtype, a.dtype);
    EXPECT_EQ(std::make_tuple(b.m, b.n, b.k, b.batch, b.tokens), std::make_tuple(a.m, a.n, a.k, a.batch, a.tokens));
    EXPECT_EQ(std::make_tuple(b.heads, b.kv_heads, b.head_dim, b.v_head_dim),
              std::make_tuple(a.heads, a.kv_heads, a.head_dim, a.v_head_dim));
    EXPECT_EQ(b.q_lens, a.q_lens);
    EXPECT_EQ(b.ctx_lens, a.ctx_lens);
    EXPECT_EQ(b.expert_tokens, a.expert_tokens);
    EXPECT_DOUBLE_EQ(b.flops, a.flops);
    EXPECT_DOUBLE_EQ(b.bytes, a.bytes);
    EXPECT_DOUBLE_EQ(rows[i].time_s, ops[i].second);
    EXPECT_EQ(rows[i].gpu, "cpu-host");
    EXPECT_EQ(rows[i].rank, 2);
    EXPECT_EQ(rows[i].iteration, 41);
    EXPECT_DOUBLE_EQ(rows[i].step_s, 0.0123);
    EXPECT_EQ(rows[i].where, "p.csv:" + std::to_string(i + 2));
  }
}

TEST(ProfileSamples, ACalibrationTableReadsTheExtendedFormatAndCoversItsShapes) {
  const Op g = gemm(8, 512, 512);
  const std::string text = profile({{g, 1e-4}, {gemm(64, 512, 512), 4e-4}, {attention({3}, {3}), 1e-5}});
  const CalibrationTable t = CalibrationTable::parse_csv(text, "p.csv");
  EXPECT_EQ(t.size(), 3u);
  auto hit = t.lookup(g, "cpu-host");
  ASSERT_TRUE(hit.has_value());
  EXPECT_DOUBLE_EQ(*hit, 1e-4);
  // The header keeps the calibration columns first, so old readers that index by position still work.
  EXPECT_EQ(profile_csv_header().rfind(CalibrationTable::csv_header() + ",", 0), 0u);
  // A column that is neither stays an error.
  EXPECT_THROW(CalibrationTable::parse_csv("gpu,kind,dtype,time_s,colour\n", "c.csv"), ConfigError);
}

TEST(ProfileSamples, AnOlderProfileWithoutTheProfileColumnsStillReads) {
  std::string text = CalibrationTable::csv_header() + "\n";
  for (const Op& op : {gemm(8, 64, 64), attention({1}, {9}), elementwise(OpKind::kRope, 8, 64)})
    text += CalibrationTable::csv_row(CalibrationTable::row_for(op, "cpu", 1e-5)) + "\n";
  const auto rows = read_profile(CsvTable::parse(text, "old.csv"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].rank, -1);
  EXPECT_EQ(rows[0].iteration, -1);
  EXPECT_TRUE(rows[1].op.q_lens.empty());
  // The attention row lacks the per-sequence lengths its model needs: no Sample; the others give theirs.
  const auto samples = profile_samples(rows);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].family, "gemm");
  EXPECT_EQ(samples[1].family, "elementwise");
}

TEST(ProfileSamples, RepeatsOfAShapeBecomeOneSampleAtTheirMedianTime) {
  const std::vector<std::pair<Op, double>> ops = {
      {gemm(8, 512, 512), 3e-4},  {gemm(8, 512, 512), 1e-4},  {gemm(16, 512, 512), 7e-4},
      {gemm(8, 512, 512), 9e-4},  {gemm(8, 512, 512), 2e-4},  {gemm(16, 512, 512), 5e-4},
      {gemm(8, 512, 512), 1e-3}};  // m = 8: 1, 2, 3, 9, 10 (x1e-4) -> 3e-4; m = 16: 5, 7 -> 6e-4
  const auto samples = profile_samples(CsvTable::parse(profile(ops), "p.csv"));
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_DOUBLE_EQ(samples[0].time_s, 3e-4);
  EXPECT_DOUBLE_EQ(samples[1].time_s, 6e-4);
  EXPECT_EQ(samples[0].where, "p.csv:2");
  EXPECT_EQ(samples[1].where, "p.csv:4");
  for (const auto& s : samples) {
    EXPECT_EQ(s.gpu, "cpu-host");
    EXPECT_EQ(s.num_gpus, 1);
    ASSERT_EQ(s.ops.size(), 1u);
    EXPECT_EQ(s.key, profile_key(s.ops[0]));
  }
  EXPECT_EQ(samples[0].ops[0].m, 8);
}

TEST(ProfileSamples, KeysSeparateWhatTheCostModelCanTellApart) {
  EXPECT_EQ(profile_key(gemm(8, 512, 512)), profile_key(gemm(8, 512, 512)));
  EXPECT_NE(profile_key(gemm(8, 512, 512)), profile_key(gemm(9, 512, 512)));
  EXPECT_NE(profile_key(attention({1, 1}, {5, 9})), profile_key(attention({1, 1}, {5, 10})));
  Op unfused = elementwise(OpKind::kRmsNorm, 8, 512);
  unfused.bytes /= 2;  // the same shape with and without the fused residual add: different traffic
  EXPECT_NE(profile_key(unfused), profile_key(elementwise(OpKind::kRmsNorm, 8, 512)));
  // The op's name is not part of it: the same shape in every layer is one shape.
  Op renamed = gemm(8, 512, 512);
  renamed.name = "L3.mlp.down";
  EXPECT_EQ(profile_key(renamed), profile_key(gemm(8, 512, 512)));
}

TEST(ProfileSamples, FamiliesAreTheRegisteredNames) {
  Op gate = gemm(8, 8, 64);
  gate.kind = OpKind::kMoeGate;
  Op mla = attention({1, 1}, {4, 8});
  mla.kind = OpKind::kMlaAttention;
  Op ar;
  ar.kind = OpKind::kAllReduce;
  ar.comm_bytes = 1e6;
  EXPECT_EQ(profile_family(gemm(8, 64, 64)), "gemm");
  EXPECT_EQ(profile_family(gate), "gemm");
  EXPECT_EQ(profile_family(attention({1, 1, 1}, {3, 4, 5})), "generation_attention");
  EXPECT_EQ(profile_family(attention({1, 12}, {30, 12})), "context_attention");  // a chunk-mixed batch
  EXPECT_EQ(profile_family(mla), "generation_attention");
  for (OpKind k : {OpKind::kRmsNorm, OpKind::kRope, OpKind::kKvAppend, OpKind::kActivation, OpKind::kEmbedding,
                   OpKind::kMoeDispatch, OpKind::kMoeCombine, OpKind::kSample})
    EXPECT_EQ(profile_family(elementwise(k, 4, 64)), "elementwise") << plan::to_string(k);
  EXPECT_EQ(profile_family(ar), "");
  // Every name given is one `parasol calibrate` can fit (once the family owners have registered theirs).
  if (families().empty()) GTEST_SKIP() << "no op family is registered in this build yet";
  for (const char* f : {"gemm", "elementwise", "context_attention", "generation_attention"})
    EXPECT_NE(find_family(f), nullptr) << f << " is not a registered family";
}

void expect_error_at(const std::string& text, int line, const std::string& key) {
  try {
    read_profile(CsvTable::parse(text, "bad.csv"));
    ADD_FAILURE() << "no error for:\n" << text;
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.file(), "bad.csv") << e.what();
    EXPECT_EQ(e.line(), line) << e.what();
    EXPECT_EQ(e.key_path(), key) << e.what();
  }
}

TEST(ProfileSamples, BadCellsAreConfigErrorsWithFileLineAndColumn) {
  const std::string good = profile({{attention({1, 4}, {9, 4}), 1e-5}});
  const std::string header = good.substr(0, good.find('\n') + 1);
  std::string row = good.substr(header.size());
  row.pop_back();
  auto replace = [](std::string s, const std::string& from, const std::string& to) {
    return s.replace(s.find(from), from.size(), to);
  };
  expect_error_at(header + "# a comment\n" + replace(row, ",1 4,", ",1 x,") + "\n", 3, "q_lens");
  expect_error_at(header + replace(row, ",9 4,", ",9,") + "\n", 2, "ctx_lens");
  expect_error_at(header + row + "\n" + replace(row, "attention", "attenshun") + "\n", 3, "kind");
  expect_error_at(header + replace(row, "fp32", "fp33") + "\n", 2, "dtype");
  expect_error_at(header + replace(row, ",1.0000000000000001e-05,", ",0,") + "\n", 2, "time_s");
  expect_error_at(header + replace(row, ",1.0000000000000001e-05,", ",fast,") + "\n", 2, "time_s");
}

}  // namespace
}  // namespace parasol::cost

// The moe family's reader (core/cost/family_gemm.cpp): AIConfigurator moe_perf rows become the expert-compute ops of
// EP rank 0 under the collector's routing. Properties: the power-law sampler never gives an expert more pairs than
// there are tokens (a token picks an expert once) and puts the heaviest EP rank on rank 0; the earlier collector's
// table (vLLM 0.14) keeps its unclamped sampler; Nemotron-3's non-gated experts have an up GEMM of inter columns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/cost/fit_family.hpp"

namespace parasol::cost {
namespace {

const Family& moe_family() {
  const Family* f = find_family("moe");
  EXPECT_NE(f, nullptr);
  return *f;
}

// One moe_perf row: version, kernel_source, dtype, tokens, hidden, inter, topk, experts, tp, ep, distribution.
std::string row(const std::string& version, int64_t tokens, int64_t hidden, int64_t inter, int64_t topk,
                int64_t experts, int64_t tp, int64_t ep, const std::string& dist) {
  return "VLLM," + version + ",GPU,moe,vllm_unquantizedfusedmoe_triton_tritonexperts,bfloat16," +
         std::to_string(tokens) + "," + std::to_string(hidden) + "," + std::to_string(inter) + "," +
         std::to_string(topk) + "," + std::to_string(experts) + "," + std::to_string(tp) + "," + std::to_string(ep) +
         "," + dist + ",0.1\n";
}

std::vector<Sample> read(const std::string& rows) {
  const std::string text =
      "framework,version,device,op_name,kernel_source,moe_dtype,num_tokens,hidden_size,inter_size,topk,num_experts,"
      "moe_tp_size,moe_ep_size,distribution,latency\n" +
      rows;
  std::vector<Sample> out;
  moe_family().read(CsvTable::parse(text, "moe_perf.csv"), "h100-sxm", out);
  return out;
}

// The grouped gate_up GEMMs of a sample (one per routing draw).
std::vector<const plan::Op*> gate_ups(const Sample& s) {
  std::vector<const plan::Op*> v;
  for (const auto& op : s.ops)
    if (op.name == "moe.experts.gate_up") v.push_back(&op);
  return v;
}

TEST(MoeSamples, PowerLawGivesNoExpertMoreThanEveryTokenAndRankZeroTheMostPairs) {
  // Few tokens over many experts (the sampler's [0.01, 2] branch) and many tokens over few experts (its heavy tail
  // would put more than num_tokens pairs on the first expert before the clamp).
  struct Case {
    int64_t tokens, topk, experts, ep;
  };
  for (const Case c : {Case{1, 22, 512, 8}, Case{4, 8, 256, 32}, Case{16384, 2, 8, 1}, Case{4096, 2, 8, 2}}) {
    for (const char* dist : {"power_law_1.01", "power_law_1.2"}) {
      const auto samples = read(row("0.24.0", c.tokens, 2048, 1024, c.topk, c.experts, 1, c.ep, dist));
      ASSERT_EQ(samples.size(), 1u);
      const auto ops = gate_ups(samples[0]);
      ASSERT_EQ(ops.size(), 5u);  // the collector averages 5 draws
      for (const plan::Op* op : ops) {
        ASSERT_EQ(op->expert_tokens.size(), static_cast<size_t>(c.experts / c.ep));
        int64_t pairs = 0;
        for (int64_t v : op->expert_tokens) {
          EXPECT_GE(v, 0);
          EXPECT_LE(v, c.tokens);
          pairs += v;
        }
        EXPECT_EQ(pairs, op->m);
        // Rank 0 holds the heaviest EP group: at least its share of all tokens x topk pairs.
        EXPECT_GE(pairs * c.ep, c.tokens * c.topk);
      }
    }
  }
}

TEST(MoeSamples, OneTokenRoutesToTopkDistinctExperts) {
  // ep 1: every expert is local, so the draw's pairs are exactly one per chosen expert.
  const auto samples = read(row("0.24.0", 1, 2048, 1024, 22, 512, 1, 1, "power_law_1.01"));
  ASSERT_EQ(samples.size(), 1u);
  for (const plan::Op* op : gate_ups(samples[0])) {
    EXPECT_EQ(op->m, 22);
    EXPECT_EQ(std::count(op->expert_tokens.begin(), op->expert_tokens.end(), int64_t{1}), 22);
  }
}

TEST(MoeSamples, NemotronExpertsAreNotGatedExceptInTheEarlierCollectorsTable) {
  const int64_t tp = 2;
  // Nemotron-3 Nano's shape (hidden 2688, inter 1856, topk 6, 128 experts) and a gated one of the same size.
  const auto nemotron = read(row("0.24.0", 64, 2688, 1856, 6, 128, tp, 1, "balanced"));
  const auto gated = read(row("0.24.0", 64, 2688, 1856, 8, 128, tp, 1, "balanced"));
  const auto early = read(row("0.14.0", 64, 2688, 1856, 6, 128, tp, 1, "balanced"));
  ASSERT_EQ(nemotron.size(), 1u);
  ASSERT_EQ(gated.size(), 1u);
  ASSERT_EQ(early.size(), 1u);
  EXPECT_EQ(gate_ups(nemotron[0])[0]->n, 1856 / tp);
  EXPECT_EQ(gate_ups(gated[0])[0]->n, 2 * 1856 / tp);
  EXPECT_EQ(gate_ups(early[0])[0]->n, 2 * 1856 / tp);
}

}  // namespace
}  // namespace parasol::cost

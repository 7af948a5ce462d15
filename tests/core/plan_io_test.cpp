// Plan YAML round trip: load(to_yaml(p)) reproduces every field, for dense, MoE/MLA and disaggregated plans; bad
// plan files are ConfigErrors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/plan/placement.hpp"
#include "core/plan/plan_io.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/model.hpp"
#include "plan_fixtures.hpp"

namespace parasol::plan {
namespace {

using testing::shipped_gpu;
using testing::shipped_model;
using testing::test_cluster;

void expect_same(const Plan& a, const Plan& b) {
  EXPECT_EQ(a.gpu_type, b.gpu_type);
  EXPECT_EQ(a.cluster_name, b.cluster_name);
  EXPECT_EQ(a.weight_dtype, b.weight_dtype);
  EXPECT_EQ(a.kv_dtype, b.kv_dtype);
  EXPECT_EQ(a.routing, b.routing);
  EXPECT_EQ(spec::to_json(a.model).dump(), spec::to_json(b.model).dump());
  EXPECT_EQ(a.model.rms_eps, b.model.rms_eps);
  EXPECT_EQ(a.model.rope_scaling.factor, b.model.rope_scaling.factor);
  ASSERT_EQ(a.pools.size(), b.pools.size());
  for (size_t i = 0; i < a.pools.size(); ++i) {
    const auto &x = a.pools[i], &y = b.pools[i];
    EXPECT_EQ(x.role, y.role);
    EXPECT_EQ(x.config, y.config);
    EXPECT_EQ(x.gpu_type, y.gpu_type);
    EXPECT_EQ(x.placement, y.placement);
    EXPECT_EQ(x.stage_layers, y.stage_layers);
    EXPECT_EQ(x.max_batch_tokens, y.max_batch_tokens);
    EXPECT_EQ(x.max_batch_seqs, y.max_batch_seqs);
    EXPECT_EQ(x.memory.capacity_bytes, y.memory.capacity_bytes);  // exact: 17 significant digits
    EXPECT_EQ(x.memory.usable_bytes, y.memory.usable_bytes);
    EXPECT_EQ(x.memory.weight_bytes, y.memory.weight_bytes);
    EXPECT_EQ(x.memory.activation_bytes, y.memory.activation_bytes);
    EXPECT_EQ(x.memory.reserve_bytes, y.memory.reserve_bytes);
    EXPECT_EQ(x.memory.kv_bytes, y.memory.kv_bytes);
    EXPECT_EQ(x.memory.kv_tokens, y.memory.kv_tokens);
    EXPECT_EQ(x.memory.kv_block_tokens, y.memory.kv_block_tokens);
  }
}

TEST(PlanIo, YamlRoundTripIsLossless) {
  const auto cluster = test_cluster(shipped_gpu("h200-sxm"), 2, 8);
  PlanOptions zipf;
  zipf.routing.kind = "zipf";
  zipf.routing.zipf_s = 1.37;
  zipf.routing.seed = 99;
  std::vector<Plan> plans;
  ParallelConfig c;
  c.tp = 2, c.pp = 3, c.dp = 2;
  plans.push_back(make_plan(shipped_model("llama-3.1-70b"), cluster, "", c).plan);
  c = ParallelConfig{};
  c.tp = 2, c.attn_dp = 4, c.ep = 8;
  plans.push_back(make_plan(shipped_model("deepseek-v3"), cluster, "", c, zipf).plan);
  DisaggConfig d;
  d.prefill.tp = 4;
  d.decode.tp = 2, d.decode.dp = 3;
  plans.push_back(make_plan(shipped_model("mixtral-8x7b"), cluster, "", d).plan);
  for (const auto& p : plans) {
    const std::string text = to_yaml(p);
    const Plan back = load_plan(yaml::load_string(text, "plan.yaml"));
    expect_same(p, back);
    EXPECT_EQ(to_yaml(back), text);
    EXPECT_EQ(to_json(back).dump(), to_json(p).dump());
  }
}

TEST(PlanIo, BadPlansAreConfigErrors) {
  ParallelConfig c;
  c.tp = 2;
  const auto p = make_plan(shipped_model("llama-3.1-8b"), test_cluster(shipped_gpu("h100-sxm"), 1, 8), "", c).plan;
  const std::string good = to_yaml(p);
  auto load = [](const std::string& t) { return load_plan(yaml::load_string(t, "plan.yaml")); };
  EXPECT_NO_THROW(load(good));
  auto replace = [&good](const std::string& from, const std::string& to) {
    std::string t = good;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  EXPECT_THROW(load(replace("schema: parasol.plan/1", "schema: parasol.plan/2")), ConfigError);
  EXPECT_THROW(load(replace("role: mixed", "role: mixed\n    colour: red")), ConfigError);
  EXPECT_THROW(load(replace("[0, 1]", "[0, 1, 2]")), ConfigError);              // wrong rank count
  EXPECT_THROW(load(replace("[[0, 32]]", "[[0, 31]]")), ConfigError);           // layers not covered
  EXPECT_THROW(load(replace("layout: tp2", "layout: tp4")), ConfigError);       // label disagrees
}

// A plan's pools must sit on GPUs of the type they are planned for: an H200 pool moved onto H100s is an error naming
// the GPU and both types (it would otherwise run at H200 speed on H100s).
TEST(PlanIo, APoolPlacedOnGpusOfAnotherTypeIsAConfigError) {
  const std::string data = PARASOL_DATA_DIR;
  const spec::Model m = spec::load_model_file(data + "/scenarios/models/llama-3.1-8b.yaml");
  const spec::Cluster c = spec::load_cluster_file(data + "/topologies/clusters/h100-h200-hetero.yaml");
  ParallelConfig pc;
  pc.tp = 2;
  MadePlan made = make_plan(m, c, "h200-sxm", pc);
  ASSERT_TRUE(made.feasibility.ok);
  EXPECT_NO_THROW(check_plan_fits(made.plan, "p.yaml", m, c, "h200-sxm", "s.yaml"));
  int h100 = -1;
  for (int g = 0; g < c.gpu_count() && h100 < 0; ++g)
    if (c.graph[c.gpus[static_cast<size_t>(g)]].gpu_type == "h100-sxm") h100 = g;
  ASSERT_GE(h100, 0);
  made.plan.pools[0].placement[0][0] = h100;
  try {
    check_plan_fits(made.plan, "p.yaml", m, c, "h200-sxm", "s.yaml");
    FAIL() << "a pool on a GPU of another type was accepted";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("placement"), std::string::npos) << what;
    EXPECT_NE(what.find("h100-sxm"), std::string::npos) << what;
    EXPECT_NE(what.find("h200-sxm"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace parasol::plan

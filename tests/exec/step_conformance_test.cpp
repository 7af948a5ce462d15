// DESIGN contract 2: the executor runs exactly the ops of build_step's Step. For every model family (the builtin test
// models and the model files scenarios/models/tiny-*.yaml) and layout (TP 2 / 4, PP 2, EP 2 / 4, TP2 x PP2,
// attention-DP 2 + EP 2, both MoE forms), over prefill, chunked-prefill, mixed and decode iterations, the ops each rank
// ran (kind, name, sharded m / n / k, tokens, group, peer) are build_step's program for that rank, computed here
// independently. Routed-expert GEMMs run on the tokens the real router chose: their row counts are conserved instead
// (stage tokens x top_k x moe_tp, on both sides). And a Step that is not what the executor runs is refused.
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "core/common/error.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/feasibility.hpp"
#include "exec/generate.hpp"
#include "exec/test_models.hpp"

namespace parasol::exec {
namespace {

plan::ParallelConfig layout(int tp, int pp, int ep, int adp) {
  plan::ParallelConfig c;
  c.tp = tp, c.pp = pp, c.ep = ep, c.attn_dp = adp;
  return c;
}

plan::Plan plan_of(const spec::Model& m, const plan::ParallelConfig& c) {
  plan::Plan p;
  p.model = m;
  plan::Pool pool;
  pool.config = c;
  pool.stage_layers = plan::split_layers(m.layers, c.pp);
  p.pools.push_back(pool);
  p.weight_dtype = p.kv_dtype = DType::kFp32;
  return p;
}

spec::Model model_named(const std::string& name) {
  if (name.rfind("tiny-", 0) == 0)
    return spec::load_model_file(std::string(PARASOL_DATA_DIR) + "/scenarios/models/" + name + ".yaml");
  return test_model(name);
}

// Three iterations that keep the KV cache consistent: (1) prefill of seqs 0 and 1, first chunk of seq 2 (not
// sampled); (2) mixed: decodes of 0 and 1, last chunk of seq 2 over its cached chunk; (3) decodes of 0, 1, 2.
std::vector<StepRequest> iterations(int adp, int64_t vocab) {
  auto toks = [vocab](int n, int salt) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 37 + salt * 11 + 5) % vocab));
    return t;
  };
  auto seq = [&](int64_t id, int n, int64_t ctx, bool sample) {
    SeqInput s;
    s.seq_id = id;
    s.tokens = toks(n, static_cast<int>(id + ctx));
    s.context = ctx;
    s.attn_group = static_cast<int>(id % adp);
    s.sample = sample;
    return s;
  };
  std::vector<StepRequest> it(3);
  it[0].seqs = {seq(0, 7, 0, true), seq(1, 5, 0, true), seq(2, 4, 0, false)};
  it[1].seqs = {seq(0, 1, 7, true), seq(1, 1, 5, true), seq(2, 5, 4, true)};
  it[2].seqs = {seq(0, 1, 8, true), seq(1, 1, 6, true), seq(2, 1, 9, true)};
  return it;
}

plan::Batch batch_of(const StepRequest& r) {
  plan::Batch b;
  for (const auto& s : r.seqs)
    b.seqs.push_back({s.seq_id, static_cast<int64_t>(s.tokens.size()), s.context, s.attn_group, s.sample});
  return b;
}

// ops[step][rank]: what each rank ran.
std::vector<std::vector<std::vector<OpRecord>>> run_ranks(const spec::Model& m, const plan::ParallelConfig& c,
                                                          const std::vector<StepRequest>& steps) {
  SyntheticWeights weights(5);
  std::vector<std::vector<std::vector<OpRecord>>> out(steps.size(),
                                                      std::vector<std::vector<OpRecord>>(c.instance_size()));
  std::mutex mu;
  run_local(c.instance_size(), 30.0, [&](int rank, Communicator& comm) {
    auto be = make_cpu_backend({0, 1});
    ModelRunner runner(m, RankLayout::make(m, c, {}, rank), *be, comm, weights, RunnerOptions{});
    for (size_t i = 0; i < steps.size(); ++i) {
      StepResult r = runner.step(steps[i]);
      std::lock_guard<std::mutex> lk(mu);
      out[i][rank] = std::move(r.ops);
    }
  });
  return out;
}

bool routed(const plan::Op& op) {
  return op.name.find("moe.experts.") != std::string::npos;
}

void check_family(const std::string& name, const std::vector<plan::ParallelConfig>& layouts) {
  const spec::Model m = model_named(name);
  for (const auto& c : layouts) {
    SCOPED_TRACE(name + " " + c.label());
    const auto steps = iterations(c.attn_dp, m.vocab);
    const auto ran = run_ranks(m, c, steps);
    const plan::Plan p = plan_of(m, c);
    for (size_t i = 0; i < steps.size(); ++i) {
      const plan::Batch batch = batch_of(steps[i]);
      const plan::Step step = plan::build_step(p, 0, batch);
      // routed rows per (stage, layer): executor and planner
      std::map<std::pair<int, int>, int64_t> exec_rows, plan_rows;
      for (int r = 0; r < c.instance_size(); ++r) {
        SCOPED_TRACE("iteration " + std::to_string(i) + " rank " + std::to_string(r));
        const auto& want = step.ranks[static_cast<size_t>(r)].ops;
        const auto& got = ran[i][static_cast<size_t>(r)];
        ASSERT_EQ(got.size(), want.size());
        for (size_t k = 0; k < want.size(); ++k) {
          const plan::Op &a = got[k].op, &b = want[k];
          SCOPED_TRACE("op " + std::to_string(k) + " " + b.name);
          EXPECT_EQ(a.kind, b.kind);
          EXPECT_EQ(a.name, b.name);
          EXPECT_EQ(a.layer, b.layer);
          EXPECT_EQ(a.n, b.n);
          EXPECT_EQ(a.k, b.k);
          EXPECT_EQ(a.group, b.group);
          EXPECT_EQ(a.peer, b.peer);
          if (routed(b)) {
            if (b.name.ends_with("gate_up")) {
              exec_rows[{c.stage_of(r), b.layer}] += a.m;
              plan_rows[{c.stage_of(r), b.layer}] += b.m;
            }
          } else {
            EXPECT_EQ(a.m, b.m);
            EXPECT_EQ(a.tokens, b.tokens);
            EXPECT_EQ(a.q_lens, b.q_lens);
            EXPECT_EQ(a.ctx_lens, b.ctx_lens);
          }
        }
      }
      for (const auto& [key, rows] : plan_rows) {
        const int64_t want = batch.tokens() * m.moe.top_k * c.moe_tp();  // every stage sees the whole batch
        EXPECT_EQ(rows, want) << "planner, layer " << key.second;
        EXPECT_EQ(exec_rows[key], want) << "executor, layer " << key.second;
      }
    }
  }
}

const std::vector<plan::ParallelConfig> kDense = {layout(1, 1, 1, 1), layout(2, 1, 1, 1), layout(4, 1, 1, 1),
                                                  layout(1, 2, 1, 1), layout(2, 2, 1, 1), layout(2, 1, 1, 2)};
const std::vector<plan::ParallelConfig> kMoe = {layout(1, 1, 1, 1), layout(2, 1, 1, 1), layout(4, 1, 1, 1),
                                                layout(1, 2, 1, 1), layout(2, 1, 2, 1), layout(4, 1, 4, 1),
                                                layout(4, 1, 2, 1), layout(2, 2, 1, 1), layout(1, 1, 2, 2),
                                                layout(2, 1, 2, 2), layout(1, 1, 1, 2)};

TEST(ExecStep, LlamaRanksRunExactlyBuildStepsPrograms) {
  check_family("test-llama", kDense);
  check_family("tiny-llama", kDense);
}

TEST(ExecStep, MixtralRanksRunExactlyBuildStepsPrograms) {
  check_family("test-mixtral", kMoe);
  check_family("tiny-mixtral", kMoe);
}

TEST(ExecStep, DeepseekRanksRunExactlyBuildStepsPrograms) {
  check_family("test-deepseek", kMoe);
  check_family("tiny-deepseek", {layout(2, 1, 1, 1), layout(2, 1, 2, 1), layout(1, 2, 1, 1), layout(2, 1, 2, 2)});
}

TEST(ExecStep, AStepThatIsNotWhatTheExecutorRunsIsRefused) {
  const spec::Model m = test_model("test-llama");
  const plan::ParallelConfig c = layout(2, 1, 1, 1);
  plan::Plan other = plan_of(m, c);
  other.model.ffn = 2 * m.ffn;  // the Step's MLP GEMMs are wider than the weights the runner holds
  SyntheticWeights weights(5);
  std::vector<std::string> errors(2);
  EXPECT_THROW(run_local(2, 10.0,
                         [&](int rank, Communicator& comm) {
                           auto be = make_cpu_backend({0, 1});
                           RunnerOptions o;
                           o.plan = &other;
                           ModelRunner runner(m, RankLayout::make(m, c, {}, rank), *be, comm, weights, o);
                           try {
                             runner.step(iterations(1, m.vocab)[0]);
                           } catch (const Error& e) {
                             errors[static_cast<size_t>(rank)] = e.what();
                             throw;
                           }
                         }),
               Error);
  for (const auto& e : errors) {
    EXPECT_NE(e.find("executor vs Step"), std::string::npos) << e;
    EXPECT_NE(e.find("mlp.gate_up"), std::string::npos) << e;
  }
}

}  // namespace
}  // namespace parasol::exec

// Plan <-> YAML (`schema: parasol.plan/1`) and JSON (plan_io.hpp). The model is written with the parasol.model/1 keys
// and read back by spec::load_model, so the two schemas cannot drift apart.
#include "core/plan/plan_io.hpp"

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/model.hpp"

namespace parasol::plan {
namespace {

YAML::Node flow_seq() {
  YAML::Node n(YAML::NodeType::Sequence);
  n.SetStyle(YAML::EmitterStyle::Flow);
  return n;
}

YAML::Node model_yaml(const spec::Model& m) {
  YAML::Node n;
  n["schema"] = "parasol.model/1";
  n["name"] = m.name;
  n["architecture"] = m.architecture;
  n["hidden"] = m.hidden;
  n["layers"] = m.layers;
  n["heads"] = m.heads;
  n["kv_heads"] = m.kv_heads;
  n["head_dim"] = m.head_dim;
  n["ffn"] = m.ffn;
  n["vocab"] = m.vocab;
  n["max_position"] = m.max_position;
  n["tie_embeddings"] = m.tie_embeddings;
  n["qkv_bias"] = m.qkv_bias;
  n["qk_norm"] = m.qk_norm;
  n["rms_eps"] = m.rms_eps;
  n["rope_theta"] = m.rope_theta;
  const auto& r = m.rope_scaling;
  YAML::Node rs;
  rs["type"] = r.type;
  if (r.type != "none") {
    rs["factor"] = r.factor;
    rs["original_max_position"] = r.original_max_position;
    if (r.type == "llama3") {
      rs["low_freq_factor"] = r.low_freq_factor;
      rs["high_freq_factor"] = r.high_freq_factor;
    } else {
      rs["mscale"] = r.mscale;
      rs["mscale_all_dim"] = r.mscale_all_dim;
      rs["beta_fast"] = r.beta_fast;
      rs["beta_slow"] = r.beta_slow;
    }
  }
  n["rope_scaling"] = rs;
  n["attention"] = spec::to_string(m.attention);
  if (m.mla) {
    YAML::Node a;
    a["q_lora_rank"] = m.mla->q_lora_rank;
    a["kv_lora_rank"] = m.mla->kv_lora_rank;
    a["qk_nope_head_dim"] = m.mla->qk_nope_head_dim;
    a["qk_rope_head_dim"] = m.mla->qk_rope_head_dim;
    a["v_head_dim"] = m.mla->v_head_dim;
    n["mla"] = a;
  }
  if (m.is_moe()) {
    const auto& e = m.moe;
    YAML::Node x;
    x["num_experts"] = e.num_experts;
    x["top_k"] = e.top_k;
    x["num_shared_experts"] = e.num_shared_experts;
    x["expert_ffn"] = e.expert_ffn;
    x["first_k_dense"] = e.first_k_dense;
    x["layer_freq"] = e.layer_freq;
    x["scoring"] = e.scoring;
    x["norm_topk_prob"] = e.norm_topk_prob;
    x["n_group"] = e.n_group;
    x["topk_group"] = e.topk_group;
    x["routed_scaling_factor"] = e.routed_scaling_factor;
    n["moe"] = x;
  }
  n["weight_dtype"] = std::string(to_string(m.weight_dtype));
  n["kv_dtype"] = std::string(to_string(m.kv_dtype));
  n["act_dtype"] = std::string(to_string(m.act_dtype));
  return n;
}

YAML::Node memory_yaml(const MemoryBudget& b) {
  YAML::Node n;
  n["capacity_bytes"] = b.capacity_bytes;
  n["usable_bytes"] = b.usable_bytes;
  n["weight_bytes"] = b.weight_bytes;
  n["activation_bytes"] = b.activation_bytes;
  n["reserve_bytes"] = b.reserve_bytes;
  n["kv_bytes"] = b.kv_bytes;
  n["kv_tokens"] = b.kv_tokens;
  n["kv_block_tokens"] = b.kv_block_tokens;
  return n;
}

DType dtype_at(const yaml::Node& n) {
  auto d = parse_dtype(n.as_string());
  if (!d) n.fail("a dtype (fp32, bf16, fp16, fp8, int8, int4)");
  return *d;
}

}  // namespace

std::string to_yaml(const Plan& p) {
  YAML::Node root;
  root["schema"] = "parasol.plan/1";
  root["cluster"] = p.cluster_name;
  root["gpu_type"] = p.gpu_type;
  root["weight_dtype"] = std::string(to_string(p.weight_dtype));
  root["kv_dtype"] = std::string(to_string(p.kv_dtype));
  YAML::Node routing;
  routing["kind"] = p.routing.kind;
  routing["zipf_s"] = p.routing.zipf_s;
  routing["seed"] = p.routing.seed;
  root["routing"] = routing;
  root["model"] = model_yaml(p.model);
  for (const auto& pool : p.pools) {
    YAML::Node n;
    n["role"] = pool.role;
    n["layout"] = pool.config.label();
    YAML::Node c;
    c["tp"] = pool.config.tp;
    c["pp"] = pool.config.pp;
    c["dp"] = pool.config.dp;
    c["ep"] = pool.config.ep;
    c["attn_dp"] = pool.config.attn_dp;
    c.SetStyle(YAML::EmitterStyle::Flow);
    n["config"] = c;
    n["gpu_type"] = pool.gpu_type;
    n["max_batch_tokens"] = pool.max_batch_tokens;
    n["max_batch_seqs"] = pool.max_batch_seqs;
    YAML::Node stages = flow_seq();
    for (const auto& [a, b] : pool.stage_layers) {
      YAML::Node s = flow_seq();
      s.push_back(a);
      s.push_back(b);
      stages.push_back(s);
    }
    n["stage_layers"] = stages;
    n["memory"] = memory_yaml(pool.memory);
    YAML::Node placement;
    for (const auto& inst : pool.placement) {
      YAML::Node row = flow_seq();
      for (int g : inst) row.push_back(g);
      placement.push_back(row);
    }
    n["placement"] = placement.IsDefined() && placement.size() > 0 ? placement : flow_seq();
    root["pools"].push_back(n);
  }
  YAML::Emitter e;
  e << root;
  return std::string(e.c_str()) + "\n";
}

Plan load_plan(const yaml::Node& root) {
  root.allow_keys({"schema", "cluster", "gpu_type", "weight_dtype", "kv_dtype", "routing", "model", "pools"});
  root.at("schema").as_enum({"parasol.plan/1"});
  Plan p;
  p.cluster_name = root.str_or("cluster", "");
  p.gpu_type = root.str("gpu_type");
  p.model = spec::load_model(root.at("model"));
  p.weight_dtype = root.has("weight_dtype") ? dtype_at(root.at("weight_dtype")) : p.model.weight_dtype;
  p.kv_dtype = root.has("kv_dtype") ? dtype_at(root.at("kv_dtype")) : p.model.kv_dtype;
  if (auto r = root.get("routing")) {
    r->allow_keys({"kind", "zipf_s", "seed"});
    p.routing.kind = r->at("kind").as_enum({"uniform", "zipf"});
    p.routing.zipf_s = r->number_or("zipf_s", 1.0, 0.0, 100.0);
    p.routing.seed = static_cast<uint64_t>(r->integer_or("seed", 1, 0));
  }
  const auto pools = root.at("pools");
  if (!pools.is_seq() || pools.items().empty() || pools.items().size() > 2) pools.fail("a list of one or two pools");
  for (const auto& n : pools.items()) {
    n.allow_keys({"role", "layout", "config", "gpu_type", "max_batch_tokens", "max_batch_seqs", "stage_layers",
                  "memory", "placement"});
    Pool pool;
    pool.role = n.at("role").as_enum({"mixed", "prefill", "decode"});
    const auto c = n.at("config");
    c.allow_keys({"tp", "pp", "dp", "ep", "attn_dp"});
    auto& cfg = pool.config;
    cfg.tp = static_cast<int>(c.integer("tp", 1, 1 << 20));
    cfg.pp = static_cast<int>(c.integer("pp", 1, 1 << 20));
    cfg.dp = static_cast<int>(c.integer("dp", 1, 1 << 20));
    cfg.ep = static_cast<int>(c.integer_or("ep", 1, 1, 1 << 20));
    cfg.attn_dp = static_cast<int>(c.integer_or("attn_dp", 1, 1, 1 << 20));
    if (auto why = cfg.invalid_reason(); !why.empty()) c.fail("a consistent layout", why);
    if (auto l = n.get("layout"); l && l->as_string() != cfg.label()) l->fail("'" + cfg.label() + "' (as config says)");
    pool.gpu_type = n.str_or("gpu_type", "");
    pool.max_batch_tokens = n.integer_or("max_batch_tokens", pool.max_batch_tokens, 1);
    pool.max_batch_seqs = n.integer_or("max_batch_seqs", pool.max_batch_seqs, 1);
    const auto stages = n.at("stage_layers");
    int64_t next = 0;
    for (const auto& s : stages.items()) {
      const auto ab = s.items();
      if (ab.size() != 2) s.fail("[first, last+1]");
      const int64_t a = ab[0].as_int(0), b = ab[1].as_int(0);
      if (a != next || b <= a) s.fail("a layer range starting at " + std::to_string(next));
      pool.stage_layers.emplace_back(a, b);
      next = b;
    }
    if (static_cast<int>(pool.stage_layers.size()) != cfg.pp || next != p.model.layers)
      stages.fail(std::to_string(cfg.pp) + " ranges covering layers 0.." + std::to_string(p.model.layers));
    if (auto m = n.get("memory")) {
      m->allow_keys({"capacity_bytes", "usable_bytes", "weight_bytes", "activation_bytes", "reserve_bytes", "kv_bytes",
                     "kv_tokens", "kv_block_tokens"});
      auto& b = pool.memory;
      b.capacity_bytes = m->number_or("capacity_bytes", 0, 0);
      b.usable_bytes = m->number_or("usable_bytes", 0, 0);
      b.weight_bytes = m->number_or("weight_bytes", 0, 0);
      b.activation_bytes = m->number_or("activation_bytes", 0, 0);
      b.reserve_bytes = m->number_or("reserve_bytes", 0, 0);
      b.kv_bytes = m->number_or("kv_bytes", 0, -1e308);
      b.kv_tokens = m->integer_or("kv_tokens", 0, 0);
      b.kv_block_tokens = m->integer_or("kv_block_tokens", 16, 1);
    }
    const auto placement = n.at("placement");
    const auto rows = placement.items();
    if (static_cast<int>(rows.size()) != cfg.dp) placement.fail("one row per instance (" + std::to_string(cfg.dp) + ")");
    for (const auto& row : rows) {
      std::vector<int> gpus;
      for (const auto& g : row.items()) gpus.push_back(static_cast<int>(g.as_int(0, 1 << 30)));
      if (static_cast<int>(gpus.size()) != cfg.instance_size())
        row.fail(std::to_string(cfg.instance_size()) + " GPU indices (one per rank)");
      pool.placement.push_back(std::move(gpus));
    }
    p.pools.push_back(std::move(pool));
  }
  return p;
}

Plan load_plan_file(const std::string& path) { return load_plan(yaml::load_file(path)); }

nlohmann::json to_json(const Plan& p) {
  using nlohmann::json;
  json j;
  j["schema"] = "parasol.plan/1";
  j["cluster"] = p.cluster_name;
  j["gpu_type"] = p.gpu_type;
  j["model"] = p.model.name;
  j["weight_dtype"] = std::string(to_string(p.weight_dtype));
  j["kv_dtype"] = std::string(to_string(p.kv_dtype));
  j["routing"] = {{"kind", p.routing.kind}, {"zipf_s", p.routing.zipf_s}, {"seed", p.routing.seed}};
  for (const auto& pool : p.pools) {
    const auto& b = pool.memory;
    j["pools"].push_back(
        {{"role", pool.role},
         {"layout", pool.config.label()},
         {"config",
          {{"tp", pool.config.tp}, {"pp", pool.config.pp}, {"dp", pool.config.dp}, {"ep", pool.config.ep},
           {"attn_dp", pool.config.attn_dp}}},
         {"gpu_type", pool.gpu_type},
         {"gpus", pool.config.total_gpus()},
         {"max_batch_tokens", pool.max_batch_tokens},
         {"max_batch_seqs", pool.max_batch_seqs},
         {"stage_layers", pool.stage_layers},
         {"memory",
          {{"capacity_bytes", b.capacity_bytes}, {"usable_bytes", b.usable_bytes}, {"weight_bytes", b.weight_bytes},
           {"activation_bytes", b.activation_bytes}, {"reserve_bytes", b.reserve_bytes}, {"kv_bytes", b.kv_bytes},
           {"kv_tokens", b.kv_tokens}, {"kv_block_tokens", b.kv_block_tokens}}},
         {"placement", pool.placement}});
  }
  return j;
}

void check_plan_fits(const Plan& plan, const std::string& plan_file, const spec::Model& model,
                     const spec::Cluster& cluster, const std::string& gpu_type, const std::string& scenario_file) {
  const std::string in = " (scenario " + scenario_file + ")";
  auto fail = [&](const std::string& key, const std::string& expected, const std::string& found) {
    throw ConfigError(plan_file, 0, 0, key, expected + in, "a plan for " + found);
  };
  const spec::Model& m = plan.model;
  if (m.name != model.name) fail("model", "the scenario's model '" + model.name + "'", "'" + m.name + "'");
  auto shape = [](const spec::Model& x) {
    return std::to_string(x.layers) + " layers, hidden " + std::to_string(x.hidden) + ", " + std::to_string(x.heads) +
           "/" + std::to_string(x.kv_heads) + " heads of " + std::to_string(x.head_dim) + ", FFN " +
           std::to_string(x.ffn) + ", vocabulary " + std::to_string(x.vocab) + ", " + std::to_string(x.moe.num_experts) +
           " experts";
  };
  if (shape(m) != shape(model))
    fail("model", "model '" + model.name + "' as the scenario has it (" + shape(model) + ")", "one of " + shape(m));
  if (plan.cluster_name != cluster.name)
    fail("cluster", "the scenario's cluster '" + cluster.name + "'", "cluster '" + plan.cluster_name + "'");
  if (!gpu_type.empty() && plan.gpu_type != gpu_type)
    fail("gpu_type", "the scenario's GPU type '" + gpu_type + "'", "GPU type '" + plan.gpu_type + "'");
  for (const auto& pool : plan.pools) {
    const std::string& type = pool.gpu_type.empty() ? plan.gpu_type : pool.gpu_type;
    if (!cluster.gpu_types.count(type))
      fail("gpu_type", "a GPU type of cluster '" + cluster.name + "'", "GPU type '" + type + "'");
    for (const auto& inst : pool.placement)
      for (int g : inst) {
        if (g < 0 || g >= cluster.gpu_count())
          fail("placement", "GPUs 0.." + std::to_string(cluster.gpu_count() - 1) + " of cluster '" + cluster.name + "'",
               "GPU " + std::to_string(g));
        // A pool runs at the speed of the GPUs it is placed on: they must be of the type it is planned for.
        const std::string& placed = cluster.graph[cluster.gpus[static_cast<size_t>(g)]].gpu_type;
        if (placed != type)
          fail("placement", "GPUs of type '" + type + "' for the " + pool.role + " pool",
               "GPU " + std::to_string(g) + " of type '" + placed + "'");
      }
  }
}

}  // namespace parasol::plan

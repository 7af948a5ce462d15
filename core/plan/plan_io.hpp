// Plan <-> YAML (`schema: parasol.plan/1`) and JSON. The YAML is lossless: load_plan(to_yaml(p)) == p field by field
// (doubles written with 17 significant digits), so `parasol plan` output feeds `parasol sim --plan` and `parasol exec
// --plan` unchanged. The model is embedded in full (the parasol.model/1 keys); placement is written per instance as the
// list of cluster GPU indices of its ranks, with the cluster's GPU names as comments-free `gpu_names` for humans.
// Thread behaviour: pure functions.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>

#include "core/common/yaml_node.hpp"
#include "core/plan/plan.hpp"

namespace parasol::plan {

std::string to_yaml(const Plan& plan);
Plan load_plan(const yaml::Node& node);  // ConfigError on bad input (unknown keys included)
Plan load_plan_file(const std::string& path);
nlohmann::json to_json(const Plan& plan);

// A plan given next to a scenario (`sim --plan`, a scenario's `plan:`) must be for that scenario's model, cluster and
// GPU type: otherwise a ConfigError at the plan file naming both (what the scenario has, what the plan was made
// for). The model must agree in name and shape (layers, hidden, heads, KV heads, head dim, FFN, vocabulary, experts);
// the cluster in name and in holding every GPU the placement names; the GPU types must be the cluster's.
void check_plan_fits(const Plan& plan, const std::string& plan_file, const spec::Model& model,
                     const spec::Cluster& cluster, const std::string& gpu_type, const std::string& scenario_file);

}  // namespace parasol::plan

// Plan <-> YAML (`schema: parasol.plan/1`) and JSON. The YAML is lossless: load_plan(to_yaml(p)) == p field by field
// (doubles written with 17 significant digits), so `parasol plan` output feeds `parasol sim --plan` and `parasol exec
// --plan` unchanged. The model is embedded in full (the parasol.model/1 keys); placement is written per instance as the
// list of cluster GPU indices of its ranks, with the cluster's GPU names as comments-free `gpu_names` for humans.
// Owner: planner. Thread behaviour: pure functions.
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

}  // namespace parasol::plan

// describe: what `parasol describe FILE` prints. Detects a file's kind from its `schema:` line (parasol.model/1,
// parasol.gpu/1, parasol.cluster/1, parasol.scenario/1, parasol.plan/1) or, for a Hugging Face config.json, from its
// `architectures` / `model_type` keys; loads it with the owning loader (so every check of that loader applies) and
// renders a human summary and a JSON object. Owned by the CLI helper; the loaders belong to their modules.
// Thread behaviour: pure functions of the file contents (and the files they reference).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/common/yaml_node.hpp"

namespace parasol::tools {

enum class FileKind { kModel, kGpu, kCluster, kScenario, kPlan, kEngine };

std::string to_string(FileKind k);

// The kind of a loaded document. Not a map, a missing or unknown `schema:` -> ConfigError (with "did you mean").
FileKind detect_kind(const yaml::Node& root);

struct Description {
  std::string file;
  FileKind kind = FileKind::kModel;
  std::string text;     // several lines, the first "FILE: <kind> <name>"
  nlohmann::json json;  // {"file", "kind", "name", "summary": {...}}
};

// Loads `path` and describes it. verbosity: 1 normal, 2+ adds detail. Bad input -> ConfigError.
Description describe_file(const std::string& path, int verbosity = 1);

}  // namespace parasol::tools

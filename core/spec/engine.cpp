// Loading an Engine from `schema: parasol.engine/1` (docs/schema-engine.md), through yaml::Node like the GPU loader:
// quantities are strings with units, unknown keys are errors with a "did you mean".
#include "core/spec/engine.hpp"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::spec {
namespace {

using yaml::Node;
namespace fs = std::filesystem;

constexpr double kMaxCpu_s = 1.0;  // per iteration or per unit: far above any engine, catches unit slips
constexpr int64_t kMaxCount = int64_t{1} << 24;

IterationCpu load_cpu(const Node& n, bool tokens) {
  if (tokens)
    n.allow_keys({"fixed", "per_sequence", "per_token"});
  else
    n.allow_keys({"fixed", "per_sequence"});
  IterationCpu c;
  c.fixed_s = n.quantity_or("fixed", Dimension::kTime, 0.0, 0.0, kMaxCpu_s);
  c.per_sequence_s = n.quantity_or("per_sequence", Dimension::kTime, 0.0, 0.0, kMaxCpu_s);
  if (tokens) c.per_token_s = n.quantity_or("per_token", Dimension::kTime, 0.0, 0.0, kMaxCpu_s);
  return c;
}

IterationCost load_iteration(const Node& n) {
  n.allow_keys({"overlap", "overlap_with_pp", "serial", "decode", "mixed"});
  IterationCost it;
  it.overlap = n.bool_or("overlap", false);
  it.overlap_with_pp = n.bool_or("overlap_with_pp", false);
  it.serial_s = n.quantity_or("serial", Dimension::kTime, 0.0, 0.0, kMaxCpu_s);
  if (auto c = n.get("decode")) it.decode = load_cpu(*c, false);
  if (auto c = n.get("mixed")) it.mixed = load_cpu(*c, true);
  return it;
}

CudaGraphs load_graphs(const Node& n) {
  n.allow_keys({"decode_max_seqs", "mixed", "mixed_max_tokens"});
  CudaGraphs g;
  g.decode_max_seqs = n.integer_or("decode_max_seqs", 0, 0, kMaxCount);
  if (auto c = n.get("mixed")) g.mixed_piecewise = c->as_enum({"none", "piecewise"}) == "piecewise";
  g.mixed_max_tokens = n.integer_or("mixed_max_tokens", 0, 0, kMaxCount);
  if (g.mixed_piecewise && g.mixed_max_tokens == 0)
    n.at("mixed").fail("'none', or 'piecewise' with mixed_max_tokens > 0");
  return g;
}

Fusion load_fusion(const Node& n) {
  n.allow_keys({"residual_rmsnorm", "silu_mul", "rope_kv_append", "allreduce_rmsnorm"});
  Fusion f;
  f.residual_rmsnorm = n.bool_or("residual_rmsnorm", f.residual_rmsnorm);
  f.silu_mul = n.bool_or("silu_mul", f.silu_mul);
  f.rope_kv_append = n.bool_or("rope_kv_append", f.rope_kv_append);
  f.allreduce_rmsnorm = n.bool_or("allreduce_rmsnorm", f.allreduce_rmsnorm);
  return f;
}

CustomAllReduce load_custom_allreduce(const Node& n) {
  n.allow_keys({"enabled", "max_size", "max_gpus"});
  CustomAllReduce c;
  c.enabled = n.bool_or("enabled", false);
  if (c.enabled) {
    c.max_bytes = n.quantity("max_size", Dimension::kBytes, 1.0, 1e12);
    c.max_gpus = static_cast<int>(n.integer("max_gpus", 2, 1 << 16));
  }
  return c;
}

MoeDispatch load_dispatch(const Node& n) {
  n.allow_keys({"copies", "fp8", "fp8_block", "node_forwarding"});
  MoeDispatch d;
  if (auto c = n.get("copies")) d.per_rank = c->as_enum({"per_pair", "per_rank"}) == "per_rank";
  d.fp8 = n.bool_or("fp8", false);
  d.fp8_block = n.integer_or("fp8_block", d.fp8_block, 1, kMaxCount);
  d.node_forwarding = n.bool_or("node_forwarding", false);
  if (d.node_forwarding && !d.per_rank)
    n.at("node_forwarding").fail("node_forwarding only with copies: per_rank (a node copy serves every rank there)");
  return d;
}

MoeExperts load_experts(const Node& n) {
  n.allow_keys({"triton"});
  MoeExperts x;
  if (auto t = n.get("triton")) {
    if (!t->is_seq()) t->fail("a list of weight dtypes (bf16, fp16, fp8, int8)");
    for (const auto& d : t->items()) {
      const auto dt = parse_dtype(d.as_string());
      if (!dt || *dt == DType::kFp32 || *dt == DType::kInt4) d.fail("a weight dtype (bf16, fp16, fp8, int8)");
      x.triton.push_back(*dt);
    }
  }
  return x;
}

// Where shipped profiles live: the data directory, then the source tree this binary was built from (a data directory
// of the user's own models and clusters need not copy the engines).
std::vector<fs::path> engine_dirs() {
  std::vector<fs::path> dirs{fs::path(data_dir()) / "topologies/engines"};
  if (fs::path(PARASOL_DATA_DIR) != fs::path(data_dir()))
    dirs.push_back(fs::path(PARASOL_DATA_DIR) / "topologies/engines");
  return dirs;
}

}  // namespace

Engine load_engine(const yaml::Node& root) {
  if (!root.is_map()) root.fail("an engine profile (a map with 'schema: parasol.engine/1')");
  root.allow_keys({"schema", "name", "version", "description", "iteration", "launch", "cuda_graphs", "fusion",
                   "custom_allreduce", "moe_dispatch", "moe_experts", "serving"});
  root.at("schema").as_enum({"parasol.engine/1"});
  Engine e;
  e.source = root.file();
  e.name = root.str("name");
  if (e.name.empty()) root.at("name").fail("a non-empty name");
  e.version = root.str_or("version", "");
  if (auto c = root.get("iteration")) e.iteration = load_iteration(*c);
  e.launch_s = root.quantity_or("launch", Dimension::kTime, 0.0, 0.0, 1e-3);
  if (auto c = root.get("cuda_graphs")) e.graphs = load_graphs(*c);
  if (auto c = root.get("fusion")) e.fusion = load_fusion(*c);
  if (auto c = root.get("custom_allreduce")) e.custom_allreduce = load_custom_allreduce(*c);
  if (auto c = root.get("moe_dispatch")) e.moe_dispatch = load_dispatch(*c);
  if (auto c = root.get("moe_experts")) e.moe_experts = load_experts(*c);
  if (auto c = root.get("serving")) e.serving = load_serving_defaults(*c);
  return e;
}

Engine load_engine_file(const std::string& path) {
  return load_engine(yaml::load_file(path));
}

std::vector<std::string> shipped_engines() {
  std::vector<std::string> out;
  for (const auto& dir : engine_dirs()) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec))
      if (entry.path().extension() == ".yaml") out.push_back(entry.path().stem().string());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::optional<std::string> find_engine_file(const std::string& ref, const std::string& from_file) {
  if (ref.empty()) return std::nullopt;
  const bool looks_like_file = ref.find('/') != std::string::npos || fs::path(ref).has_extension();
  if (!looks_like_file) {
    for (const auto& dir : engine_dirs()) {
      const fs::path shipped = dir / (ref + ".yaml");
      std::error_code ec;
      if (fs::is_regular_file(shipped, ec)) return shipped.lexically_normal().string();
    }
  }
  return find_referenced_file(ref, from_file);
}

std::string engine_ref_expected(const std::string& ref) {
  const auto names = shipped_engines();
  std::string listed;
  for (const auto& n : names) listed += (listed.empty() ? "" : ", ") + n;
  std::string expected = "a shipped engine (" + listed + ") or an engine file";
  if (std::string s = yaml::closest(ref, names); !s.empty()) expected += " (did you mean '" + s + "'?)";
  return expected;
}

Engine load_engine_ref(const std::string& ref, const std::string& from_file, const std::string& key) {
  if (auto found = find_engine_file(ref, from_file)) return load_engine_file(*found);
  throw ConfigError(from_file, 0, 0, key, engine_ref_expected(ref), "'" + ref + "'");
}

nlohmann::json to_json(const Engine& e) {
  auto cpu = [](const IterationCpu& c) {
    return nlohmann::json{{"fixed_s", c.fixed_s}, {"per_sequence_s", c.per_sequence_s}, {"per_token_s", c.per_token_s}};
  };
  nlohmann::json triton = nlohmann::json::array();
  for (DType d : e.moe_experts.triton) triton.push_back(std::string(to_string(d)));
  return {{"name", e.name},
          {"version", e.version},
          {"source", e.source},
          {"iteration",
           {{"overlap", e.iteration.overlap},
            {"overlap_with_pp", e.iteration.overlap_with_pp},
            {"serial_s", e.iteration.serial_s},
            {"decode", cpu(e.iteration.decode)},
            {"mixed", cpu(e.iteration.mixed)}}},
          {"launch_s", e.launch_s},
          {"cuda_graphs",
           {{"decode_max_seqs", e.graphs.decode_max_seqs},
            {"mixed", e.graphs.mixed_piecewise ? "piecewise" : "none"},
            {"mixed_max_tokens", e.graphs.mixed_max_tokens}}},
          {"fusion",
           {{"residual_rmsnorm", e.fusion.residual_rmsnorm},
            {"silu_mul", e.fusion.silu_mul},
            {"rope_kv_append", e.fusion.rope_kv_append},
            {"allreduce_rmsnorm", e.fusion.allreduce_rmsnorm}}},
          {"custom_allreduce",
           {{"enabled", e.custom_allreduce.enabled},
            {"max_bytes", e.custom_allreduce.max_bytes},
            {"max_gpus", e.custom_allreduce.max_gpus}}},
          {"moe_dispatch",
           {{"copies", e.moe_dispatch.per_rank ? "per_rank" : "per_pair"},
            {"fp8", e.moe_dispatch.fp8},
            {"fp8_block", e.moe_dispatch.fp8_block},
            {"node_forwarding", e.moe_dispatch.node_forwarding}}},
          {"moe_experts", {{"triton", triton}}}};
}

}  // namespace parasol::spec

#include "tools/describe.hpp"

#include <cstdio>
#include <sstream>
#include <vector>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/plan/plan_io.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/engine.hpp"
#include "core/spec/gpu.hpp"
#include "core/spec/model.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::tools {
namespace {

struct KnownSchema {
  const char* schema;
  FileKind kind;
};
constexpr KnownSchema kSchemas[] = {
    {"parasol.model/1", FileKind::kModel},     {"parasol.gpu/1", FileKind::kGpu},
    {"parasol.cluster/1", FileKind::kCluster}, {"parasol.scenario/1", FileKind::kScenario},
    {"parasol.plan/1", FileKind::kPlan},       {"parasol.engine/1", FileKind::kEngine}};

std::string schema_list() {
  std::string s;
  for (const auto& k : kSchemas) s += (s.empty() ? "" : ", ") + std::string(k.schema);
  return s;
}

std::string num(double v, const char* fmt = "%.4g") {
  return format_number(fmt, v);
}

std::string join_ints(const std::vector<int>& v) {
  if (v.empty()) return "auto";
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// --- model ---------------------------------------------------------------------------------------------------------

void model_lines(const spec::Model& m, int verbosity, std::ostringstream& os, const std::string& indent) {
  const spec::ParamCounts p = count_params(m);
  os << indent << m.layers << " layers, hidden " << m.hidden << ", " << m.heads << " heads";
  if (m.attention == spec::AttentionKind::kMla && m.mla) {
    os << " (MLA: kv_lora_rank " << m.mla->kv_lora_rank << ", rope dim " << m.mla->qk_rope_head_dim << ")";
  } else {
    os << " (" << m.kv_heads << " KV heads, head dim " << m.head_dim << ", " << to_string(m.attention) << ")";
  }
  if (m.sliding_window > 0) os << ", sliding window " << m.sliding_window;
  os << ", vocab " << m.vocab << "\n";
  if (m.is_moe()) {
    os << indent << "MoE: " << m.moe.num_experts << " routed experts, top-" << m.moe.top_k;
    if (m.moe.num_shared_experts) os << ", " << m.moe.num_shared_experts << " shared";
    os << ", expert FFN " << m.moe.expert_ffn << ", " << m.moe_layers() << " MoE layers";
    if (m.moe.first_k_dense) os << " (first " << m.moe.first_k_dense << " dense, FFN " << m.ffn << ")";
    if (m.moe.n_group > 1) os << ", group-limited routing " << m.moe.topk_group << "/" << m.moe.n_group;
    os << "\n";
  } else {
    os << indent << "dense MLP, FFN " << m.ffn << "\n";
  }
  os << indent << "parameters: " << format_count(p.total) << " total, " << format_count(p.active_per_token)
     << " active per token\n";
  os << indent << "weights: bf16 " << format_bytes(weight_bytes(m, DType::kBf16)) << ", fp8 "
     << format_bytes(weight_bytes(m, DType::kFp8)) << ", int4 " << format_bytes(weight_bytes(m, DType::kInt4)) << "\n";
  os << indent << "KV cache: " << format_bytes(kv_bytes_per_token(m)) << " per token (" << to_string(m.kv_dtype)
     << ")\n";
  os << indent << "FLOPs per token: " << format_count(flops_per_token(m, 0)) << " at context 0, "
     << format_count(flops_per_token(m, 4096)) << " at context 4096\n";
  if (verbosity >= 2) {
    os << indent << "parameters by part: embedding " << format_count(p.embedding) << ", lm_head "
       << format_count(p.lm_head) << ", attention " << format_count(p.attention) << ", dense MLP "
       << format_count(p.dense_mlp) << ", routed experts " << format_count(p.routed_experts) << ", shared experts "
       << format_count(p.shared_experts) << ", router " << format_count(p.router) << ", norms " << format_count(p.norms)
       << "\n";
    os << indent << "max position " << m.max_position << ", rope theta " << num(m.rope_theta) << " (scaling "
       << m.rope_scaling.type << "), prefill of 4096 tokens " << format_count(prefill_flops(m, 4096)) << " FLOPs\n";
  }
}

Description describe_model(const yaml::Node& root, int verbosity) {
  spec::Model m = spec::load_model(root);
  Description d;
  d.kind = FileKind::kModel;
  std::ostringstream os;
  os << root.file() << ": model " << m.name << " (" << m.architecture << ")"
     << (root.has("schema") ? "" : " [Hugging Face config.json]") << "\n";
  model_lines(m, verbosity, os, "  ");
  d.text = os.str();
  d.json = {{"name", m.name}, {"summary", to_json(m)}};
  return d;
}

// --- gpu -----------------------------------------------------------------------------------------------------------

void gpu_lines(const spec::Gpu& g, int verbosity, std::ostringstream& os, const std::string& indent) {
  os << indent << "peak dense:";
  bool first = true;
  for (const auto& [t, f] : g.peak_flops) {
    os << (first ? " " : ", ") << to_string(t) << " " << format_flop_rate(f);
    first = false;
  }
  os << "\n";
  os << indent << "HBM " << format_bytes(g.hbm_bytes) << " at " << format_bandwidth(g.hbm_bw_Bps) << "; scale-up "
     << format_bandwidth(g.scaleup_bw_Bps) << " per direction";
  if (g.tdp_W > 0) os << "; TDP " << num(g.tdp_W) << " W";
  os << "\n";
  if (g.hbm_bw_Bps > 0)
    os << indent << "ridge point (bf16): " << num(g.peak(DType::kBf16) / g.hbm_bw_Bps, "%.0f") << " FLOP/byte\n";
  if (verbosity >= 2) {
    os << indent << "GEMM: " << num(g.gemm.max_efficiency) << " of peak at most, HBM " << num(g.gemm.memory)
       << ", fixed " << format_time(g.gemm.fixed_s) << "; element-wise: HBM " << num(g.elementwise.default_memory)
       << ", fixed " << format_time(g.elementwise.fixed_s) << "; collectives " << num(g.eff.comm_efficiency) << "\n";
  }
}

// --- engine --------------------------------------------------------------------------------------------------------

Description describe_engine(const yaml::Node& root, int verbosity) {
  const spec::Engine e = spec::load_engine(root);
  Description d;
  d.kind = FileKind::kEngine;
  std::ostringstream os;
  os << root.file() << ": engine " << e.name << (e.version.empty() ? "" : " (" + e.version + ")") << "\n";
  os << "  per iteration: " << format_time(e.iteration.serial_s) << " serial, CPU work "
     << (e.iteration.overlap ? "overlapped with the GPU" : "before the GPU") << " (decode "
     << format_time(e.iteration.decode.fixed_s) << " + " << format_time(e.iteration.decode.per_sequence_s)
     << " per sequence)\n";
  os << "  kernels: " << format_time(e.launch_s) << " per eager launch; CUDA graphs for decode up to "
     << e.graphs.decode_max_seqs << " sequences"
     << (e.graphs.mixed_piecewise ? ", piecewise up to " + std::to_string(e.graphs.mixed_max_tokens) + " tokens" : "")
     << "\n";
  if (verbosity >= 2)
    os << "  custom all-reduce: "
       << (e.custom_allreduce.enabled ? "below " + format_bytes(e.custom_allreduce.max_bytes) : std::string("off"))
       << "; MoE dispatch: " << (e.moe_dispatch.per_rank ? "per rank" : "per pair")
       << (e.moe_dispatch.fp8 ? ", fp8" : "") << (e.moe_dispatch.node_forwarding ? ", node forwarding" : "") << "\n";
  d.text = os.str();
  d.json = {{"name", e.name}, {"summary", to_json(e)}};
  return d;
}

Description describe_gpu(const yaml::Node& root, int verbosity) {
  spec::Gpu g = spec::load_gpu(root);
  Description d;
  d.kind = FileKind::kGpu;
  std::ostringstream os;
  os << root.file() << ": gpu " << g.name << (g.vendor.empty() ? "" : " (" + g.vendor + ")") << "\n";
  gpu_lines(g, verbosity, os, "  ");
  d.text = os.str();
  d.json = {{"name", g.name}, {"summary", to_json(g)}};
  return d;
}

// --- cluster -------------------------------------------------------------------------------------------------------

void cluster_lines(const spec::Cluster& c, const spec::ClusterSummary& s, int verbosity, std::ostringstream& os,
                   const std::string& indent) {
  std::map<std::string, int> per_type;
  for (int i = 0; i < c.gpu_count(); ++i) ++per_type[c.graph[c.gpus[i]].gpu_type];
  os << indent << s.gpus << " GPUs (";
  bool first = true;
  for (const auto& [t, n] : per_type) {
    os << (first ? "" : " + ") << n << " x " << t;
    first = false;
  }
  os << ") in " << s.nodes << (s.nodes == 1 ? " node, " : " nodes, ") << s.domains
     << (s.domains == 1 ? " scale-up domain of " : " scale-up domains of up to ") << s.max_domain_size << "\n";
  os << indent << "per GPU: scale-up " << format_bandwidth(s.scaleup_bw_per_gpu_Bps) << ", scale-out "
     << format_bandwidth(s.scaleout_bw_per_gpu_Bps) << "\n";
  os << indent << s.switches << " switches, " << s.links << " links; max " << s.max_hops_gpu_to_gpu
     << " hops GPU to GPU; bisection " << format_bandwidth(s.bisection_bw_Bps) << "; "
     << (s.connected ? "connected" : "DISCONNECTED") << "\n";
  if (verbosity >= 2) {
    for (const auto& [name, g] : c.gpu_types) {
      os << indent << "gpu type " << name << ":\n";
      std::ostringstream inner;
      gpu_lines(g, verbosity, inner, indent + "  ");
      os << inner.str();
    }
  }
}

Description describe_cluster(const yaml::Node& root, int verbosity) {
  spec::Cluster c = spec::load_cluster(root);
  spec::ClusterSummary s = summarize(c);
  Description d;
  d.kind = FileKind::kCluster;
  std::ostringstream os;
  os << root.file() << ": cluster " << c.name << "\n";
  cluster_lines(c, s, verbosity, os, "  ");
  d.text = os.str();
  d.json = {{"name", c.name}, {"summary", to_json(c, s)}};
  return d;
}

// --- scenario ------------------------------------------------------------------------------------------------------

std::string length_text(const serve::LengthSpec& l) {
  switch (l.kind) {
    case serve::LengthKind::kFixed:
      return std::to_string(l.value);
    case serve::LengthKind::kUniform:
      return "uniform [" + std::to_string(l.min) + ", " + std::to_string(l.max) + "]";
    case serve::LengthKind::kLognormal:
      return "lognormal mean " + num(l.mean) + " cv " + num(l.cv);
    case serve::LengthKind::kEmpirical:
      return "resampled from " + l.trace.path;
  }
  return "?";
}

// One line from serve's reading of the section (so its checks apply); no trace file is opened.
// A trace file that is not on this machine is not an error in the scenario (traces live outside the repository; the
// planner then uses search.workload_stats), so it is reported in the summary instead.
std::string workload_line(const yaml::Node& w) {
  serve::WorkloadSpec spec;
  try {
    spec = serve::load_workload(w);
  } catch (const ConfigError& e) {
    if (e.expected().find("existing trace file") == std::string::npos) throw;
    return "trace " + e.found() + " (not on this machine)";
  }
  std::ostringstream os;
  if (spec.kind == serve::WorkloadSpec::Kind::kTrace) {
    os << serve::to_string(spec.trace.format) << " trace " << spec.trace.path;
  } else {
    const char* arrival = "poisson";
    if (spec.arrival.kind == serve::ArrivalKind::kGamma) arrival = "gamma";
    if (spec.arrival.kind == serve::ArrivalKind::kConstant) arrival = "constant";
    if (spec.arrival.kind == serve::ArrivalKind::kBurst) arrival = "burst";
    os << arrival << " arrivals at " << num(spec.arrival.rate_per_s) << " req/s, input " << length_text(spec.input)
       << ", output " << length_text(spec.output) << " tokens";
  }
  if (spec.rate_scale != 1.0) os << ", rate x" << num(spec.rate_scale);
  if (spec.max_requests >= 0) os << ", " << spec.max_requests << " requests";
  return os.str();
}

Description describe_scenario(const yaml::Node& root, int verbosity) {
  spec::Scenario sc = spec::load_scenario(root);
  spec::ClusterSummary cs = summarize(sc.cluster);
  Description d;
  d.kind = FileKind::kScenario;
  std::ostringstream os;
  os << root.file() << ": scenario " << sc.name << "\n";
  if (!sc.description.empty()) os << "  " << sc.description << "\n";
  const spec::ParamCounts p = count_params(sc.model);
  os << "  model: " << sc.model.name << " (" << sc.model_source << "): " << format_count(p.total) << " parameters, "
     << format_count(p.active_per_token) << " active\n";
  if (verbosity >= 2) model_lines(sc.model, verbosity, os, "    ");
  os << "  cluster: " << sc.cluster.name << " (" << sc.cluster_source << "): " << cs.gpus << " GPUs, running on "
     << sc.gpu_type << "\n";
  if (verbosity >= 2) cluster_lines(sc.cluster, cs, verbosity, os, "    ");
  os << "  workload: " << (sc.workload ? workload_line(*sc.workload) : std::string("none")) << "\n";
  os << "  engine: " << sc.engine.name << " (" << sc.engine.source << ")\n";
  std::string slo;
  auto target = [&slo](const char* what, const std::optional<double>& v) {
    if (v) slo += (slo.empty() ? "" : ", ") + std::string(what) + " <= " + format_time(*v);
  };
  target("TTFT", sc.slo.ttft_p99_s);
  target("TPOT", sc.slo.tpot_p99_s);
  target("E2E", sc.slo.e2e_p99_s);
  os << "  slo (p99): " << (slo.empty() ? "none" : slo) << "\n";
  if (sc.plan_path) {
    os << "  plan: " << *sc.plan_path << " (fixed)\n";
  } else {
    const spec::SearchSpace& s = sc.search;
    os << "  search: tp " << join_ints(s.tp) << ", pp " << join_ints(s.pp) << ", ep " << join_ints(s.ep) << ", attn_dp "
       << join_ints(s.attn_dp) << ", disaggregation " << to_string(s.disaggregation)
       << (s.allow_cross_domain_tp ? ", cross-domain TP allowed" : "") << "; weights " << to_string(s.weight_dtype)
       << ", KV " << to_string(s.kv_dtype) << "; top " << s.top_n;
    if (s.gpus) os << "; budget " << *s.gpus << " GPUs";
    if (s.workload_stats)
      os << "; declared load " << num(s.workload_stats->rate_per_s) << " req/s, " << num(s.workload_stats->input_mean)
         << " in / " << num(s.workload_stats->output_mean) << " out tokens";
    os << "\n";
  }
  os << "  sim: " << to_string(sc.sim.fidelity);
  if (sc.sim.duration_s) os << ", duration " << format_time(*sc.sim.duration_s);
  if (sc.sim.max_requests) os << ", at most " << *sc.sim.max_requests << " requests";
  os << "\n";
  d.text = os.str();
  nlohmann::json summary = to_json(sc);
  summary["model"]["parameters"] = p.total;
  summary["model"]["active_parameters"] = p.active_per_token;
  summary["cluster"]["bisection_bw_Bps"] = cs.bisection_bw_Bps;
  d.json = {{"name", sc.name}, {"summary", summary}};
  return d;
}

// --- plan ----------------------------------------------------------------------------------------------------------

Description describe_plan(const yaml::Node& root, int verbosity) {
  plan::Plan p = plan::load_plan(root);
  Description d;
  d.kind = FileKind::kPlan;
  std::ostringstream os;
  int gpus = 0;
  for (const auto& pool : p.pools) gpus += pool.config.total_gpus();
  os << root.file() << ": plan for " << p.model.name << " on " << p.cluster_name << " ("
     << (p.disaggregated() ? "disaggregated" : "colocated") << ", " << gpus << " GPUs of type " << p.gpu_type << ")\n";
  os << "  weights " << to_string(p.weight_dtype) << ", KV " << to_string(p.kv_dtype);
  if (p.model.is_moe()) os << ", MoE routing " << p.routing.kind;
  os << "\n";
  for (const auto& pool : p.pools) {
    const auto& m = pool.memory;
    os << "  " << pool.role << " pool: " << pool.config.label() << " (" << pool.config.total_gpus() << " GPUs"
       << (pool.gpu_type.empty() ? "" : ", " + pool.gpu_type) << "), " << pool.stage_layers.size() << " stage(s)\n";
    os << "    per GPU: weights " << format_bytes(m.weight_bytes) << ", KV " << format_bytes(m.kv_bytes) << " of "
       << format_bytes(m.capacity_bytes) << "; KV capacity " << m.kv_tokens << " tokens per instance\n";
    if (verbosity >= 2) {
      for (size_t s = 0; s < pool.stage_layers.size(); ++s)
        os << "    stage " << s << ": layers [" << pool.stage_layers[s].first << ", " << pool.stage_layers[s].second
           << ")\n";
      for (size_t i = 0; i < pool.placement.size(); ++i) {
        os << "    instance " << i << " on GPUs";
        for (int g : pool.placement[i]) os << " " << g;
        os << "\n";
      }
    }
  }
  d.text = os.str();
  d.json = {{"name", p.model.name + "@" + p.cluster_name}, {"summary", plan::to_json(p)}};
  return d;
}

}  // namespace

std::string to_string(FileKind k) {
  switch (k) {
    case FileKind::kModel:
      return "model";
    case FileKind::kGpu:
      return "gpu";
    case FileKind::kCluster:
      return "cluster";
    case FileKind::kScenario:
      return "scenario";
    case FileKind::kPlan:
      return "plan";
    case FileKind::kEngine:
      return "engine";
  }
  return "?";
}

FileKind detect_kind(const yaml::Node& root) {
  if (!root.is_map()) root.fail("a map with a 'schema:' line (" + schema_list() + ") or a Hugging Face config.json");
  if (auto schema = root.get("schema")) {
    const std::string s = schema->as_string();
    std::vector<std::string> names;
    for (const auto& k : kSchemas) {
      if (s == k.schema) return k.kind;
      names.emplace_back(k.schema);
    }
    std::string expected = "one of " + schema_list();
    std::string sug = yaml::closest(s, names);
    if (!sug.empty()) expected += " (did you mean '" + sug + "'?)";
    schema->fail(expected);
  }
  if (root.has("architectures") || root.has("model_type")) return FileKind::kModel;
  throw ConfigError(root.file(), root.line(), root.column(), "schema",
                    "key 'schema' (one of " + schema_list() + ") or a Hugging Face config.json", "it missing");
}

Description describe_file(const std::string& path, int verbosity) {
  yaml::Node root = yaml::load_file(path);
  Description d;
  switch (detect_kind(root)) {
    case FileKind::kModel:
      d = describe_model(root, verbosity);
      break;
    case FileKind::kGpu:
      d = describe_gpu(root, verbosity);
      break;
    case FileKind::kCluster:
      d = describe_cluster(root, verbosity);
      break;
    case FileKind::kScenario:
      d = describe_scenario(root, verbosity);
      break;
    case FileKind::kPlan:
      d = describe_plan(root, verbosity);
      break;
    case FileKind::kEngine:
      d = describe_engine(root, verbosity);
      break;
  }
  d.file = path;
  nlohmann::json j = {{"file", path}, {"kind", to_string(d.kind)}};
  for (const auto& el : d.json.items()) j[el.key()] = el.value();
  d.json = std::move(j);
  return d;
}

}  // namespace parasol::tools

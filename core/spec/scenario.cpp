#include "core/spec/scenario.hpp"

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/common/error.hpp"

namespace parasol::spec {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSchema = "parasol.scenario/1";
constexpr int64_t kMaxParallel = 1 << 16;
constexpr double kMaxLatency_s = 1e6;

std::vector<int> int_list(const yaml::Node& n) {
  std::vector<int> out;
  if (n.is_scalar()) {
    out.push_back(static_cast<int>(n.as_int(1, kMaxParallel)));
    return out;
  }
  if (!n.is_seq()) n.fail("an integer or a list of integers >= 1");
  for (const auto& item : n.items()) out.push_back(static_cast<int>(item.as_int(1, kMaxParallel)));
  if (out.empty()) n.fail("a non-empty list of integers >= 1");
  return out;
}

DType dtype_at(const yaml::Node& n) {
  auto d = parse_dtype(n.as_enum({"fp32", "bf16", "fp16", "fp8", "int8", "int4"}));
  if (!d) n.fail("a dtype");
  return *d;
}

std::optional<double> latency(const yaml::Node& slo, std::string_view key) {
  auto c = slo.get(key);
  if (!c) return std::nullopt;
  double v = c->as_quantity(Dimension::kTime, 0.0, kMaxLatency_s);
  if (v <= 0) c->fail("a time > 0, like '200 ms'");
  return v;
}

Slo load_slo(const yaml::Node& n) {
  n.allow_keys({"ttft_p99", "tpot_p99", "e2e_p99"});
  return Slo{latency(n, "ttft_p99"), latency(n, "tpot_p99"), latency(n, "e2e_p99")};
}

SearchSpace load_search(const yaml::Node& n, const Model& model) {
  n.allow_keys({"tp", "pp", "ep", "attn_dp", "allow_cross_domain_tp", "disaggregation", "top_n", "weight_dtype",
                "kv_dtype", "gpus", "workload_stats", "objective"});
  SearchSpace s;
  if (auto c = n.get("tp")) s.tp = int_list(*c);
  if (auto c = n.get("pp")) s.pp = int_list(*c);
  if (auto c = n.get("ep")) s.ep = int_list(*c);
  if (auto c = n.get("attn_dp")) s.attn_dp = int_list(*c);
  s.allow_cross_domain_tp = n.bool_or("allow_cross_domain_tp", false);
  if (auto c = n.get("disaggregation")) {
    // YAML 1.1 spells on/off as booleans; accept both spellings.
    const std::string v = c->is_scalar() ? c->as_string() : std::string();
    if (v == "on" || v == "true" || v == "yes")
      s.disaggregation = Disaggregation::kOn;
    else if (v == "off" || v == "false" || v == "no")
      s.disaggregation = Disaggregation::kOff;
    else if (c->as_enum({"on", "off", "both"}) == "both")
      s.disaggregation = Disaggregation::kBoth;
  }
  s.top_n = static_cast<int>(n.integer_or("top_n", 5, 1, 1000));
  if (auto c = n.get("objective")) s.objective = *objective_named(c->as_enum({"goodput_per_gpu", "fewest_gpus", "max_rate"}));
  s.weight_dtype = model.weight_dtype;
  s.kv_dtype = model.kv_dtype;
  if (auto c = n.get("weight_dtype")) s.weight_dtype = dtype_at(*c);
  if (auto c = n.get("kv_dtype")) s.kv_dtype = dtype_at(*c);
  if (auto c = n.get("gpus")) s.gpus = static_cast<int>(c->as_int(1, kMaxParallel));
  if (auto c = n.get("workload_stats")) {
    c->allow_keys({"rate", "input_mean", "output_mean"});
    WorkloadStats w;
    w.rate_per_s = c->number("rate", 1e-9, 1e9);
    w.input_mean = c->number("input_mean", 1, 1e8);
    w.output_mean = c->number("output_mean", 1, 1e8);
    s.workload_stats = w;
  }
  return s;
}

Faults load_faults(const yaml::Node& n) {
  if (!n.is_map()) n.fail("a faults map (docs/scenario.md)");
  n.allow_keys({"detect_after", "retries", "backoff", "events", "random"});
  Faults f;
  f.detect_s = n.quantity_or("detect_after", Dimension::kTime, 0.0, 0.0, 1e9);
  f.retries = static_cast<int>(n.integer_or("retries", 0, 0, 1000));
  f.backoff_s = n.quantity_or("backoff", Dimension::kTime, 0.0, 0.0, 1e9);
  if (auto e = n.get("events")) {
    if (!e->is_seq()) e->fail("a list of failures ({at, gpu or replica, repair_after})");
    for (const yaml::Node& x : e->items()) {
      if (!x.is_map()) x.fail("a failure: {at, gpu or replica, repair_after}");
      x.allow_keys({"at", "gpu", "replica", "repair_after"});
      FaultEvent ev;
      ev.at_s = x.quantity("at", Dimension::kTime, 0.0, 1e12);
      if (x.has("gpu") == x.has("replica")) x.fail("one of 'gpu' (the instance holding it fails) or 'replica'");
      ev.gpu = static_cast<int>(x.integer_or("gpu", -1, 0, 1 << 24));
      ev.replica = static_cast<int>(x.integer_or("replica", -1, 0, 1 << 24));
      ev.repair_after_s = x.quantity_or("repair_after", Dimension::kTime, -1.0, 0.0, 1e12);
      f.events.push_back(ev);
    }
  }
  if (auto r = n.get("random")) {
    if (!r->is_map()) r->fail("a map {gpu_mtbf, mttr, seed}");
    r->allow_keys({"gpu_mtbf", "mttr", "seed"});
    f.gpu_mtbf_s = r->quantity("gpu_mtbf", Dimension::kTime, 1e-3, 1e15);
    f.mttr_s = r->quantity("mttr", Dimension::kTime, 0.0, 1e12);
    f.seed = static_cast<uint64_t>(r->integer_or("seed", 1, 0));
  }
  return f;
}

SimOptions load_sim(const yaml::Node& n) {
  n.allow_keys({"fidelity", "duration", "max_requests", "first_token"});
  SimOptions s;
  if (auto c = n.get("fidelity"))
    s.fidelity = c->as_enum({"analytic", "network"}) == "network" ? Fidelity::kNetwork : Fidelity::kAnalytic;
  if (auto c = n.get("duration")) {
    s.duration_s = c->as_quantity(Dimension::kTime, 0.0, 1e9);
    if (*s.duration_s <= 0) c->fail("a time > 0, like '60 s'");
  }
  if (auto c = n.get("max_requests")) s.max_requests = c->as_int(1, int64_t{1} << 40);
  if (auto c = n.get("first_token"))
    s.first_token = c->as_enum({"decode", "prefill"}) == "prefill" ? FirstToken::kPrefill : FirstToken::kDecode;
  return s;
}

std::string pick_gpu_type(const yaml::Node& root, const Cluster& cluster) {
  std::vector<std::string> types;
  for (const auto& [k, v] : cluster.gpu_types) types.push_back(k);
  std::string listed;
  for (const auto& t : types) listed += (listed.empty() ? "" : ", ") + t;
  if (auto c = root.get("gpu_type")) {
    std::string t = c->as_string();
    if (cluster.gpu_types.count(t)) return t;
    std::string expected = "a GPU type of the cluster (" + listed + ")";
    std::string sug = yaml::closest(t, types);
    if (!sug.empty()) expected += " (did you mean '" + sug + "'?)";
    c->fail(expected);
  }
  if (types.size() == 1) return types.front();
  throw ConfigError(root.file(), root.line(), root.column(), "gpu_type",
                    "key 'gpu_type' naming one of the cluster's GPU types (" + listed + ")", "it missing");
}

nlohmann::json yaml_to_json(const YAML::Node& n) {
  if (n.IsMap()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& kv : n) j[kv.first.IsScalar() ? kv.first.Scalar() : "?"] = yaml_to_json(kv.second);
    return j;
  }
  if (n.IsSequence()) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& v : n) j.push_back(yaml_to_json(v));
    return j;
  }
  if (n.IsScalar()) return n.Scalar();
  return nullptr;
}

}  // namespace

std::string data_dir() {
  const char* env = std::getenv("PARASOL_DATA_DIR");
  if (env && *env) return env;
  return PARASOL_DATA_DIR;
}

std::optional<std::string> find_referenced_file(const std::string& ref, const std::string& from_file) {
  if (ref.empty()) return std::nullopt;
  std::error_code ec;
  fs::path p(ref);
  if (p.is_absolute()) {
    if (fs::is_regular_file(p, ec)) return p.string();
    return std::nullopt;
  }
  if (!from_file.empty()) {
    fs::path rel = fs::path(from_file).parent_path() / p;
    if (fs::is_regular_file(rel, ec)) return rel.lexically_normal().string();
  }
  fs::path data = fs::path(data_dir()) / p;
  if (fs::is_regular_file(data, ec)) return data.lexically_normal().string();
  return std::nullopt;
}

std::string resolve_referenced_file(const yaml::Node& at) {
  std::string ref = at.as_string();
  if (auto found = find_referenced_file(ref, at.file())) return *found;
  std::string where = fs::path(ref).is_absolute()
                          ? ref
                          : (fs::path(at.file()).parent_path() / ref).lexically_normal().string() + " or " +
                                (fs::path(data_dir()) / ref).lexically_normal().string();
  at.fail("an existing file (looked for " + where + ")");
}

Scenario load_scenario(const yaml::Node& root) {
  if (!root.is_map()) root.fail("a scenario map with 'schema: " + std::string(kSchema) + "'");
  root.allow_keys(
      {"schema", "name", "description", "model", "cluster", "gpu_type", "workload", "slo", "search", "plan", "sim",
       "calibration", "engine", "serving", "faults"});
  yaml::Node schema = root.at("schema");
  if (schema.as_string() != kSchema) schema.fail("'" + std::string(kSchema) + "'");

  Scenario s;
  s.file = root.file();
  s.name = root.str("name");
  s.description = root.str_or("description", "");

  // The scenario's own sections first, so their errors do not wait for the model and cluster to load.
  if (auto c = root.get("slo")) s.slo = load_slo(*c);
  if (auto c = root.get("sim")) s.sim = load_sim(*c);
  if (auto c = root.get("plan")) s.plan_path = resolve_referenced_file(*c);
  if (auto c = root.get("calibration")) {  // a file or a folder: relative to the scenario, then to the data dir
    const fs::path ref(c->as_string());
    std::error_code ec;
    for (const fs::path& p : {ref.is_absolute() ? ref : fs::path(root.file()).parent_path() / ref,
                              ref.is_absolute() ? ref : fs::path(data_dir()) / ref})
      if (!s.calibration && !ref.empty() && fs::exists(p, ec)) s.calibration = p.lexically_normal().string();
    if (!s.calibration) c->fail("an existing calibration file or folder (docs/calibration.md)");
  }
  if (auto c = root.get("engine")) {  // a shipped name, or a file relative to the scenario, then to the data dir
    const std::string ref = c->as_string();
    auto path = find_engine_file(ref, root.file());
    if (!path) c->fail(engine_ref_expected(ref));
    s.engine = load_engine_file(*path);
  } else {
    s.engine = load_engine_ref(kDefaultEngine, root.file(), "engine (default " + std::string(kDefaultEngine) + ")");
  }
  if (auto c = root.get("serving")) s.serving = load_serving(*c);
  if (auto c = root.get("faults")) s.faults = load_faults(*c);
  if (auto c = root.get("workload")) {
    if (!c->is_map()) c->fail("a workload map (see docs/workloads.md)");
    s.workload = *c;
  }

  yaml::Node model = root.at("model");
  if (model.is_map()) {
    s.model = load_model(model);
    s.model_source = "inline";
  } else if (model.is_scalar()) {
    s.model_source = resolve_referenced_file(model);
    s.model = load_model_file(s.model_source);
  } else {
    model.fail("a path to a model file or an inline model map");
  }

  yaml::Node cluster = root.at("cluster");
  if (cluster.is_map()) {
    s.cluster = load_cluster(cluster);
    s.cluster_source = "inline";
  } else if (cluster.is_scalar()) {
    s.cluster_source = resolve_referenced_file(cluster);
    s.cluster = load_cluster_file(s.cluster_source);
  } else {
    cluster.fail("a path to a cluster file or an inline cluster map");
  }
  s.gpu_type = pick_gpu_type(root, s.cluster);

  if (auto c = root.get("search")) {
    s.search = load_search(*c, s.model);
  } else {
    s.search.weight_dtype = s.model.weight_dtype;
    s.search.kv_dtype = s.model.kv_dtype;
  }
  return s;
}

Serving effective_serving(const Scenario& s) {
  auto it = s.cluster.gpu_types.find(s.gpu_type);
  const Serving base = it == s.cluster.gpu_types.end() ? s.engine.serving.all
                                                       : s.engine.serving.for_gpu(s.gpu_type, it->second);
  return overlay(base, s.serving);
}

Scenario load_scenario_file(const std::string& path) {
  return load_scenario(yaml::load_file(path));
}

std::string to_string(Disaggregation d) {
  switch (d) {
    case Disaggregation::kOff:
      return "off";
    case Disaggregation::kOn:
      return "on";
    case Disaggregation::kBoth:
      return "both";
  }
  return "?";
}

std::string to_string(Objective o) {
  switch (o) {
    case Objective::kGoodputPerGpu:
      return "goodput_per_gpu";
    case Objective::kFewestGpus:
      return "fewest_gpus";
    case Objective::kMaxRate:
      return "max_rate";
  }
  return "?";
}

std::optional<Objective> objective_named(const std::string& name) {
  for (Objective o : {Objective::kGoodputPerGpu, Objective::kFewestGpus, Objective::kMaxRate})
    if (to_string(o) == name) return o;
  return std::nullopt;
}

std::string to_string(Fidelity f) {
  return f == Fidelity::kNetwork ? "network" : "analytic";
}

nlohmann::json to_json(const Scenario& s) {
  nlohmann::json j;
  j["name"] = s.name;
  j["description"] = s.description;
  j["model"] = {{"name", s.model.name}, {"architecture", s.model.architecture}, {"source", s.model_source}};
  j["cluster"] = {{"name", s.cluster.name}, {"gpus", s.cluster.gpu_count()}, {"source", s.cluster_source}};
  j["gpu_type"] = s.gpu_type;
  j["workload"] = s.workload ? yaml_to_json(s.workload->raw()) : nlohmann::json(nullptr);
  auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  j["slo"] = {{"ttft_p99_s", opt(s.slo.ttft_p99_s)},
              {"tpot_p99_s", opt(s.slo.tpot_p99_s)},
              {"e2e_p99_s", opt(s.slo.e2e_p99_s)}};
  j["search"] = {{"tp", s.search.tp},
                 {"pp", s.search.pp},
                 {"ep", s.search.ep},
                 {"attn_dp", s.search.attn_dp},
                 {"allow_cross_domain_tp", s.search.allow_cross_domain_tp},
                 {"disaggregation", to_string(s.search.disaggregation)},
                 {"top_n", s.search.top_n},
                 {"objective", to_string(s.search.objective)},
                 {"weight_dtype", std::string(to_string(s.search.weight_dtype))},
                 {"kv_dtype", std::string(to_string(s.search.kv_dtype))},
                 {"gpus", s.search.gpus ? nlohmann::json(*s.search.gpus) : nlohmann::json(nullptr)}};
  if (s.search.workload_stats)
    j["search"]["workload_stats"] = {{"rate_per_s", s.search.workload_stats->rate_per_s},
                                     {"input_mean", s.search.workload_stats->input_mean},
                                     {"output_mean", s.search.workload_stats->output_mean}};
  j["plan"] = s.plan_path ? nlohmann::json(*s.plan_path) : nlohmann::json(nullptr);
  j["calibration"] = s.calibration ? nlohmann::json(*s.calibration) : nlohmann::json(nullptr);
  j["engine"] = {{"name", s.engine.name}, {"source", s.engine.source}};
  j["serving"] = to_json(effective_serving(s));
  j["sim"] = {{"fidelity", to_string(s.sim.fidelity)},
              {"duration_s", opt(s.sim.duration_s)},
              {"max_requests", s.sim.max_requests ? nlohmann::json(*s.sim.max_requests) : nlohmann::json(nullptr)}};
  return j;
}

}  // namespace parasol::spec

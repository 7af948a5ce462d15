// Scenario: one question put to parasol — a model on a cluster under a workload, with latency SLOs, the space of
// parallel layouts to search (or a fixed plan) and the simulator's options. Loaded from `schema: parasol.scenario/1`
// YAML (scenarios/*.yaml; the schema is documented in docs/scenario.md). The model and the cluster are either paths
// (resolved relative to the scenario file, then to the data directory) or inline maps; they are loaded here, so a
// Scenario is ready to plan. The `workload:` section is kept as a YAML node for core/serve's load_workload (which also
// checks that trace files exist; traces may live outside the repository, so loading a scenario does not), so this
// header does not depend on serve. Owned by the CLI helper; read by planner, sim and exec.
// Thread behaviour: plain value; loading is reentrant.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/common/dtype.hpp"
#include "core/common/yaml_node.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/engine.hpp"
#include "core/spec/model.hpp"
#include "core/spec/serving.hpp"

namespace parasol::spec {

// Latency targets at the 99th percentile; absent = no target.
struct Slo {
  std::optional<double> ttft_p99_s;  // time to first token
  std::optional<double> tpot_p99_s;  // time per output token (after the first)
  std::optional<double> e2e_p99_s;   // end-to-end request latency
};

enum class Disaggregation { kOff, kOn, kBoth };  // kBoth: search colocated and disaggregated layouts

// What the plan search answers (docs/search.md "Objectives"): the best goodput per GPU within the GPU budget (every
// candidate fills it); the fewest GPUs that meet the SLOs at the workload's rate (each candidate sized to that rate);
// the highest rate the chosen deployment sustains within the SLOs (a search on the rate in simulation).
enum class Objective { kGoodputPerGpu, kFewestGpus, kMaxRate };

// Declared statistics of the workload, for the search when the workload's trace file is absent (traces live outside
// the repository) or the scenario has no workload: mean arrival rate and mean prompt / output lengths.
struct WorkloadStats {
  double rate_per_s = 0;
  double input_mean = 0;   // tokens
  double output_mean = 0;  // tokens
};

// The layouts the planner may consider. An empty list means "planner's default" (every power of two that fits).
struct SearchSpace {
  std::vector<int> tp;
  std::vector<int> pp;
  std::vector<int> ep;
  std::vector<int> attn_dp;
  bool allow_cross_domain_tp = false;  // tensor parallelism across scale-up domains (usually a bad idea)
  Disaggregation disaggregation = Disaggregation::kOff;
  int top_n = 5;                                // how many ranked plans to report
  DType weight_dtype = DType::kBf16;            // defaults to the model's weight dtype
  DType kv_dtype = DType::kBf16;                // defaults to the model's KV dtype
  std::optional<int> gpus;                      // GPU budget; absent = every GPU of the scenario's type in the cluster
  std::optional<WorkloadStats> workload_stats;  // `workload_stats: {rate, input_mean, output_mean}`
  Objective objective = Objective::kGoodputPerGpu;  // `objective: goodput_per_gpu | fewest_gpus | max_rate`
};

enum class Fidelity { kAnalytic, kNetwork };

// P/D disaggregation: when a request's first token counts as delivered. kDecode: from the decode instance once its KV
// arrived and its first decode iteration starts (TTFT includes the KV transfer and decode-side queueing: SGLang PD,
// vLLM's disaggregated proxy, NVIDIA Dynamo); kPrefill: at the end of its prefill (DistServe-style accounting).
enum class FirstToken { kDecode, kPrefill };

struct SimOptions {
  Fidelity fidelity = Fidelity::kAnalytic;
  FirstToken first_token = FirstToken::kDecode;  // `first_token: decode | prefill` (P/D plans only)
  std::optional<double> duration_s;     // stop admitting arrivals after this simulated time
  std::optional<int64_t> max_requests;  // stop after this many requests
};

// `faults:` — instance failures the simulation injects (core/serve/serving_loop.hpp FaultPolicy; docs/scenario.md).
struct FaultEvent {
  double at_s = 0;
  int gpu = -1;      // the instance holding this GPU fails (one of gpu / replica)
  int replica = -1;  // or this replica (global index: the pools' replicas in order)
  double repair_after_s = -1;  // < 0: never repaired
};
struct Faults {
  std::vector<FaultEvent> events;
  double detect_s = 0;   // heartbeat timeout: from the failure to its detection
  int retries = 0;       // times a request is sent again after its replica failed
  double backoff_s = 0;  // delay before each retry
  double gpu_mtbf_s = 0; // random failures: mean time between failures of one GPU (0: none)
  double mttr_s = 0;     // ... and the time to repair an instance
  uint64_t seed = 1;
  bool any() const { return !events.empty() || gpu_mtbf_s > 0; }
};

struct Scenario {
  std::string file;  // the scenario file ("" when parsed from a string with no file)
  std::string name;
  std::string description;
  Model model;
  std::string model_source;  // resolved path of the model file, or "inline"
  Cluster cluster;
  std::string cluster_source;          // resolved path of the cluster file, or "inline"
  std::string gpu_type;                // a key of cluster.gpu_types (defaulted when the cluster has one type)
  std::optional<yaml::Node> workload;  // the `workload:` map, for serve's load_workload
  Slo slo;
  SearchSpace search;
  std::optional<std::string> plan_path;  // resolved path of a fixed plan (`parasol.plan/1`), if given
  // `calibration:`: resolved path of measured tables (a calibration/profile CSV or a folder of them, or an
  // AIConfigurator GPU folder; docs/calibration.md) that plan and sim use where they cover an op; nullopt: none.
  std::optional<std::string> calibration;
  // `engine:`: a shipped engine profile (topologies/engines/NAME.yaml) or a file; absent: vllm (spec::kDefaultEngine).
  Engine engine;
  // `serving:`: the engine knobs the scenario sets (unset ones: the engine's defaults, see effective_serving).
  Serving serving;
  SimOptions sim;
  Faults faults;
};

// The scenario's serving knobs over its engine's defaults for its GPU type.
Serving effective_serving(const Scenario& s);

// `schema: parasol.scenario/1`. Every problem is a ConfigError with file:line:col and key path.
Scenario load_scenario(const yaml::Node& root);
Scenario load_scenario_file(const std::string& path);
nlohmann::json to_json(const Scenario& s);

std::string to_string(Disaggregation d);
std::string to_string(Objective o);
std::optional<Objective> objective_named(const std::string& name);  // nullopt: not an objective's name
std::string to_string(Fidelity f);

// The data directory: $PARASOL_DATA_DIR when set, else the source tree the binary was built from.
std::string data_dir();
// Finds a file referenced from `from_file` (a scenario, a cluster): `ref` as is when absolute, else relative to the
// directory of `from_file`, then relative to data_dir(). Returns nullopt when none exists.
std::optional<std::string> find_referenced_file(const std::string& ref, const std::string& from_file);
// Same, but a missing file is a ConfigError at `at` (the node that named it), listing where it looked.
std::string resolve_referenced_file(const yaml::Node& at);

}  // namespace parasol::spec

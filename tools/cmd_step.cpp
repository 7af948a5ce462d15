// `parasol step`: the cost of one iteration, op by op — how an engineer checks the cost model against a profiler trace.
// Ad hoc: --model, --gpu or --cluster, the layout (--tp --pp --ep --attn-dp) and --batch SPEC; later --scenario.
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <map>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/cost/step_cost.hpp"
#include "core/plan/build_step.hpp"
#include "core/plan/placement.hpp"
#include "core/spec/cluster.hpp"
#include "core/spec/engine.hpp"
#include "core/spec/gpu.hpp"
#include "core/spec/model.hpp"
#include "tools/calibration_option.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {
namespace {

struct StepArgs {
  std::string model, gpu, cluster, batch, routing = "uniform", calibration, algo = "auto", rank = "0";
  std::string weight_dtype, kv_dtype, nic_bw = "400 Gb/s", engine = spec::kDefaultEngine;
  int tp = 1, pp = 1, ep = 1, attn_dp = 1, gpus_per_node = 8;
  bool allow_cross_domain_tp = false;
};

// A file path, or a shipped name: `dir/name.yaml` under the data directory.
std::string data_file(const std::string& ref, const std::string& dir) {
  if (std::filesystem::exists(ref)) return ref;
  const std::string shipped = resolve_data_path(dir + "/" + ref + ".yaml");
  return std::filesystem::exists(shipped) ? shipped : resolve_data_path(ref);
}

std::string shape_of(const plan::Op& o, const plan::Step& step) {
  std::ostringstream s;
  using plan::OpKind;
  if (o.kind == OpKind::kGemm || o.kind == OpKind::kMoeGate) {
    s << o.m << "x" << o.n << "x" << o.k;
    if (o.batch > 1) s << (o.expert_tokens.empty() ? " b" : " experts ") << o.batch;
  } else if (o.kind == OpKind::kAttention || o.kind == OpKind::kMlaAttention) {
    s << "T" << o.tokens << " seqs" << o.q_lens.size() << " h" << o.heads << "/" << o.kv_heads << " d" << o.head_dim;
    if (o.v_head_dim != o.head_dim) s << "/" << o.v_head_dim;
  } else if (plan::is_communication(o.kind)) {
    s << format_bytes(o.comm_bytes);
    if (o.group >= 0) s << " " << step.groups[static_cast<size_t>(o.group)].name;
    if (o.peer >= 0) s << " peer " << o.peer;
  } else {
    s << "T" << o.tokens;
    if (o.n > 0) s << "x" << o.n;
  }
  return s.str();
}

plan::CollectiveAlgo parse_algo(const std::string& a) {
  for (auto x : {plan::CollectiveAlgo::kAuto, plan::CollectiveAlgo::kRing, plan::CollectiveAlgo::kTree,
                 plan::CollectiveAlgo::kNvls, plan::CollectiveAlgo::kHierarchical})
    if (plan::to_string(x) == a) return x;
  throw ConfigError("", 0, 0, "--algo", "auto, ring, tree, nvls or hierarchical", "'" + a + "'");
}

plan::Routing parse_routing(const std::string& r, uint64_t seed) {
  plan::Routing out;
  out.seed = seed;
  if (r == "uniform") return out;
  if (r.rfind("zipf", 0) == 0) {
    out.kind = "zipf";
    if (r.size() > 4) {
      if (r[4] != ':') throw ConfigError("", 0, 0, "--routing", "uniform, zipf or zipf:S", "'" + r + "'");
      try {
        size_t used = 0;
        out.zipf_s = std::stod(r.substr(5), &used);
        if (used != r.size() - 5 || !(out.zipf_s >= 0)) throw std::invalid_argument(r);
      } catch (const std::logic_error&) {
        throw ConfigError("", 0, 0, "--routing", "zipf:S with S a non-negative number", "'" + r + "'");
      }
    }
    return out;
  }
  throw ConfigError("", 0, 0, "--routing", "uniform, zipf or zipf:S", "'" + r + "'");
}

DType parse_dtype_flag(const std::string& v, const char* flag) {
  auto d = parse_dtype(v);
  if (!d) throw ConfigError("", 0, 0, flag, "a dtype (fp32, bf16, fp16, fp8, int8, int4)", "'" + v + "'");
  return *d;
}

int run_step(const StepArgs& a, const CommonOptions& common) {
  if (a.model.empty()) throw ConfigError("", 0, 0, "--model", "a model file or shipped name", "nothing");
  if (a.gpu.empty() && a.cluster.empty())
    throw ConfigError("", 0, 0, "--gpu", "a GPU (file or shipped name) or a --cluster", "nothing");
  const spec::Model model = spec::load_model_file(data_file(a.model, "scenarios/models"));
  plan::ParallelConfig config;
  config.tp = a.tp, config.pp = a.pp, config.ep = a.ep, config.attn_dp = a.attn_dp;
  if (auto why = config.invalid_reason(); !why.empty()) throw ConfigError("", 0, 0, "--tp/--pp/--ep/--attn-dp", "a consistent layout", why);
  const plan::Batch batch = plan::parse_batch_spec(a.batch, config.attn_dp, "--batch");

  spec::Cluster cluster;
  std::string gpu_type;
  if (!a.cluster.empty()) {
    cluster = spec::load_cluster_file(data_file(a.cluster, "topologies/clusters"));
    if (!a.gpu.empty()) gpu_type = a.gpu;
  } else {
    const spec::Gpu gpu = spec::load_gpu_file(data_file(a.gpu, "topologies/gpus"));
    auto nic = parse_quantity(a.nic_bw, Dimension::kBandwidth);
    if (!nic) throw ConfigError("", 0, 0, "--nic-bw", dimension_example(Dimension::kBandwidth), "'" + a.nic_bw + "'");
    const int nodes = (config.instance_size() + a.gpus_per_node - 1) / a.gpus_per_node;
    cluster = plan::single_type_cluster(gpu, nodes, a.gpus_per_node, *nic, 0.0, 0.0, false);
    gpu_type = gpu.name;
  }
  plan::PlanOptions options;
  options.allow_cross_domain_tp = a.allow_cross_domain_tp;
  options.routing = parse_routing(a.routing, common.seed);
  options.min_kv_tokens = 0;
  if (!a.weight_dtype.empty()) options.weight_dtype_set = true, options.weight_dtype = parse_dtype_flag(a.weight_dtype, "--weight-dtype");
  if (!a.kv_dtype.empty()) options.kv_dtype_set = true, options.kv_dtype = parse_dtype_flag(a.kv_dtype, "--kv-dtype");
  const auto made = plan::make_plan(model, cluster, gpu_type, config, options);
  const plan::Pool& pool = made.plan.pools[0];
  if (pool.placement.empty()) {
    std::string why;
    for (const auto& r : made.feasibility.reasons) why += (why.empty() ? "" : "; ") + r;
    throw ConfigError("", 0, 0, "layout " + config.label(), "a layout that can be placed on " + cluster.name, why);
  }
  if (!made.feasibility.ok && common.verbosity > 0)
    for (const auto& r : made.feasibility.reasons) std::cerr << "parasol: warning: infeasible: " << r << "\n";

  cost::CostOptions copts;
  copts.algo = parse_algo(a.algo);
  const auto table = activate_calibration(a.calibration, common.verbosity);
  copts.calibration = table.get();
  // The engine around the kernels ("none": the bare GPU program, as parasol's executor runs it).
  std::optional<spec::Engine> engine;
  if (a.engine != "none") engine = spec::load_engine_ref(a.engine, "", "--engine");
  copts.engine = engine ? &*engine : nullptr;
  const plan::StepOptions sopts = engine ? plan::step_options(*engine, made.plan, 0, cluster) : plan::StepOptions{};
  const plan::Step step = plan::build_step(made.plan, 0, batch, sopts);
  const cost::StepCost sc = cost::cost_step(step, made.plan, cluster, copts);

  std::vector<int> shown;
  if (a.rank == "all") {
    for (size_t r = 0; r < step.ranks.size(); ++r) shown.push_back(static_cast<int>(r));
  } else if (a.rank == "critical") {
    shown.push_back(sc.critical_rank);
  } else {
    int r = -1;
    try {
      r = std::stoi(a.rank);
    } catch (const std::logic_error&) {
    }
    if (r < 0 || r >= static_cast<int>(step.ranks.size()))
      throw ConfigError("", 0, 0, "--rank", "a rank in [0, " + std::to_string(step.ranks.size()) + "), 'critical' or 'all'", "'" + a.rank + "'");
    shown.push_back(r);
  }

  if (common.json) {
    nlohmann::json j;
    j["model"] = model.name;
    j["gpu"] = made.plan.gpu_type;
    j["cluster"] = cluster.name;
    j["layout"] = config.label();
    j["batch"] = a.batch;
    j["tokens"] = step.tokens;
    j["feasible"] = made.feasibility.ok;
    j["reasons"] = made.feasibility.reasons;
    j["kv_tokens"] = pool.memory.kv_tokens;
    j["total_s"] = sc.total_s;
    j["gpu_s"] = sc.gpu_s;
    j["engine"] = engine ? nlohmann::json{{"name", engine->name},
                                          {"source", engine->source},
                                          {"per_iteration_s", sc.engine_s},
                                          {"cpu_s", sc.engine_cpu_s},
                                          {"serial_s", engine->iteration.serial_s},
                                          {"launch", cost::to_string(sc.launch)},
                                          {"launch_floor_s", sc.launch_floor_s}}
                         : nlohmann::json(nullptr);
    j["critical_rank"] = sc.critical_rank;
    for (const auto& [l, t] : sc.layer_s) j["layers"].push_back({{"layer", l}, {"time_s", t}});
    for (int r : shown) {
      const auto& rc = sc.ranks[static_cast<size_t>(r)];
      nlohmann::json jr = {{"rank", r}, {"gpu", rc.gpu}, {"finish_s", rc.finish_s}, {"busy_s", rc.busy_s}};
      const auto& ops = step.ranks[static_cast<size_t>(r)].ops;
      for (size_t i = 0; i < ops.size(); ++i) {
        const auto& o = ops[i];
        const auto& oc = rc.ops[i];
        jr["ops"].push_back({{"name", o.name}, {"kind", plan::to_string(o.kind)}, {"layer", o.layer},
                             {"shape", shape_of(o, step)}, {"m", o.m}, {"n", o.n}, {"k", o.k}, {"tokens", o.tokens},
                             {"flops", o.flops}, {"bytes", o.bytes}, {"comm_bytes", o.comm_bytes},
                             {"start_s", oc.start_s}, {"wait_s", oc.wait_s}, {"time_s", oc.time.time_s},
                             {"bound", cost::to_string(oc.time.bound)}, {"algo", plan::to_string(oc.algo)}});
      }
      j["ranks"].push_back(jr);
    }
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << model.name << " on " << made.plan.gpu_type << " (" << cluster.name << "), " << config.label() << ", batch "
            << a.batch << " (" << step.tokens << " tokens)\n";
  auto header = [](const char* first) {
    std::cout << std::left << std::setw(24) << first << std::setw(15) << "kind" << std::setw(36) << "shape" << std::right
              << std::setw(12) << "FLOPs" << std::setw(12) << "bytes" << std::setw(12) << "time";
  };
  if (common.verbosity >= 2) {  // -v: every op of every shown rank, then the time per layer
    for (int r : shown) {
      const auto& rc = sc.ranks[static_cast<size_t>(r)];
      std::cout << "\nrank " << r << " (gpu " << rc.gpu << ", stage " << step.ranks[static_cast<size_t>(r)].stage << ")\n";
      header("op");
      std::cout << "  bound\n";
      const auto& ops = step.ranks[static_cast<size_t>(r)].ops;
      for (size_t i = 0; i < ops.size(); ++i) {
        const auto& o = ops[i];
        const auto& oc = rc.ops[i];
        std::cout << std::left << std::setw(24) << o.name << std::setw(15) << plan::to_string(o.kind) << std::setw(36)
                  << shape_of(o, step) << std::right << std::setw(12) << format_count(o.flops) << std::setw(12)
                  << format_bytes(o.bytes) << std::setw(12) << format_time(oc.time.time_s) << "  "
                  << cost::to_string(oc.time.bound);
        if (oc.wait_s > 0) std::cout << " (waited " << format_time(oc.wait_s) << ")";
        std::cout << "\n";
      }
    }
    std::cout << "\nper layer (critical rank " << sc.critical_rank << "):\n";
    for (const auto& [l, t] : sc.layer_s)
      std::cout << "  " << (l < 0 ? std::string("other") : "L" + std::to_string(l)) << "  " << format_time(t) << "\n";
  } else if (common.verbosity > 0) {
    // Default: the ops of each shown rank folded over the layers (same op, kind and shape in every layer: one row
    // with its count, time each and in all), in order of first appearance; -v lists every op.
    for (int r : shown) {
      const auto& rc = sc.ranks[static_cast<size_t>(r)];
      std::cout << "\nrank " << r << " (gpu " << rc.gpu << ", stage " << step.ranks[static_cast<size_t>(r)].stage
                << "), ops folded over layers (-v: every op)\n";
      header("op (per layer: L*.)");
      std::cout << std::setw(7) << "count" << std::setw(12) << "total" << std::setw(7) << "share" << "  bound\n";
      struct Row {
        const plan::Op* op;
        std::string name, shape;
        int count = 0;
        double time_s = 0, wait_s = 0;
        cost::Bound bound;
      };
      std::vector<Row> rows;
      std::map<std::string, size_t> index;
      const auto& ops = step.ranks[static_cast<size_t>(r)].ops;
      double busy = 0;
      for (size_t i = 0; i < ops.size(); ++i) {
        const auto& o = ops[i];
        std::string name = o.name;
        if (o.layer >= 0 && name.rfind("L" + std::to_string(o.layer) + ".", 0) == 0)
          name = "L*." + name.substr(std::to_string(o.layer).size() + 2);
        const std::string shape = shape_of(o, step);
        const std::string key = name + "|" + plan::to_string(o.kind) + "|" + shape;
        auto [it, fresh] = index.try_emplace(key, rows.size());
        if (fresh) rows.push_back({&o, name, shape, 0, 0, 0, rc.ops[i].time.bound});
        Row& row = rows[it->second];
        ++row.count;
        row.time_s += rc.ops[i].time.time_s;
        row.wait_s += rc.ops[i].wait_s;
        busy += rc.ops[i].time.time_s;
      }
      for (const Row& row : rows) {
        std::cout << std::left << std::setw(24) << row.name << std::setw(15) << plan::to_string(row.op->kind)
                  << std::setw(36) << row.shape << std::right << std::setw(12) << format_count(row.op->flops)
                  << std::setw(12) << format_bytes(row.op->bytes) << std::setw(12) << format_time(row.time_s / row.count)
                  << std::setw(7) << row.count << std::setw(12) << format_time(row.time_s) << std::setw(6)
                  << format_number("%.1f", busy > 0 ? 100 * row.time_s / busy : 0) << "%  "
                  << cost::to_string(row.bound);
        if (row.wait_s > 0) std::cout << " (waited " << format_time(row.wait_s) << " in all)";
        std::cout << "\n";
      }
    }
  }
  const auto& cr = sc.ranks[static_cast<size_t>(sc.critical_rank)];
  if (engine) {
    // The engine's per-iteration cost on its own line: what it adds to the GPU time, and where that comes from.
    const bool overlap = engine->iteration.overlap && (config.pp <= 1 || engine->iteration.overlap_with_pp);
    std::cout << "engine " << engine->name << ": " << format_time(sc.engine_s) << " per iteration (CPU work "
              << format_time(sc.engine_cpu_s) << (overlap ? " overlapped with the GPU" : " before the GPU") << ", "
              << format_time(engine->iteration.serial_s) << " serial; kernels: " << cost::to_string(sc.launch);
    if (sc.launch_floor_s > 0) std::cout << ", host launches " << format_time(sc.launch_floor_s);
    std::cout << ")\n";
  }
  std::cout << "iteration: " << format_time(sc.total_s) << " (critical rank " << sc.critical_rank << ": compute "
            << format_time(cr.compute_bound_s) << ", memory " << format_time(cr.memory_bound_s) << ", communication "
            << format_time(cr.comm_s) << ", launch " << format_time(cr.launch_bound_s) << ", waiting "
            << format_time(std::max(0.0, cr.finish_s - cr.busy_s));
  if (engine) std::cout << ", engine " << format_time(sc.engine_s);
  std::cout << ")\n";
  return 0;
}

PARASOL_COMMAND("step", 30, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<StepArgs>();
  CLI::App* sub = app.add_subcommand("step", "Cost of one iteration, op by op, per rank");
  add_common_options(sub, common);
  sub->add_option("--model", args->model, "Model file or shipped name (scenarios/models/NAME.yaml)");
  sub->add_option("--gpu", args->gpu, "GPU file or shipped name (topologies/gpus/NAME.yaml); with --cluster, its GPU type");
  sub->add_option("--cluster", args->cluster, "Cluster file or shipped name (topologies/clusters/NAME.yaml)");
  sub->add_option("--tp", args->tp, "Tensor parallelism")->check(positive_count());
  sub->add_option("--pp", args->pp, "Pipeline stages")->check(positive_count());
  sub->add_option("--ep", args->ep, "Expert parallelism (divides tp x attn-dp)")->check(positive_count());
  sub->add_option("--attn-dp", args->attn_dp, "Attention data-parallel groups")->check(positive_count());
  sub->add_option("--batch", args->batch, "Batch SPEC: prefill:NxL, prefill:NxL@C, decode:N@C, comma-separated")->required();
  sub->add_option("--routing", args->routing, "MoE routing: uniform | zipf | zipf:S (seeded by --seed)");
  sub->add_option("--calibration", args->calibration, "Measured tables (a calibration CSV, a folder of them, an AIConfigurator GPU folder; docs/calibration.md) used where they cover an op");
  sub->add_option("--engine", args->engine,
                  "Serving engine around the kernels: a shipped profile (topologies/engines/NAME.yaml: vllm, sglang, "
                  "trtllm), an engine file, or 'none' (default vllm)");
  sub->add_option("--algo", args->algo, "Collective algorithm: auto | ring | tree | nvls | hierarchical");
  sub->add_option("--rank", args->rank, "Rank whose ops to list: N, 'critical' or 'all'");
  sub->add_option("--weight-dtype", args->weight_dtype, "Override the model's weight dtype");
  sub->add_option("--kv-dtype", args->kv_dtype, "Override the model's KV-cache dtype");
  sub->add_option("--gpus-per-node", args->gpus_per_node, "Without --cluster: GPUs per NVSwitch node")->check(positive_count());
  sub->add_option("--nic-bw", args->nic_bw, "Without --cluster: NIC bandwidth per GPU");
  sub->add_flag("--allow-cross-domain-tp", args->allow_cross_domain_tp, "Let a TP group span scale-up domains");
  sub->footer(
      "Examples:\n"
      "  parasol step --model llama-3.1-70b --gpu h100-sxm --tp 4 --batch prefill:4x2048\n"
      "  parasol step --model llama-3.1-8b --gpu h100-sxm --batch prefill:2x512@4096,decode:64@8192 --json\n"
      "  parasol step --model llama-3.1-70b --gpu h100-sxm --tp 8 --batch decode:1@1024 --engine trtllm\n"
      "  parasol step --model deepseek-v3 --cluster h200-2node --tp 2 --attn-dp 8 --ep 16 --batch decode:256@4096 \\\n"
      "               --routing zipf:1.2 --rank critical");
  return [args, &common] { return run_step(*args, common); };
});

}  // namespace
}  // namespace parasol::tools

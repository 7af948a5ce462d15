// The collective families of the calibration (fit_family.hpp): NCCL's all_reduce, all_gather, reduce_scatter and
// alltoall from AIConfigurator's nccl_perf.csv (or nccl-tests output, nccl_tests.hpp), and the serving engine's own
// all-reduce from custom_allreduce_perf.csv. A sample is one collective over num_gpus GPUs of one NVSwitch node of the
// GPU type: the node is generated from the GPU's spec (scaleup_bw, collective.in_network_reduce; no link latency: the
// fitted protocol hops are the whole step) once per (GPU, n) and its GroupLinks cached.
//   message_size: AIConfigurator's collector runs nccl-tests with -b/-e = S bytes and stores S / bytes-per-element
//   (collector/collect_nccl.py: message_size = size // bytes_per_element; custom_allreduce: the tensor's numel), so
//   S = message_size x element size, the nccl-tests buffer of Op::comm_bytes. Latency is in milliseconds.
//   custom_allreduce_perf.csv: only the CUDA-graph rows (backend *_graph): eager rows add the engine's Python launch
//   path (~15-20 us per call), which belongs to the engine profile's host cost, not to the kernels.
// Fit order and ownership of parameters: all_reduce fits the protocols (LL, LL128, narrow Simple, Simple), the ring penalty, comm_efficiency and NVLS;
// the later families fit only their own section (all_gather / reduce_scatter bandwidths, all_to_all, the custom
// all-reduce), so fitting one never moves another's.
// Thread behaviour: the node cache is guarded by a mutex.
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>

#include "core/cost/collective_cost.hpp"
#include "core/cost/fit_family.hpp"
#include "core/spec/cluster_generators.hpp"

namespace parasol::cost {

namespace {

constexpr double us = 1e-6;

// The GroupLinks of n GPUs of one NVSwitch node of `gpu` (cached by GPU name, bandwidth, NVLS and n).
const GroupLinks& node_links(const spec::Gpu& gpu, int n) {
  static std::mutex mu;
  static std::map<std::tuple<std::string, double, bool, int>, GroupLinks> cache;
  const auto key = std::make_tuple(gpu.name, gpu.scaleup_bw_Bps, gpu.collective.in_network_reduce, n);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  spec::ClusterSpec cs;
  cs.name = "calibration-node-" + gpu.name;
  cs.gpu_types[gpu.name] = gpu;
  spec::NodeType nt;
  nt.name = "node";
  nt.gpu_type = gpu.name;
  nt.gpus = n;
  nt.scaleup.bw_Bps = gpu.scaleup_bw_Bps;
  nt.in_network_reduce = gpu.collective.in_network_reduce;
  cs.node_types.push_back(nt);
  cs.pools.push_back({"node", 0, 1});
  const spec::Cluster c = spec::generate_cluster(cs);
  LinkCache links(c);
  std::vector<int> gpus;
  for (int i = 0; i < n; ++i) gpus.push_back(i);
  return cache.emplace(key, group_links(links, gpus)).first->second;
}

double predict(const Sample& s, const spec::Gpu& gpu, bool custom) {
  if (s.ops.empty() || s.num_gpus < 2) return 0.0;
  CollectiveParams p = CollectiveParams::from(gpu);
  if (custom) {  // the engine's own all-reduce, within the GPU's limits for it
    p.custom_allreduce_max_bytes = std::numeric_limits<double>::infinity();
    p.custom_allreduce_max_gpus = spec::CustomAllReduceParams::kMaxGpus;
  }
  return collective_time(s.ops.front(), node_links(gpu, s.num_gpus), p).time_s;
}

plan::OpKind kind_of(const std::string& op) {
  if (op == "all_reduce") return plan::OpKind::kAllReduce;
  if (op == "all_gather") return plan::OpKind::kAllGather;
  if (op == "reduce_scatter") return plan::OpKind::kReduceScatter;
  return plan::OpKind::kAllToAll;
}

// AIConfigurator's dtype names -> (parasol dtype, bytes per element); false when not modelled.
bool dtype_of(const std::string& t, DType& dt, double& bytes) {
  if (t == "half" || t == "float16") return dt = DType::kFp16, bytes = 2, true;
  if (t == "bfloat16") return dt = DType::kBf16, bytes = 2, true;
  if (t == "int8") return dt = DType::kInt8, bytes = 1, true;
  if (t == "fp8") return dt = DType::kFp8, bytes = 1, true;
  if (t == "float" || t == "float32") return dt = DType::kFp32, bytes = 4, true;
  return false;
}

Sample make_sample(const std::string& family, const std::string& gpu, const std::string& where, const std::string& key,
                   plan::OpKind kind, DType dt, double S, int n, double time_s) {
  Sample s;
  s.family = family;
  s.gpu = gpu;
  s.where = where;
  s.key = key;
  plan::Op op;
  op.kind = kind;
  op.name = family;
  op.dtype = dt;
  op.comm_bytes = S;
  if (kind == plan::OpKind::kAllToAll) op.a2a_send_bytes.assign(static_cast<size_t>(n), S / n);
  s.ops.push_back(std::move(op));
  s.num_gpus = n;
  s.time_s = time_s;
  return s;
}

Family nccl_family(const std::string& name, std::vector<FitParam> params) {
  Family f;
  f.name = name;
  f.tables = {"nccl_perf.csv"};
  f.params = std::move(params);
  f.read = [name](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) {
    for (size_t r = 0; r < t.rows(); ++r) {
      if (t.str(r, "op_name") != name) continue;
      DType dt;
      double bpe = 0;
      const std::string& dts = t.str(r, "nccl_dtype");
      if (!dtype_of(dts, dt, bpe)) continue;
      const int n = static_cast<int>(t.integer(r, "num_gpus", 1, 4096));
      const int64_t m = t.integer(r, "message_size", 1);
      const double ms = t.number(r, "latency", 1e-9, 1e6);
      if (n < 2) continue;
      out.push_back(make_sample(name, gpu, t.where(r), name + " " + dts + " n=" + std::to_string(n) + " m=" + std::to_string(m),
                                kind_of(name), dt, static_cast<double>(m) * bpe, n, ms * 1e-3));
    }
  };
  f.predict = [](const Sample& s, const spec::Gpu& gpu) { return predict(s, gpu, false); };
  return f;
}

FitParam time_param(const std::string& name, std::function<double&(spec::Gpu&)> field, double lo, double hi) {
  return {name, std::move(field), lo, hi, true};
}

}  // namespace

std::vector<Family> collective_families() {
  std::vector<Family> v;
  // All-reduce: the protocols (LL, LL128, Simple), the ring penalty, Simple's NVLink efficiency, NVLS.
  v.push_back(nccl_family(
      "all_reduce",
      {{"efficiency.comm_efficiency", [](spec::Gpu& g) -> double& { return g.eff.comm_efficiency; }, 0.3, 1.0},
       {"collective.ring_penalty", [](spec::Gpu& g) -> double& { return g.collective.ring_penalty; }, 0.0, 3.0},
       time_param("collective.protocols.ll.base", [](spec::Gpu& g) -> double& { return g.collective.ll.base_s; },
                  0.5 * us, 40 * us),
       time_param("collective.protocols.ll.hop", [](spec::Gpu& g) -> double& { return g.collective.ll.hop_s; },
                  0.05 * us, 5 * us),
       {"collective.protocols.ll.bandwidth", [](spec::Gpu& g) -> double& { return g.collective.ll.bandwidth; }, 0.005,
        1.0},
       time_param("collective.protocols.ll128.base", [](spec::Gpu& g) -> double& { return g.collective.ll128.base_s; },
                  0.5 * us, 60 * us),
       time_param("collective.protocols.ll128.hop", [](spec::Gpu& g) -> double& { return g.collective.ll128.hop_s; },
                  0.05 * us, 10 * us),
       {"collective.protocols.ll128.bandwidth",
        [](spec::Gpu& g) -> double& { return g.collective.ll128.bandwidth; }, 0.05, 1.0},
       time_param("collective.protocols.narrow.base", [](spec::Gpu& g) -> double& { return g.collective.narrow.base_s; },
                  0.5 * us, 80 * us),
       time_param("collective.protocols.narrow.hop", [](spec::Gpu& g) -> double& { return g.collective.narrow.hop_s; },
                  0.05 * us, 10 * us),
       {"collective.protocols.narrow.bandwidth",
        [](spec::Gpu& g) -> double& { return g.collective.narrow.bandwidth; }, 0.02, 1.0},
       time_param("collective.protocols.simple.base",
                  [](spec::Gpu& g) -> double& { return g.collective.simple.base_s; }, 0.5 * us, 100 * us),
       time_param("collective.protocols.simple.hop", [](spec::Gpu& g) -> double& { return g.collective.simple.hop_s; },
                  0.05 * us, 20 * us),
       // Lower bounds 0: a GPU without NVLS (collective.in_network_reduce false) keeps them unset.
       {"efficiency.nvls_efficiency", [](spec::Gpu& g) -> double& { return g.eff.nvls_efficiency; }, 0.0, 1.0},
       time_param("efficiency.nvls_latency", [](spec::Gpu& g) -> double& { return g.eff.nvls_latency_s; }, 0.0,
                  200 * us)}));
  auto kind_params = [](const std::string& k, spec::CollectiveKindParams spec::CollectiveModelParams::*m) {
    return std::vector<FitParam>{
        {"collective." + k + ".efficiency", [m](spec::Gpu& g) -> double& { return (g.collective.*m).efficiency; }, 0.3,
         1.0},
        {"collective." + k + ".ring_penalty", [m](spec::Gpu& g) -> double& { return (g.collective.*m).ring_penalty; },
         0.0, 3.0},
        {"collective." + k + ".ll_bandwidth", [m](spec::Gpu& g) -> double& { return (g.collective.*m).ll_bandwidth; },
         0.005, 1.0},
        {"collective." + k + ".ll128_bandwidth",
         [m](spec::Gpu& g) -> double& { return (g.collective.*m).ll128_bandwidth; }, 0.05, 1.0},
        {"collective." + k + ".narrow_bandwidth",
         [m](spec::Gpu& g) -> double& { return (g.collective.*m).narrow_bandwidth; }, 0.02, 1.0}};
  };
  v.push_back(nccl_family("all_gather", kind_params("all_gather", &spec::CollectiveModelParams::all_gather)));
  v.push_back(nccl_family("reduce_scatter", kind_params("reduce_scatter", &spec::CollectiveModelParams::reduce_scatter)));
  v.push_back(nccl_family(
      "alltoall",
      {time_param("collective.all_to_all.ll_base", [](spec::Gpu& g) -> double& { return g.collective.all_to_all.ll_base_s; },
                  0.5 * us, 40 * us),
       time_param("collective.all_to_all.ll_peer", [](spec::Gpu& g) -> double& { return g.collective.all_to_all.ll_peer_s; },
                  0.01 * us, 5 * us),
       {"collective.all_to_all.ll_bandwidth", [](spec::Gpu& g) -> double& { return g.collective.all_to_all.ll_bandwidth; },
        0.002, 1.0},
       time_param("collective.all_to_all.narrow_base",
                  [](spec::Gpu& g) -> double& { return g.collective.all_to_all.narrow_base_s; }, 0.5 * us, 80 * us),
       time_param("collective.all_to_all.narrow_peer",
                  [](spec::Gpu& g) -> double& { return g.collective.all_to_all.narrow_peer_s; }, 0.01 * us, 10 * us),
       {"collective.all_to_all.narrow_bandwidth",
        [](spec::Gpu& g) -> double& { return g.collective.all_to_all.narrow_bandwidth; }, 0.02, 1.0},
       time_param("collective.all_to_all.simple_base",
                  [](spec::Gpu& g) -> double& { return g.collective.all_to_all.simple_base_s; }, 0.5 * us, 100 * us),
       time_param("collective.all_to_all.simple_peer",
                  [](spec::Gpu& g) -> double& { return g.collective.all_to_all.simple_peer_s; }, 0.01 * us, 10 * us),
       {"collective.all_to_all.efficiency", [](spec::Gpu& g) -> double& { return g.collective.all_to_all.efficiency; },
        0.3, 1.0},
       {"collective.all_to_all.ring_penalty",
        [](spec::Gpu& g) -> double& { return g.collective.all_to_all.ring_penalty; }, 0.0, 3.0}}));

  Family car;
  car.name = "custom_all_reduce";
  car.tables = {"custom_allreduce_perf.csv"};
  auto cr = [](spec::Gpu& g) -> spec::CustomAllReduceParams& { return g.collective.custom_all_reduce; };
  car.params = {
      time_param("collective.custom_all_reduce.one_shot.base", [cr](spec::Gpu& g) -> double& { return cr(g).one_shot_base_s; },
                 0.5 * us, 40 * us),
      time_param("collective.custom_all_reduce.one_shot.peer", [cr](spec::Gpu& g) -> double& { return cr(g).one_shot_peer_s; },
                 0.005 * us, 5 * us),
      {"collective.custom_all_reduce.one_shot.efficiency",
       [cr](spec::Gpu& g) -> double& { return cr(g).one_shot_efficiency; }, 0.1, 1.0},
      {"collective.custom_all_reduce.one_shot.peer_efficiency",
       [cr](spec::Gpu& g) -> double& { return cr(g).one_shot_peer_efficiency; }, 0.02, 1.0},
      time_param("collective.custom_all_reduce.two_shot.base", [cr](spec::Gpu& g) -> double& { return cr(g).two_shot_base_s; },
                 0.5 * us, 60 * us),
      time_param("collective.custom_all_reduce.two_shot.peer", [cr](spec::Gpu& g) -> double& { return cr(g).two_shot_peer_s; },
                 0.005 * us, 10 * us),
      {"collective.custom_all_reduce.two_shot.efficiency",
       [cr](spec::Gpu& g) -> double& { return cr(g).two_shot_efficiency; }, 0.1, 1.0},
      // Lower bounds 0: a GPU whose engine has no symmetric-memory path keeps them unset.
      time_param("collective.custom_all_reduce.symmetric_memory.base",
                 [cr](spec::Gpu& g) -> double& { return cr(g).symm_base_s; }, 0.0, 100 * us),
      {"collective.custom_all_reduce.symmetric_memory.efficiency",
       [cr](spec::Gpu& g) -> double& { return cr(g).symm_efficiency; }, 0.0, 1.0}};
  car.read = [](const CsvTable& t, const std::string& gpu, std::vector<Sample>& out) {
    const bool has_backend = t.has("backend");
    for (size_t r = 0; r < t.rows(); ++r) {
      if (t.str(r, "op_name") != "all_reduce") continue;
      const std::string backend = has_backend ? t.str(r, "backend") : t.str(r, "implementation");
      const std::string& source = t.str(r, "kernel_source");
      auto ends = [](const std::string& s, const std::string& x) {
        return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
      };
      if (ends(backend, "_eager") || ends(source, "_eager")) continue;
      DType dt;
      double bpe = 0;
      const std::string& dts = t.str(r, "allreduce_dtype");
      if (!dtype_of(dts, dt, bpe)) continue;
      const int n = static_cast<int>(t.integer(r, "num_gpus", 1, 4096));
      const int64_t m = t.integer(r, "message_size", 1);
      const double ms = t.number(r, "latency", 1e-9, 1e6);
      if (n < 2) continue;
      out.push_back(make_sample("custom_all_reduce", gpu, t.where(r),
                                "custom_all_reduce " + backend + " " + dts + " n=" + std::to_string(n) + " m=" + std::to_string(m),
                                plan::OpKind::kAllReduce, dt, static_cast<double>(m) * bpe, n, ms * 1e-3));
    }
  };
  car.predict = [](const Sample& s, const spec::Gpu& gpu) { return predict(s, gpu, true); };
  v.push_back(std::move(car));
  return v;
}

}  // namespace parasol::cost

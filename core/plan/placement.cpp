// Placement of ranks on the cluster and make_plan. Rules in placement.hpp.
#include "core/plan/placement.hpp"

#include <algorithm>
#include <map>

#include "core/common/error.hpp"

namespace parasol::plan {
namespace {

// Free GPUs of one type grouped by scale-up domain, in domain order.
struct FreeDomains {
  std::vector<std::vector<int>> free;  // per domain, ascending GPU index
  size_t max_size = 0;                 // largest domain (of this type)

  int first_fit(size_t need) const {
    for (size_t d = 0; d < free.size(); ++d)
      if (free[d].size() >= need) return static_cast<int>(d);
    return -1;
  }
  size_t total() const {
    size_t n = 0;
    for (const auto& d : free) n += d.size();
    return n;
  }
  void take(int d, size_t n, std::vector<int>& out) {
    auto& f = free[static_cast<size_t>(d)];
    out.insert(out.end(), f.begin(), f.begin() + static_cast<long>(n));
    f.erase(f.begin(), f.begin() + static_cast<long>(n));
  }
  void take_spanning(size_t n, std::vector<int>& out) {
    for (auto& f : free) {
      while (n > 0 && !f.empty()) {
        out.push_back(f.front());
        f.erase(f.begin());
        --n;
      }
    }
  }
};

FreeDomains free_domains(const spec::Cluster& c, const std::string& gpu_type, const std::vector<bool>& used) {
  std::map<int, std::vector<int>> by_domain;  // ordered: deterministic
  const int n = c.gpu_count();
  for (int g = 0; g < n; ++g) {
    const auto& v = c.graph[c.gpus[static_cast<size_t>(g)]];
    if (v.gpu_type != gpu_type) continue;
    int d = v.domain >= 0 ? v.domain : static_cast<int>(c.scaleup_domains.size()) + g;  // no domain: alone
    auto& list = by_domain[d];
    if (!(g < static_cast<int>(used.size()) && used[static_cast<size_t>(g)])) list.push_back(g);
  }
  FreeDomains fd;
  for (auto& [d, list] : by_domain) {
    fd.max_size = std::max(fd.max_size, list.size());
    fd.free.push_back(std::move(list));
  }
  // max_size counts free GPUs; a domain partly used by another pool is smaller for this pool, as intended.
  return fd;
}

}  // namespace

PlacementResult place(const spec::Cluster& cluster, const std::string& gpu_type, const ParallelConfig& c,
                      const PlanOptions& options, const std::vector<bool>& used) {
  PlacementResult r;
  FreeDomains fd = free_domains(cluster, gpu_type, used);
  const size_t need = static_cast<size_t>(c.total_gpus());
  const size_t have = fd.total();
  if (need > have) {
    r.feasibility.fail("needs " + std::to_string(need) + " GPUs of type " + gpu_type + ", " + std::to_string(have) +
                       " available");
    return r;
  }
  const size_t tp = static_cast<size_t>(c.tp), stage = static_cast<size_t>(c.ranks_per_stage());
  if (tp > fd.max_size && !options.allow_cross_domain_tp) {
    r.feasibility.fail("tp " + std::to_string(tp) + " exceeds the largest scale-up domain (" +
                       std::to_string(fd.max_size) + " GPUs of type " + gpu_type +
                       "): a TP group must stay inside one scale-up domain");
    return r;
  }
  for (int i = 0; i < c.dp; ++i) {
    std::vector<int> ranks;
    ranks.reserve(static_cast<size_t>(c.instance_size()));
    for (int s = 0; s < c.pp; ++s) {
      if (int d = fd.first_fit(stage); d >= 0) {
        fd.take(d, stage, ranks);
        continue;
      }
      for (int a = 0; a < c.attn_dp; ++a) {
        if (int d = fd.first_fit(tp); d >= 0) {
          fd.take(d, tp, ranks);
        } else if (options.allow_cross_domain_tp) {
          fd.take_spanning(tp, ranks);
        } else {
          r.feasibility.fail("no scale-up domain has " + std::to_string(tp) + " free GPUs left for a TP group of instance " +
                             std::to_string(i) + " (fragmented)");
          return r;
        }
      }
    }
    r.placement.push_back(std::move(ranks));
  }
  if (options.allow_cross_domain_tp) {
    for (const auto& inst : r.placement)
      for (size_t g = 0; g + tp <= inst.size(); g += tp) {
        int d0 = cluster.domain_of(inst[g]);
        for (size_t t = 1; t < tp; ++t)
          if (cluster.domain_of(inst[g + t]) != d0 || d0 < 0) {
            r.feasibility.reasons.push_back("note: a TP group spans scale-up domains (allowed)");
            return r;
          }
      }
  }
  return r;
}

std::string resolve_gpu_type(const spec::Cluster& cluster, const std::string& gpu_type) {
  if (!gpu_type.empty()) {
    if (!cluster.gpu_types.count(gpu_type)) {
      std::string names;
      for (const auto& [n, g] : cluster.gpu_types) names += (names.empty() ? "" : ", ") + n;
      throw ConfigError("", 0, 0, "gpu_type", "one of the cluster's GPU types (" + names + ")", "'" + gpu_type + "'");
    }
    return gpu_type;
  }
  if (cluster.gpu_types.size() != 1)
    throw ConfigError("", 0, 0, "gpu_type", "a GPU type (the cluster has " +
                                                std::to_string(cluster.gpu_types.size()) + ")", "none");
  return cluster.gpu_types.begin()->first;
}

namespace {

Pool make_pool(const spec::Model& model, const spec::Cluster& cluster, const std::string& type,
               const ParallelConfig& config, const PlanOptions& options, const std::string& role,
               std::vector<bool>& used, Feasibility& f) {
  Pool pool;
  pool.role = role;
  pool.config = config;
  pool.gpu_type = type;
  pool.max_batch_tokens = options.max_batch_tokens;
  pool.max_batch_seqs = options.max_batch_seqs;
  const std::string prefix = role == "mixed" ? "" : role + ": ";
  auto fr = check_feasibility(model, cluster.gpu_types.at(type), config, options);
  for (auto& why : fr.feasibility.reasons) f.reasons.push_back(prefix + why);
  f.ok = f.ok && fr.feasibility.ok;
  pool.stage_layers = fr.stage_layers;
  pool.memory = fr.memory;
  if (config.invalid_reason().empty()) {
    auto pr = place(cluster, type, config, options, used);
    for (auto& why : pr.feasibility.reasons) f.reasons.push_back(prefix + why);
    f.ok = f.ok && pr.feasibility.ok;
    pool.placement = std::move(pr.placement);
    for (const auto& inst : pool.placement)
      for (int g : inst) used[static_cast<size_t>(g)] = true;
  }
  return pool;
}

Plan plan_shell(const spec::Model& model, const spec::Cluster& cluster, const std::string& type,
                const PlanOptions& options) {
  Plan p;
  p.model = model;
  p.gpu_type = type;
  p.cluster_name = cluster.name;
  p.weight_dtype = options.weight_dtype_set ? options.weight_dtype : model.weight_dtype;
  p.kv_dtype = options.kv_dtype_set ? options.kv_dtype : model.kv_dtype;
  p.routing = options.routing;
  return p;
}

}  // namespace

MadePlan make_plan(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                   const ParallelConfig& config, const PlanOptions& options) {
  const std::string type = resolve_gpu_type(cluster, gpu_type);
  MadePlan out;
  out.plan = plan_shell(model, cluster, type, options);
  std::vector<bool> used(static_cast<size_t>(cluster.gpu_count()), false);
  out.plan.pools.push_back(make_pool(model, cluster, type, config, options, "mixed", used, out.feasibility));
  return out;
}

MadePlan make_plan(const spec::Model& model, const spec::Cluster& cluster, const std::string& gpu_type,
                   const DisaggConfig& config, const PlanOptions& options) {
  const std::string type = resolve_gpu_type(cluster, gpu_type);
  MadePlan out;
  out.plan = plan_shell(model, cluster, type, options);
  std::vector<bool> used(static_cast<size_t>(cluster.gpu_count()), false);
  out.plan.pools.push_back(make_pool(model, cluster, type, config.prefill, options, "prefill", used, out.feasibility));
  out.plan.pools.push_back(make_pool(model, cluster, type, config.decode, options, "decode", used, out.feasibility));
  return out;
}

}  // namespace parasol::plan

// cost_step / CostModel: per-rank op times with collectives as barriers (step_cost.hpp).
#include "core/cost/step_cost.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include "core/common/error.hpp"
#include "core/common/hash.hpp"

namespace parasol::cost {

using plan::OpKind;

const GroupLinks& LinkTables::group(const std::vector<int>& gpus) {
  auto it = groups_.find(gpus);
  if (it == groups_.end()) it = groups_.emplace(gpus, group_links(links_, gpus)).first;
  return it->second;
}

namespace {

// The compute ops of a step repeat on every layer and on every rank of a group (same shapes, same per-sequence
// lengths), and their models are not trivial (tiles and waves; every sequence; the element-wise kinds by name).
// A direct-mapped cache of (op, GPU, calibration) -> time, matched on every field op_time reads for them (op_cost.cpp,
// gemm_cost.cpp, attention_cost.cpp, calibration.cpp), costs each distinct op once; a collision only evicts. Lengths
// are compared by Op::lens_id when both ops have one (build_step names each group's lengths), else element by element.
class OpTimeMemo {
 public:
  // `active`: active_calibration(), read once per step by the caller.
  OpTime time(const plan::Op& op, const spec::Gpu& gpu, const CalibrationTable* cal, const CalibrationTable* active) {
    Key k;
    k.v[0] = static_cast<uint64_t>(op.kind) | static_cast<uint64_t>(op.dtype) << 16;
    k.v[1] = static_cast<uint64_t>(op.m), k.v[2] = static_cast<uint64_t>(op.n), k.v[3] = static_cast<uint64_t>(op.k);
    k.v[4] = static_cast<uint64_t>(op.batch), k.v[5] = static_cast<uint64_t>(op.tokens);
    k.v[6] = static_cast<uint64_t>(op.heads), k.v[7] = static_cast<uint64_t>(op.kv_heads);
    k.v[8] = static_cast<uint64_t>(op.head_dim), k.v[9] = static_cast<uint64_t>(op.v_head_dim);
    std::memcpy(&k.v[10], &op.flops, 8);
    std::memcpy(&k.v[11], &op.bytes, 8);
    k.v[12] = reinterpret_cast<uintptr_t>(&gpu), k.v[13] = reinterpret_cast<uintptr_t>(cal);
    k.v[14] = reinterpret_cast<uintptr_t>(active);
    const bool lens = !op.q_lens.empty() || !op.ctx_lens.empty();
    // Independent products summed (no multiply chain through the fields), then one avalanche step.
    static constexpr uint64_t kMul[15] = {
        0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0xd6e8feb86659fd93ull,
        0xa0761d6478bd642full, 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull,
        0x1d8e4e27c47d124full, 0xc2b2ae3d27d4eb4full, 0x165667b19e3779f9ull, 0x27d4eb2f165667c5ull,
        0x85ebca77c2b2ae63ull, 0xff51afd7ed558ccdull, 0xc4ceb9fe1a85ec53ull};
    uint64_t h = 0;
#pragma GCC unroll 15
    for (size_t i = 0; i < 15; ++i) h += k.v[i] * kMul[i];
    if (lens) h += (op.lens_id != 0 ? op.lens_id : plan::lengths_hash(op.q_lens, op.ctx_lens)) * 0x2545f4914f6cdd1dull;
    for (int64_t x : op.expert_tokens) h = fnv1a64_word(h, static_cast<uint64_t>(x));
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 29;
    Entry& e = entries_[h & (kEntries - 1)];
    uint64_t diff = e.used ? 0 : 1;
#pragma GCC unroll 15
    for (size_t i = 0; i < 15; ++i) diff |= e.key.v[i] ^ k.v[i];  // branch-free
    if (diff == 0 && e.expert_tokens == op.expert_tokens &&
        (!lens || (op.lens_id != 0 && e.lens_id == op.lens_id) || (e.q_lens == op.q_lens && e.ctx_lens == op.ctx_lens)))
      return e.time;
    e.used = true;
    e.key = k;
    e.lens_id = op.lens_id;
    e.q_lens.assign(op.q_lens.begin(), op.q_lens.end());
    e.ctx_lens.assign(op.ctx_lens.begin(), op.ctx_lens.end());
    e.expert_tokens.assign(op.expert_tokens.begin(), op.expert_tokens.end());
    e.time = op_time(op, gpu, cal);
    return e.time;
  }

 private:
  static constexpr size_t kEntries = 256;  // a power of two
  struct Key {
    uint64_t v[15];  // kind | dtype, m, n, k, batch, tokens, heads, kv heads, head dims, FLOPs, bytes, GPU, tables
  };
  struct Entry {
    bool used = false;
    Key key;
    uint64_t lens_id = 0;
    std::vector<int64_t> q_lens, ctx_lens, expert_tokens;
    OpTime time;
  };
  std::array<Entry, kEntries> entries_;
};

}  // namespace

struct CostModel::Impl {
  plan::Plan plan;
  const spec::Cluster* cluster;
  CostOptions options;
  std::unique_ptr<LinkTables> own;  // when not shared
  LinkTables* tables;
  LinkCache& links;
  StepCost scratch;  // step_time_s reuses its vectors
  mutable OpTimeMemo op_memo;

  OpTime compute_time(const plan::Op& op, const spec::Gpu& gpu, const CalibrationTable* active) const {
    return op_memo.time(op, gpu, options.calibration, active);
  }

  Impl(const plan::Plan& p, const spec::Cluster& c, CostOptions o, LinkTables* shared)
      : plan(p),
        cluster(&c),
        options(o),
        own(shared ? nullptr : std::make_unique<LinkTables>(c)),
        tables(shared ? shared : own.get()),
        links(tables->links()) {}

  const GroupLinks& group(const std::vector<int>& gpus) { return tables->group(gpus); }

  void run(const plan::Step& step, StepCost& out);
};

namespace {

// A collective inside one scale-up domain that the calibration measured (options' or the active one) takes the
// measured time; elsewhere the model's stands.
void measured_collective(const CostOptions& options, const spec::Gpu& gpu, plan::OpKind kind, const GroupLinks& links,
                         double bytes, CollectiveTime& ct) {
  const CalibrationTable* cal = options.calibration ? options.calibration : active_calibration();
  if (!cal || !links.one_domain) return;
  if (auto t = cal->lookup_collective(kind, gpu.name, links.n, bytes)) ct.time_s = *t;
}

bool is_attention(OpKind k) { return k == OpKind::kAttention || k == OpKind::kMlaAttention; }

struct Barrier {
  int arrived = 0;
  double latest_s = 0;
  std::vector<const plan::Op*> ops;  // per member (group order)
};

}  // namespace

void CostModel::Impl::run(const plan::Step& step, StepCost& out) {
  if (step.pool < 0 || step.pool >= static_cast<int>(plan.pools.size()))
    throw Error("cost_step: step of pool " + std::to_string(step.pool) + ", the plan has " +
                std::to_string(plan.pools.size()));
  const plan::Pool& pool = plan.pools[static_cast<size_t>(step.pool)];
  if (options.instance < 0 || options.instance >= static_cast<int>(pool.placement.size()))
    throw Error("cost_step: instance " + std::to_string(options.instance) + " is not placed (plan has " +
                std::to_string(pool.placement.size()) + " instances)");
  const auto& place = pool.placement[static_cast<size_t>(options.instance)];
  const std::string& type = pool.gpu_type.empty() ? plan.gpu_type : pool.gpu_type;
  auto gt = cluster->gpu_types.find(type);
  if (gt == cluster->gpu_types.end()) throw Error("cost_step: GPU type '" + type + "' not in the cluster");
  const spec::Gpu& gpu = gt->second;
  const CollectiveParams coll_params = collective_params(gpu, options.engine);  // NCCL-like latencies, custom AR
  const CalibrationTable* active = active_calibration();
  const int n = static_cast<int>(step.ranks.size());
  if (static_cast<int>(place.size()) < n) throw Error("cost_step: placement has fewer GPUs than the step's ranks");

  // Group links and member positions.
  std::vector<const GroupLinks*> gl(step.groups.size());
  std::vector<std::vector<int>> pos(step.groups.size());  // [group][rank] -> member index, -1 if not a member
  for (size_t g = 0; g < step.groups.size(); ++g) {
    std::vector<int> gpus;
    pos[g].assign(static_cast<size_t>(n), -1);
    for (size_t i = 0; i < step.groups[g].ranks.size(); ++i) {
      const int r = step.groups[g].ranks[i];
      gpus.push_back(place[static_cast<size_t>(r)]);
      pos[g][static_cast<size_t>(r)] = static_cast<int>(i);
    }
    gl[g] = &group(gpus);
  }

  out.ranks.resize(static_cast<size_t>(n));
  std::vector<size_t> pc(static_cast<size_t>(n), 0);
  std::vector<double> now(static_cast<size_t>(n), 0.0);
  std::vector<bool> waiting(static_cast<size_t>(n), false);
  std::vector<Barrier> barriers(step.groups.size());
  std::map<std::pair<int, int>, Barrier> p2p;
  for (int r = 0; r < n; ++r) {
    auto& rc = out.ranks[static_cast<size_t>(r)];
    std::vector<OpCost> keep = std::move(rc.ops);  // reuse the allocation (CostModel::cost(step, out))
    rc = RankCost{};
    rc.ops = std::move(keep);  // every entry is overwritten below (finish_op sets all its fields)
    rc.rank = step.ranks[static_cast<size_t>(r)].rank;
    rc.gpu = place[static_cast<size_t>(r)];
    rc.ops.resize(step.ranks[static_cast<size_t>(r)].ops.size());
  }
  auto finish_op = [&](int r, double start, double wait, const OpTime& t, plan::CollectiveAlgo algo) {
    auto& rc = out.ranks[static_cast<size_t>(r)];
    auto& oc = rc.ops[pc[static_cast<size_t>(r)]];
    oc.start_s = start, oc.wait_s = wait, oc.time = t, oc.algo = algo;
    now[static_cast<size_t>(r)] = start + t.time_s;
    ++pc[static_cast<size_t>(r)];
    waiting[static_cast<size_t>(r)] = false;
  };

  int done = 0;
  std::vector<bool> finished(static_cast<size_t>(n), false);
  bool progress = true;
  while (done < n && progress) {
    progress = false;
    for (int r = 0; r < n; ++r) {
      const auto& ops = step.ranks[static_cast<size_t>(r)].ops;
      while (!finished[static_cast<size_t>(r)] && !waiting[static_cast<size_t>(r)]) {
        if (pc[static_cast<size_t>(r)] == ops.size()) {
          finished[static_cast<size_t>(r)] = true;
          ++done;
          progress = true;
          break;
        }
        const plan::Op& op = ops[pc[static_cast<size_t>(r)]];
        progress = true;
        if (!plan::is_communication(op.kind)) {
          finish_op(r, now[static_cast<size_t>(r)], 0.0, compute_time(op, gpu, active), plan::CollectiveAlgo::kAuto);
          continue;
        }
        waiting[static_cast<size_t>(r)] = true;
        if (op.kind == OpKind::kSend || op.kind == OpKind::kRecv) {
          const int src = op.kind == OpKind::kSend ? r : op.peer, dst = op.kind == OpKind::kSend ? op.peer : r;
          if (op.peer < 0 || op.peer >= n) throw Error("cost_step: " + op.name + " on rank " + std::to_string(r) + " has no peer");
          auto& b = p2p[{src, dst}];
          b.latest_s = std::max(b.latest_s, now[static_cast<size_t>(r)]);
          if (++b.arrived < 2) break;
          OpTime t;
          t.bound = Bound::kCommunication;
          const double bytes = std::max(op.comm_bytes, 0.0);
          t.comm_s = t.time_s =
              p2p_time(bytes, links.path(place[static_cast<size_t>(src)], place[static_cast<size_t>(dst)]), coll_params);
          const double start = b.latest_s;
          for (int x : {src, dst}) finish_op(x, start, start - now[static_cast<size_t>(x)], t, plan::CollectiveAlgo::kDirect);
          p2p.erase({src, dst});
          break;
        }
        if (op.group < 0 || op.group >= static_cast<int>(step.groups.size()) || pos[static_cast<size_t>(op.group)][static_cast<size_t>(r)] < 0)
          throw Error("cost_step: " + op.name + " on rank " + std::to_string(r) + " names a group it is not in");
        const auto& grp = step.groups[static_cast<size_t>(op.group)];
        auto& b = barriers[static_cast<size_t>(op.group)];
        if (b.ops.size() != grp.ranks.size()) b.ops.assign(grp.ranks.size(), nullptr);
        b.ops[static_cast<size_t>(pos[static_cast<size_t>(op.group)][static_cast<size_t>(r)])] = &op;
        b.latest_s = std::max(b.latest_s, now[static_cast<size_t>(r)]);
        if (++b.arrived < static_cast<int>(grp.ranks.size())) break;
        const GroupLinks& links_g = *gl[static_cast<size_t>(op.group)];
        CollectiveTime ct;
        if (op.kind == OpKind::kAllToAll) {
          ct.algo = plan::CollectiveAlgo::kDirect;
          ct.time_s = all_to_all_time(b.ops, links_g, coll_params);
        } else {
          double S = 0;  // members may differ (uneven shares): the largest buffer decides
          for (const auto* o : b.ops) S = std::max(S, o->comm_bytes);
          plan::Op shaped = op;
          shaped.comm_bytes = S;
          ct = collective_time(shaped, links_g, coll_params, op.algo != plan::CollectiveAlgo::kAuto ? op.algo : options.algo);
          measured_collective(options, gpu, op.kind, links_g, S, ct);
        }
        OpTime t;
        t.bound = Bound::kCommunication;
        t.comm_s = t.time_s = ct.time_s;
        const double start = b.latest_s;
        for (int x : grp.ranks) finish_op(x, start, start - now[static_cast<size_t>(x)], t, ct.algo);
        b = Barrier{};
        break;
      }
    }
  }
  if (done < n) {
    for (int r = 0; r < n; ++r)
      if (!finished[static_cast<size_t>(r)])
        throw Error("cost_step: deadlock: rank " + std::to_string(r) + " waits at " +
                    step.ranks[static_cast<size_t>(r)].ops[pc[static_cast<size_t>(r)]].name);
  }
  out.total_s = 0;
  out.critical_rank = 0;
  const spec::Engine* eng = options.engine;
  const int adp = std::max(1, pool.config.attn_dp);
  out.launch = eng ? launch_mode(*eng, step.seqs, step.tokens, adp) : Launch::kGraph;
  out.launch_floor_s = 0;
  const bool floors = eng && out.launch != Launch::kGraph && eng->launch_s > 0;
  for (int r = 0; r < n; ++r) {
    auto& rc = out.ranks[static_cast<size_t>(r)];
    rc.finish_s = now[static_cast<size_t>(r)];
    if (floors) {  // the host issues this rank's kernels one by one
      const auto& ops = step.ranks[static_cast<size_t>(r)].ops;
      int64_t attention = 0;
      for (const auto& op : ops) attention += is_attention(op.kind) ? 1 : 0;
      const double floor_s = launch_floor_s(*eng, out.launch, static_cast<int64_t>(ops.size()), attention);
      out.launch_floor_s = std::max(out.launch_floor_s, floor_s);
      rc.finish_s = std::max(rc.finish_s, floor_s);
    }
    for (const auto& oc : rc.ops) {
      rc.busy_s += oc.time.time_s;
      switch (oc.time.bound) {
        case Bound::kCompute: rc.compute_bound_s += oc.time.time_s; break;
        case Bound::kMemory: rc.memory_bound_s += oc.time.time_s; break;
        case Bound::kCommunication: rc.comm_s += oc.time.time_s; break;
        case Bound::kLaunch: rc.launch_bound_s += oc.time.time_s; break;
        case Bound::kCalibrated: rc.calibrated_s += oc.time.time_s; break;
      }
    }
    if (rc.finish_s > out.total_s) {
      out.total_s = rc.finish_s;
      out.critical_rank = r;
    }
  }
  out.gpu_s = out.total_s;
  out.engine_cpu_s = eng ? iteration_cpu_s(*eng, step.seqs, step.tokens, adp) : 0.0;
  if (eng) out.total_s = engine_step_s(*eng, out.gpu_s, out.engine_cpu_s, pool.config.pp);
  out.engine_s = out.total_s - out.gpu_s;
  out.layer_s.clear();
  if (n > 0) {
    const auto& ops = step.ranks[static_cast<size_t>(out.critical_rank)].ops;
    const auto& oc = out.ranks[static_cast<size_t>(out.critical_rank)].ops;
    for (size_t i = 0; i < ops.size(); ++i) out.layer_s[ops[i].layer] += oc[i].time.time_s + oc[i].wait_s;
  }
}

CostModel::CostModel(const plan::Plan& plan, const spec::Cluster& cluster, CostOptions options)
    : impl_(std::make_unique<Impl>(plan, cluster, options, nullptr)) {}
CostModel::CostModel(const plan::Plan& plan, const spec::Cluster& cluster, LinkTables& shared, CostOptions options)
    : impl_(std::make_unique<Impl>(plan, cluster, options, &shared)) {}
CostModel::~CostModel() = default;
CostModel::CostModel(CostModel&&) noexcept = default;
CostModel& CostModel::operator=(CostModel&&) noexcept = default;

StepCost CostModel::cost(const plan::Step& step) {
  StepCost out;
  impl_->run(step, out);
  return out;
}

void CostModel::cost(const plan::Step& step, StepCost& out) { impl_->run(step, out); }

double CostModel::step_time_s(const plan::Step& step) {
  impl_->run(step, impl_->scratch);
  return impl_->scratch.total_s;
}

bool CostModel::cost_symmetric_rank(const plan::Step& step, size_t index, std::vector<OpCost>& out) {
  return cost_symmetric_rank(step, index, out, false);
}

bool CostModel::cost_symmetric_rank(const plan::Step& step, size_t index, std::vector<OpCost>& out,
                                    bool symmetric_all_to_all) {
  const Impl& im = *impl_;
  if (step.pool < 0 || step.pool >= static_cast<int>(im.plan.pools.size()) || index >= step.ranks.size()) return false;
  const plan::Pool& pool = im.plan.pools[static_cast<size_t>(step.pool)];
  if (im.options.instance < 0 || im.options.instance >= static_cast<int>(pool.placement.size())) return false;
  const auto& place = pool.placement[static_cast<size_t>(im.options.instance)];
  const std::string& type = pool.gpu_type.empty() ? im.plan.gpu_type : pool.gpu_type;
  auto gt = im.cluster->gpu_types.find(type);
  if (gt == im.cluster->gpu_types.end()) return false;
  const spec::Gpu& gpu = gt->second;
  const CollectiveParams coll_params = collective_params(gpu, im.options.engine);
  std::vector<const GroupLinks*> gl(step.groups.size(), nullptr);
  const auto& ops = step.ranks[index].ops;
  const int r = step.ranks[index].rank;
  out.resize(ops.size());
  double now = 0;
  std::vector<int> gpus;
  const CalibrationTable* active = active_calibration();
  for (size_t i = 0; i < ops.size(); ++i) {
    const plan::Op& op = ops[i];
    OpCost& oc = out[i];
    oc = OpCost{};
    oc.start_s = now;
    if (!plan::is_communication(op.kind)) {
      oc.time = im.compute_time(op, gpu, active);
    } else {
      if (op.kind == OpKind::kSend || op.kind == OpKind::kRecv) return false;
      if (op.kind == OpKind::kAllToAll && !symmetric_all_to_all) return false;
      if (op.group < 0 || op.group >= static_cast<int>(step.groups.size())) return false;
      const auto& members = step.groups[static_cast<size_t>(op.group)].ranks;
      if (std::find(members.begin(), members.end(), r) == members.end()) return false;
      const GroupLinks*& g = gl[static_cast<size_t>(op.group)];
      if (!g) {
        gpus.clear();
        for (int m : members) {
          if (m < 0 || static_cast<size_t>(m) >= place.size()) return false;
          gpus.push_back(place[static_cast<size_t>(m)]);
        }
        g = &impl_->group(gpus);
      }
      CollectiveTime ct;
      if (op.kind == OpKind::kAllToAll) {  // as run(), every member running this op
        ct.algo = plan::CollectiveAlgo::kDirect;
        ct.time_s = all_to_all_time(std::vector<const plan::Op*>(members.size(), &op), *g, coll_params);
      } else {
        plan::Op shaped = op;  // as run(): the payload is the largest member's (all equal here, and not below 0)
        shaped.comm_bytes = std::max(0.0, op.comm_bytes);
        ct = collective_time(shaped, *g, coll_params, op.algo != plan::CollectiveAlgo::kAuto ? op.algo : im.options.algo);
        measured_collective(im.options, gpu, op.kind, *g, shaped.comm_bytes, ct);
      }
      oc.time.bound = Bound::kCommunication;
      oc.time.comm_s = oc.time.time_s = ct.time_s;
      oc.algo = ct.algo;
    }
    now += oc.time.time_s;
  }
  return true;
}

const spec::Engine* CostModel::engine() const { return impl_->options.engine; }

const char* to_string(Launch l) {
  switch (l) {
    case Launch::kGraph: return "cuda graph";
    case Launch::kPiecewise: return "piecewise cuda graphs";
    case Launch::kEager: return "eager";
  }
  return "?";
}

namespace {
int64_t group_share(int64_t x, int attn_dp) { return attn_dp > 1 ? (x + attn_dp - 1) / attn_dp : x; }
}  // namespace

Launch launch_mode(const spec::Engine& e, int64_t seqs, int64_t tokens, int attn_dp) {
  const bool decode_only = seqs > 0 && tokens == seqs;  // every sequence brings exactly one new token
  seqs = group_share(seqs, attn_dp), tokens = group_share(tokens, attn_dp);
  if (decode_only && seqs <= e.graphs.decode_max_seqs) return Launch::kGraph;
  if (e.graphs.mixed_piecewise && tokens <= e.graphs.mixed_max_tokens) return Launch::kPiecewise;
  return Launch::kEager;
}

double launch_floor_s(const spec::Engine& e, Launch mode, int64_t ops, int64_t attention_ops) {
  switch (mode) {
    case Launch::kGraph: return 0.0;
    case Launch::kPiecewise: return static_cast<double>(2 * attention_ops + 1) * e.launch_s;
    case Launch::kEager: return static_cast<double>(ops) * e.launch_s;
  }
  return 0.0;
}

double iteration_cpu_s(const spec::Engine& e, int64_t seqs, int64_t tokens, int attn_dp) {
  const bool decode_only = seqs > 0 && tokens == seqs;
  seqs = group_share(seqs, attn_dp), tokens = group_share(tokens, attn_dp);
  return (decode_only ? e.iteration.decode : e.iteration.mixed).at(seqs, tokens);
}

double engine_step_s(const spec::Engine& e, double gpu_s, double cpu_s, int pp) {
  const bool overlap = e.iteration.overlap && (pp <= 1 || e.iteration.overlap_with_pp);
  return e.iteration.serial_s + (overlap ? std::max(gpu_s, cpu_s) : gpu_s + cpu_s);
}

CollectiveParams collective_params(const spec::Gpu& gpu, const spec::Engine* engine) {
  CollectiveParams p = CollectiveParams::from(gpu);  // the GPU's whole collective model (protocols, NIC, custom AR)
  if (engine && engine->custom_allreduce.enabled) {
    p.custom_allreduce_max_bytes = engine->custom_allreduce.max_bytes;
    p.custom_allreduce_max_gpus = engine->custom_allreduce.max_gpus;
  }
  return p;
}

StepCost cost_step(const plan::Step& step, const plan::Plan& plan, const spec::Cluster& cluster,
                   const CostOptions& options) {
  return CostModel(plan, cluster, options).cost(step);
}

}  // namespace parasol::cost

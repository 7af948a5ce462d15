#include "core/serve/analytic_step_runner.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "core/common/error.hpp"
#include "core/common/hash.hpp"

namespace parasol::serve {

namespace {

// Per-stage busy time: the latest finish of the stage's ranks minus the earliest start of their first op.
std::vector<double> stage_times(const plan::Step& step, const cost::StepCost& sc, int pp, std::vector<double>& starts) {
  starts.clear();
  if (pp <= 1) return {};
  std::vector<double> first(pp, std::numeric_limits<double>::infinity()), last(pp, 0.0);
  for (size_t i = 0; i < step.ranks.size(); ++i) {
    const int s = step.ranks[i].stage;
    if (s < 0 || s >= pp || sc.ranks[i].ops.empty()) continue;
    first[s] = std::min(first[s], sc.ranks[i].ops.front().start_s);
    last[s] = std::max(last[s], sc.ranks[i].finish_s);
  }
  std::vector<double> out(pp, 0.0);
  starts.assign(pp, 0.0);
  for (int s = 0; s < pp; ++s) {
    out[s] = std::isfinite(first[s]) ? last[s] - first[s] : 0.0;
    starts[s] = std::isfinite(first[s]) ? first[s] : (s > 0 ? starts[s - 1] + out[s - 1] : 0.0);
  }
  // Stage 0 frees up when it finished its part, measured from the step's start.
  out[0] = last[0];
  starts[0] = 0;
  return out;
}

uint64_t fnv(const std::vector<int64_t>& v) {
  uint64_t h = kFnvOffset;
  for (int64_t x : v) h = fnv1a64_word(h, static_cast<uint64_t>(x));
  return h;
}

}  // namespace

// A compiled shape: the step of every batch with these per-group (T, S), with the attention ops left variable.
struct AnalyticStepRunner::Shape {
  std::vector<int64_t> key;
  struct Var {         // a class of attention ops with equal dims (re-timed once per step)
    int group = 0;     // attention-DP group whose K and C it reads
    plan::Op op;       // the template op (flops and bytes are overwritten per step)
    double count = 0;  // occurrences over all ranks (for the work totals)
  };
  std::vector<Var> vars;
  struct Seg {                    // ops between two communications of one rank
    double fixed_s = 0;           // sum of the times of its non-attention ops
    uint32_t vbeg = 0, vend = 0;  // its attention ops: var_ref[vbeg, vend) = (class, count) pairs
  };
  std::vector<std::pair<uint32_t, double>> var_ref;
  std::vector<std::vector<Seg>> segs;  // [rank][k]: k-th segment (barriers + 1 per rank)
  struct Barrier {
    double dur = 0;
    std::vector<std::pair<int, int>> members;  // (rank, index of the segment before it)
  };
  std::vector<Barrier> barriers;   // in the order the cost model resolves them
  std::vector<int> stage;          // rank -> pipeline stage
  std::vector<int> first_barrier;  // rank -> its first barrier when its first op is one (a recv), else -1
  std::vector<bool> has_ops;
  std::vector<int64_t> ops_n, attn_n;  // per rank: ops and attention ops (the engine's launch floor)
  bool single = false;                 // all ranks identical, every barrier spans all ranks: evaluate rank 0 alone
  double fixed_flops = 0, fixed_bytes = 0;
  size_t bytes_used() const {
    size_t b = sizeof(*this) + var_ref.size() * 16 + vars.size() * sizeof(Var) + barriers.size() * sizeof(Barrier);
    for (const auto& s : segs) b += s.size() * sizeof(Seg) + 32;
    for (const auto& x : barriers) b += x.members.size() * 8;
    return b;
  }
};

namespace {

constexpr size_t kAgg = 4;                            // per attention group: T, S, K, C
constexpr size_t kMaxShapeBytes = size_t(256) << 20;  // compiled shapes kept before the cache starts over
constexpr int64_t kMaxMemoEntries = 2000000;

double dd(int64_t v) {
  return static_cast<double>(v);
}

// The attention op's FLOPs and bytes for K attended keys and C context tokens (core/plan/build_step.cpp emit_gqa;
// compile() checks on the built op that this reproduces it exactly).
void attention_work(const plan::Op& o, double keys, double ctx_sum, double a, double kvb, double& flops,
                    double& bytes) {
  flops = 2.0 * dd(o.heads) * keys * dd(2 * o.head_dim);
  bytes = 2.0 * dd(o.tokens) * dd(o.heads * o.head_dim) * a + ctx_sum * 2.0 * dd(o.kv_heads * o.head_dim) * kvb;
}

bool close(double a, double b) {
  return std::fabs(a - b) <= 1e-12 * std::max({1.0, std::fabs(a), std::fabs(b)});
}

}  // namespace

AnalyticStepRunner::AnalyticStepRunner(const plan::Plan& plan, int pool, const spec::Cluster& cluster,
                                       const spec::Engine* engine)
    : plan_(plan),
      pool_(pool),
      engine_(engine),
      step_options_(engine ? plan::step_options(*engine, plan, pool, cluster) : plan::StepOptions{}),
      builder_(plan, pool, step_options_),
      cost_(plan, cluster,
            [&] {
              cost::CostOptions o;
              o.instance = 0;
              o.engine = engine;
              return o;
            }()),
      pp_(plan.pools.at(pool).config.pp),
      attn_dp_(std::max(1, plan.pools.at(pool).config.attn_dp)) {
  const plan::Pool& p = plan.pools.at(pool);
  const std::string& type = p.gpu_type.empty() ? plan.gpu_type : p.gpu_type;
  auto it = cluster.gpu_types.find(type);
  if (it == cluster.gpu_types.end()) throw ConfigError("sim: GPU type '" + type + "' is not in the cluster");
  gpu_ = &it->second;
  act_bytes_ = dtype_bytes(plan.model.act_dtype);
  window_ = plan.model.sliding_window;
  kv_bytes_ = dtype_bytes(plan.kv_dtype);
  // MLA attention has prefill/decode forms and a context-sized GEMM: not compiled (exact memo only).
  if (plan.model.attention == spec::AttentionKind::kMla) fast_ = false;
  // A measured table keys attention on its per-sequence lengths, which compiled shapes drop: exact memo only.
  if (cost::active_calibration()) fast_ = false;
  // One representative rank: pure TP (no pipeline, one attention group, no experts, one stage of tp ranks).
  const plan::ParallelConfig& c = p.config;
  const int R = c.instance_size();
  one_rank_ok_ = fast_ && c.pp == 1 && c.attn_dp <= 1 && !plan.model.is_moe() && R >= 1 && R == c.tp;
  one_rank_ = one_rank_ok_;
  probe_ranks_ = R > 1 ? std::vector<int>{0, R - 1} : std::vector<int>{0};
  set_layer_template(true);
}

AnalyticStepRunner::~AnalyticStepRunner() = default;

StepTiming AnalyticStepRunner::full(const plan::Batch& batch) {
  builder_.build(batch, step_);
  cost_.cost(step_, sc_);
  const cost::StepCost& sc = sc_;
  StepTiming t;
  t.total_s = sc.total_s;
  t.stage_s = stage_times(step_, sc, pp_, t.stage_start_s);
  if (!t.stage_s.empty()) t.stage_s[0] += sc.engine_s;  // the engine's CPU work holds the next micro-batch back
  step_work(step_, t.flops, t.bytes);
  return t;
}

StepTiming AnalyticStepRunner::exact_memo(const plan::Batch& batch) {
  key_.clear();
  for (const auto& s : batch.seqs) {
    key_.push_back(s.new_tokens);
    key_.push_back(s.context);
    key_.push_back(s.attn_group);
    key_.push_back(s.sample ? 1 : 0);
  }
  const uint64_t h = fnv(key_);
  auto& bucket = memo_[h];
  for (const Entry& e : bucket)
    if (e.key == key_) {
      ++hits_;
      return e.timing;
    }
  ++misses_;
  StepTiming t = full(batch);
  if (entries_ > kMaxMemoEntries) {  // bound memory on endless distinct batches
    memo_.clear();
    entries_ = 0;
  }
  memo_[h].push_back({key_, t});
  ++entries_;
  return t;
}

namespace {

// Same program on two ranks, up to the op names and the rank itself.
bool same_program(const std::vector<plan::Op>& a, const std::vector<plan::Op>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const plan::Op &x = a[i], &y = b[i];
    if (x.kind != y.kind || x.layer != y.layer || x.dtype != y.dtype || x.m != y.m || x.n != y.n || x.k != y.k ||
        x.batch != y.batch || x.tokens != y.tokens || x.heads != y.heads || x.kv_heads != y.kv_heads ||
        x.head_dim != y.head_dim || x.v_head_dim != y.v_head_dim || x.group != y.group || x.peer != y.peer ||
        x.comm_bytes != y.comm_bytes || x.algo != y.algo || x.flops != y.flops || x.bytes != y.bytes ||
        x.q_lens != y.q_lens || x.ctx_lens != y.ctx_lens || x.expert_tokens != y.expert_tokens ||
        x.a2a_send_bytes != y.a2a_send_bytes)
      return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<AnalyticStepRunner::Shape> AnalyticStepRunner::compile(const plan::Batch& batch) {
  if (one_rank_) {
    auto one = compile_one(batch);
    if (one && one_rank_checks_ > 0) {  // the first shapes: compare with the full compilation, bit for bit
      --one_rank_checks_;
      auto all = compile_full(batch);
      bool same = all && all->single && all->segs[0].size() == one->segs[0].size() &&
                  all->var_ref.size() >= one->var_ref.size() &&
                  std::equal(one->var_ref.begin(), one->var_ref.end(), all->var_ref.begin()) &&
                  all->barriers.size() == one->barriers.size() && all->vars.size() == one->vars.size() &&
                  all->fixed_flops == one->fixed_flops && all->fixed_bytes == one->fixed_bytes;
      for (size_t k = 0; same && k < one->segs[0].size(); ++k) {
        const auto &x = all->segs[0][k], &y = one->segs[0][k];
        same = x.fixed_s == y.fixed_s && x.vbeg == y.vbeg && x.vend == y.vend;
      }
      for (size_t k = 0; same && k < one->barriers.size(); ++k) same = all->barriers[k].dur == one->barriers[k].dur;
      for (size_t v = 0; same && v < one->vars.size(); ++v) {
        const auto &x = all->vars[v], &y = one->vars[v];
        same = x.group == y.group && x.count == y.count && x.op.heads == y.op.heads && x.op.kv_heads == y.op.kv_heads &&
               x.op.head_dim == y.op.head_dim && x.op.tokens == y.op.tokens && x.op.dtype == y.op.dtype;
      }
      if (!same) {
        one_rank_ = false;
        return all;
      }
    }
    if (one) return one;
    one_rank_ = false;  // not symmetric (or not compilable): every rank from now on
  }
  return compile_full(batch);
}

struct AnalyticStepRunner::LayerTemplate {
  plan::Plan one_layer;  // the pool's plan with a one-layer model
  plan::StepBuilder builder;
  int64_t layers = 0;  // of the real model
  LayerTemplate(plan::Plan p, int pool, int64_t l, const plan::StepOptions& o)
      : one_layer(std::move(p)), builder(one_layer, pool, o), layers(l) {}
};

void AnalyticStepRunner::set_layer_template(bool v) {
  template_.reset();
  if (!v || !one_rank_ok_ || plan_.model.layers <= 1 || plan_.pools.at(pool_).config.pp != 1) return;
  plan::Plan one = plan_;
  one.model.layers = 1;
  one.pools[static_cast<size_t>(pool_)].stage_layers.clear();
  try {
    template_ = std::make_unique<LayerTemplate>(std::move(one), pool_, plan_.model.layers, step_options_);
  } catch (const Error&) {
    template_.reset();  // a model that cannot be cut to one layer: build the full model
  }
  template_checks_ = 3;
}

namespace {

bool same_shape_op(const plan::Op& x, const plan::Op& y) {
  return x.kind == y.kind && x.heads == y.heads && x.kv_heads == y.kv_heads && x.head_dim == y.head_dim &&
         x.v_head_dim == y.v_head_dim && x.tokens == y.tokens && x.dtype == y.dtype && x.m == y.m && x.n == y.n &&
         x.k == y.k && x.batch == y.batch;
}

}  // namespace

// Every field of two compiled shapes, exactly (the layer template against the full model).
bool AnalyticStepRunner::same_shape(const Shape& a, const Shape& b) {
  if (a.key != b.key || a.var_ref != b.var_ref || a.stage != b.stage || a.first_barrier != b.first_barrier ||
      a.has_ops != b.has_ops || a.ops_n != b.ops_n || a.attn_n != b.attn_n || a.single != b.single ||
      a.fixed_flops != b.fixed_flops || a.fixed_bytes != b.fixed_bytes || a.vars.size() != b.vars.size() ||
      a.segs.size() != b.segs.size() || a.barriers.size() != b.barriers.size())
    return false;
  for (size_t v = 0; v < a.vars.size(); ++v)
    if (a.vars[v].group != b.vars[v].group || a.vars[v].count != b.vars[v].count ||
        !same_shape_op(a.vars[v].op, b.vars[v].op))
      return false;
  for (size_t r = 0; r < a.segs.size(); ++r) {
    if (a.segs[r].size() != b.segs[r].size()) return false;
    for (size_t k = 0; k < a.segs[r].size(); ++k)
      if (a.segs[r][k].fixed_s != b.segs[r][k].fixed_s || a.segs[r][k].vbeg != b.segs[r][k].vbeg ||
          a.segs[r][k].vend != b.segs[r][k].vend)
        return false;
  }
  for (size_t k = 0; k < a.barriers.size(); ++k)
    if (a.barriers[k].dur != b.barriers[k].dur || a.barriers[k].members != b.barriers[k].members) return false;
  return true;
}

std::unique_ptr<AnalyticStepRunner::Shape> AnalyticStepRunner::compile_one(const plan::Batch& batch) {
  if (template_) {
    auto sh = compile_one_from(template_->builder, batch, template_->layers);
    if (sh && template_checks_ > 0) {  // the first template shapes: compare with the full model's, field by field
      --template_checks_;
      auto ref = compile_one_from(builder_, batch, 0);
      if (!ref || !same_shape(*sh, *ref)) {
        template_.reset();
        return ref;
      }
    }
    if (sh) return sh;
    template_.reset();  // its ops are not laid out as prologue, one layer, epilogue: build the full model
  }
  return compile_one_from(builder_, batch, 0);
}

// `layers` > 0: `builder` is the one-layer template; its layer-0 ops stand for every layer (rank 0's op sequence is
// read as prologue, layer 0 `layers` times, epilogue). 0: `builder` builds the real model.
std::unique_ptr<AnalyticStepRunner::Shape> AnalyticStepRunner::compile_one_from(plan::StepBuilder& builder,
                                                                                const plan::Batch& batch,
                                                                                int64_t layers) {
  builder.build_ranks(batch, probe_ranks_, step_);
  if (step_.ranks.size() != probe_ranks_.size()) return nullptr;
  if (step_.ranks.size() == 2 && !same_program(step_.ranks[0].ops, step_.ranks[1].ops)) return nullptr;
  if (!cost_.cost_symmetric_rank(step_, 0, rank_cost_)) return nullptr;
  const int R = probe_ranks_.back() + 1;
  const auto& built = step_.ranks[0].ops;
  size_t pre = built.size(), blk = 0, reps = 1;
  if (layers > 0) {
    size_t b = 0;
    while (b < built.size() && built[b].layer < 0) ++b;
    size_t e = b;
    while (e < built.size() && built[e].layer == 0) ++e;
    if (e == b) return nullptr;
    for (size_t k = e; k < built.size(); ++k)
      if (built[k].layer >= 0) return nullptr;
    pre = b, blk = e - b, reps = static_cast<size_t>(layers);
  }
  const size_t n = built.size() + (reps - 1) * blk;
  // Virtual op i of the real model -> index into the built ops.
  auto at = [&](size_t i) { return i < pre ? i : i < pre + reps * blk ? pre + (i - pre) % blk : i - (reps - 1) * blk; };
  const auto& oc = rank_cost_;
  auto sh = std::make_unique<Shape>();
  sh->key = key_;
  sh->segs.resize(1);
  sh->stage.assign(1, step_.ranks[0].stage);
  sh->first_barrier.assign(1, -1);
  sh->has_ops.assign(1, n > 0);
  sh->ops_n.assign(1, static_cast<int64_t>(n));
  sh->attn_n.assign(1, 0);
  sh->single = true;
  std::vector<std::pair<uint32_t, double>> pending;
  Shape::Seg seg;
  auto close_seg = [&] {
    seg.vbeg = static_cast<uint32_t>(sh->var_ref.size());
    sh->var_ref.insert(sh->var_ref.end(), pending.begin(), pending.end());
    seg.vend = static_cast<uint32_t>(sh->var_ref.size());
    sh->segs[0].push_back(seg);
    seg = Shape::Seg{};
    pending.clear();
  };
  for (size_t i = 0; i < n; ++i) {
    const size_t j = at(i);
    const plan::Op& op = built[j];
    if (op.kind == plan::OpKind::kMlaAttention) return nullptr;
    if (op.kind == plan::OpKind::kAttention) ++sh->attn_n[0];
    if (plan::is_communication(op.kind)) {
      if (i == 0) sh->first_barrier[0] = static_cast<int>(sh->barriers.size());
      sh->barriers.push_back({oc[j].time.time_s, {}});
      close_seg();
      continue;
    }
    if (op.kind == plan::OpKind::kAttention) {
      const int64_t* g = &agg_[0];
      double f = 0, b = 0;
      attention_work(op, dd(g[2]), dd(g[3]), act_bytes_, kv_bytes_, f, b);
      if (f != op.flops || b != op.bytes || op.tokens != g[0]) {
        fast_ = false;
        return nullptr;
      }
      uint32_t v = 0;
      for (; v < sh->vars.size(); ++v) {
        const plan::Op& o = sh->vars[v].op;
        if (o.heads == op.heads && o.kv_heads == op.kv_heads && o.head_dim == op.head_dim && o.tokens == op.tokens &&
            o.dtype == op.dtype)
          break;
      }
      if (v == sh->vars.size()) {
        Shape::Var var;
        var.group = 0;
        var.op = op;
        var.op.q_lens = {};  // each step's lengths go to a scratch op (evaluate)
        var.op.ctx_lens = {};
        sh->vars.push_back(std::move(var));
      }
      sh->vars[v].count += R;  // every rank has it (integers: exact)
      if (!pending.empty() && pending.back().first == v)
        pending.back().second += 1;
      else
        pending.emplace_back(v, 1.0);
      continue;
    }
    seg.fixed_s += oc[j].time.time_s;
  }
  close_seg();
  // The work totals summed rank by rank in the full path's order (identical ranks: the same additions R times).
  for (int r = 0; r < R; ++r)
    for (size_t i = 0; i < n; ++i) {
      const plan::Op& op = built[at(i)];
      if (plan::is_communication(op.kind) || op.kind == plan::OpKind::kAttention) continue;
      sh->fixed_flops += op.flops;
      sh->fixed_bytes += op.bytes;
    }
  return sh;
}

std::unique_ptr<AnalyticStepRunner::Shape> AnalyticStepRunner::compile_full(const plan::Batch& batch) {
  builder_.build(batch, step_);
  cost_.cost(step_, sc_);
  const cost::StepCost& sc = sc_;
  const plan::ParallelConfig& c = plan_.pools[pool_].config;
  auto sh = std::make_unique<Shape>();
  sh->key = key_;
  const int R = static_cast<int>(step_.ranks.size());
  sh->segs.resize(R);
  sh->stage.resize(R);
  sh->first_barrier.assign(R, -1);
  sh->has_ops.assign(R, false);
  sh->ops_n.assign(R, 0);
  sh->attn_n.assign(R, 0);
  // Barrier instances: the k-th collective of a group on every member is one barrier; so is the k-th send/recv of a
  // (src, dst) pair. instance_[g][k] -> barrier (groups), p2p by (src * R + dst, k).
  const size_t G = step_.groups.size();
  if (instance_.size() < G) instance_.resize(G);
  for (size_t g = 0; g < G; ++g) instance_[g].clear();
  std::map<std::pair<int64_t, int64_t>, int> p2p_instance;
  std::vector<std::vector<int>> rank_barriers(R);
  std::vector<int> seen_group(G, 0);
  for (int r = 0; r < R; ++r) {
    const auto& ops = step_.ranks[r].ops;
    const auto& oc = sc.ranks[r].ops;
    sh->stage[r] = step_.ranks[r].stage;
    sh->has_ops[r] = !ops.empty();
    sh->ops_n[r] = static_cast<int64_t>(ops.size());
    for (const auto& op : ops) sh->attn_n[r] += op.kind == plan::OpKind::kAttention ? 1 : 0;
    const int ag = c.attn_group_of(r);
    std::fill(seen_group.begin(), seen_group.end(), 0);
    std::map<int64_t, int> seen_p2p;
    std::vector<std::pair<uint32_t, double>> pending;  // var classes of the open segment
    Shape::Seg seg;
    auto close_seg = [&] {
      seg.vbeg = static_cast<uint32_t>(sh->var_ref.size());
      sh->var_ref.insert(sh->var_ref.end(), pending.begin(), pending.end());
      seg.vend = static_cast<uint32_t>(sh->var_ref.size());
      sh->segs[r].push_back(seg);
      seg = Shape::Seg{};
      pending.clear();
    };
    for (size_t i = 0; i < ops.size(); ++i) {
      const plan::Op& op = ops[i];
      if (op.kind == plan::OpKind::kMlaAttention) return nullptr;
      if (plan::is_communication(op.kind)) {
        int b = -1;
        if (op.kind == plan::OpKind::kSend || op.kind == plan::OpKind::kRecv) {
          const int src = op.kind == plan::OpKind::kSend ? r : op.peer,
                    dst = op.kind == plan::OpKind::kSend ? op.peer : r;
          const int64_t id = static_cast<int64_t>(src) * R + dst;
          const int k = seen_p2p[id]++;
          auto [it, added] =
              p2p_instance.emplace(std::make_pair(id, int64_t{k}), static_cast<int>(sh->barriers.size()));
          if (added) sh->barriers.push_back({oc[i].time.time_s, {}});
          b = it->second;
        } else {
          if (op.group < 0 || static_cast<size_t>(op.group) >= G) return nullptr;  // the full path reports it
          auto& list = instance_[op.group];
          const int k = seen_group[op.group]++;
          if (k == static_cast<int>(list.size())) {
            list.push_back(static_cast<int>(sh->barriers.size()));
            sh->barriers.push_back({oc[i].time.time_s, {}});
          }
          b = list[k];
        }
        if (i == 0) sh->first_barrier[r] = b;
        sh->barriers[b].members.emplace_back(r, static_cast<int>(sh->segs[r].size()));
        rank_barriers[r].push_back(b);
        close_seg();
        continue;
      }
      if (op.kind == plan::OpKind::kAttention) {
        const int64_t* g = &agg_[kAgg * ag];
        double f = 0, b = 0;
        attention_work(op, dd(g[2]), dd(g[3]), act_bytes_, kv_bytes_, f, b);
        if (f != op.flops || b != op.bytes || op.tokens != g[0]) {
          fast_ = false;  // the planner's attention formula changed: stop compiling this pool
          return nullptr;
        }
        uint32_t v = 0;
        for (; v < sh->vars.size(); ++v) {
          const plan::Op& o = sh->vars[v].op;
          if (sh->vars[v].group == ag && o.heads == op.heads && o.kv_heads == op.kv_heads &&
              o.head_dim == op.head_dim && o.tokens == op.tokens && o.dtype == op.dtype)
            break;
        }
        if (v == sh->vars.size()) {
          Shape::Var var;
          var.group = ag;
          var.op = op;
          var.op.q_lens = {};  // each step's lengths go to a scratch op (evaluate)
          var.op.ctx_lens = {};
          sh->vars.push_back(std::move(var));
        }
        sh->vars[v].count += 1;
        if (!pending.empty() && pending.back().first == v)
          pending.back().second += 1;
        else
          pending.emplace_back(v, 1.0);
        continue;
      }
      seg.fixed_s += oc[i].time.time_s;
      sh->fixed_flops += op.flops;
      sh->fixed_bytes += op.bytes;
    }
    close_seg();
  }
  // Barrier order: resolve them as the cost model does (a barrier completes when it is every member's next one).
  std::vector<size_t> next(R, 0);
  std::vector<Shape::Barrier> ordered;
  ordered.reserve(sh->barriers.size());
  std::vector<int> remap(sh->barriers.size(), -1);
  while (ordered.size() < sh->barriers.size()) {
    bool progress = false;
    for (int r = 0; r < R; ++r) {
      if (next[r] >= rank_barriers[r].size()) continue;
      const int b = rank_barriers[r][next[r]];
      bool ready = true;
      for (const auto& [m, k] : sh->barriers[b].members)
        ready = ready && next[m] < rank_barriers[m].size() && rank_barriers[m][next[m]] == b;
      if (!ready) continue;
      for (const auto& [m, k] : sh->barriers[b].members) ++next[m];
      remap[b] = static_cast<int>(ordered.size());
      ordered.push_back(sh->barriers[b]);
      progress = true;
    }
    if (!progress) return nullptr;  // unmatched communication: the full path reports it
  }
  sh->barriers = std::move(ordered);
  for (int& b : sh->first_barrier)
    if (b >= 0) b = remap[b];
  // Symmetric ranks (TP only): every rank's program is the same and every barrier spans all of them.
  bool single = pp_ == 1;
  for (const auto& b : sh->barriers) single = single && static_cast<int>(b.members.size()) == R;
  for (int r = 1; r < R && single; ++r) {
    if (sh->segs[r].size() != sh->segs[0].size()) single = false;
    for (size_t k = 0; k < sh->segs[r].size() && single; ++k) {
      const auto &a = sh->segs[0][k], &b = sh->segs[r][k];
      single = a.fixed_s == b.fixed_s && a.vend - a.vbeg == b.vend - b.vbeg &&
               std::equal(sh->var_ref.begin() + a.vbeg, sh->var_ref.begin() + a.vend, sh->var_ref.begin() + b.vbeg);
    }
  }
  sh->single = single;
  return sh;
}

void AnalyticStepRunner::evaluate(const Shape& shc, StepTiming& t) {
  Shape& sh = const_cast<Shape&>(shc);
  const size_t V = sh.vars.size();
  var_time_.resize(V);
  t.flops = sh.fixed_flops;
  t.bytes = sh.fixed_bytes;
  for (size_t v = 0; v < V; ++v) {
    Shape::Var& var = sh.vars[v];
    const int64_t* g = &agg_[kAgg * var.group];
    attention_work(var.op, dd(g[2]), dd(g[3]), act_bytes_, kv_bytes_, var.op.flops, var.op.bytes);
    // The attention model's inputs: the template's dims, this step's work and lengths (one scratch op: the shapes
    // keep no per-step lengths).
    plan::Op& a = attention_op_;
    a.kind = var.op.kind, a.dtype = var.op.dtype, a.m = var.op.m, a.n = var.op.n, a.k = var.op.k;
    a.batch = var.op.batch, a.tokens = var.op.tokens, a.heads = var.op.heads, a.kv_heads = var.op.kv_heads;
    a.head_dim = var.op.head_dim, a.v_head_dim = var.op.v_head_dim, a.flops = var.op.flops, a.bytes = var.op.bytes;
    auto& ql = q_lens_[static_cast<size_t>(var.group)];
    auto& cl = ctx_lens_[static_cast<size_t>(var.group)];
    a.q_lens.swap(ql), a.ctx_lens.swap(cl);  // lent, not copied: several vars may read one group's lengths
    a.lens_id = 0;
    var_time_[v] = cost::op_time(a, *gpu_, nullptr).time_s;
    a.q_lens.swap(ql), a.ctx_lens.swap(cl);
    t.flops += var.count * var.op.flops;
    t.bytes += var.count * var.op.bytes;
  }
  auto seg_s = [&](const Shape::Seg& s) {
    double x = s.fixed_s;
    for (uint32_t i = s.vbeg; i < s.vend; ++i) x += sh.var_ref[i].second * var_time_[sh.var_ref[i].first];
    return x;
  };
  // The engine's host launches (CostModel: a rank finishes no earlier than its launches x launch_s).
  auto floor_s = [&](size_t r) {
    return floors_ ? cost::launch_floor_s(*engine_, launch_, sh.ops_n[r], sh.attn_n[r]) : 0.0;
  };
  if (sh.single) {
    const auto& segs = sh.segs[0];
    double now = 0;
    for (size_t k = 0; k < sh.barriers.size(); ++k) now += seg_s(segs[k]) + sh.barriers[k].dur;
    now += seg_s(segs.back());
    t.total_s = std::max(now, floor_s(0));
    return;
  }
  const size_t R = sh.segs.size();
  now_.assign(R, 0.0);
  first_.assign(R, 0.0);
  for (size_t i = 0; i < sh.barriers.size(); ++i) {
    const auto& b = sh.barriers[i];
    double start = 0;
    for (const auto& [m, k] : b.members) start = std::max(start, now_[m] + seg_s(sh.segs[m][k]));
    for (const auto& [m, k] : b.members) {
      now_[m] = start + b.dur;
      if (sh.first_barrier[m] == static_cast<int>(i)) first_[m] = start;  // a rank that starts with a recv
    }
  }
  double total = 0;
  for (size_t r = 0; r < R; ++r) {
    now_[r] += seg_s(sh.segs[r].back());
    now_[r] = std::max(now_[r], floor_s(r));
    total = std::max(total, now_[r]);
  }
  t.total_s = total;
  if (pp_ > 1) {
    std::vector<double> first(pp_, std::numeric_limits<double>::infinity()), last(pp_, 0.0);
    for (size_t r = 0; r < R; ++r) {
      const int s = sh.stage[r];
      if (s < 0 || s >= pp_ || !sh.has_ops[r]) continue;
      first[s] = std::min(first[s], first_[r]);
      last[s] = std::max(last[s], now_[r]);
    }
    t.stage_s.assign(pp_, 0.0);
    t.stage_start_s.assign(pp_, 0.0);
    for (int s = 0; s < pp_; ++s) {
      t.stage_s[s] = std::isfinite(first[s]) ? last[s] - first[s] : 0.0;
      t.stage_start_s[s] =
          std::isfinite(first[s]) ? first[s] : (s > 0 ? t.stage_start_s[s - 1] + t.stage_s[s - 1] : 0.0);
    }
    t.stage_s[0] = last[0];
    t.stage_start_s[0] = 0;
  }
}

StepTiming AnalyticStepRunner::run(int /*replica*/, const plan::Batch& batch) {
  // Every instance of a pool runs the same program on identical hardware: the replica does not enter the key.
  StepTiming t;
  if (fast_) {
    agg_.assign(kAgg * attn_dp_, 0);
    q_lens_.resize(static_cast<size_t>(attn_dp_));
    ctx_lens_.resize(static_cast<size_t>(attn_dp_));
    for (int a = 0; a < attn_dp_; ++a)
      q_lens_[static_cast<size_t>(a)].clear(), ctx_lens_[static_cast<size_t>(a)].clear();
    bool ok = true;
    int64_t seqs = 0;
    for (const auto& s : batch.seqs) {
      if (s.attn_group < 0 || s.attn_group >= attn_dp_ || s.new_tokens < 0 || s.context < 0) {
        ok = false;  // the full path reports the error
        break;
      }
      if (s.new_tokens == 0) continue;
      ++seqs;
      int64_t* g = &agg_[kAgg * s.attn_group];
      g[0] += s.new_tokens;
      g[1] += s.sample ? 1 : 0;
      const int64_t ctx = plan::attended_context(s.new_tokens, s.context + s.new_tokens, window_);
      g[2] += s.new_tokens * (ctx - s.new_tokens) + s.new_tokens * (s.new_tokens + 1) / 2;
      g[3] += ctx;
      q_lens_[static_cast<size_t>(s.attn_group)].push_back(s.new_tokens);
      ctx_lens_[static_cast<size_t>(s.attn_group)].push_back(ctx);
    }
    if (ok) {
      key_.clear();
      for (int a = 0; a < attn_dp_; ++a) {
        key_.push_back(agg_[kAgg * a]);
        key_.push_back(agg_[kAgg * a + 1]);
      }
      const uint64_t h = fnv(key_);
      const Shape* sh = nullptr;
      auto& bucket = shapes_by_key_[h];
      for (const auto& x : bucket)
        if (x->key == key_) {
          sh = x.get();
          break;
        }
      if (sh) {
        ++hits_;
      } else {
        ++misses_;
        auto made = compile(batch);
        if (made) {
          ++shapes_;
          shape_bytes_ += made->bytes_used();
          if (shape_bytes_ > kMaxShapeBytes) {  // bound memory: start over (deterministic: depends on counts only)
            shapes_by_key_.clear();
            shape_bytes_ = made->bytes_used();
          }
          auto& b = shapes_by_key_[h];
          b.push_back(std::move(made));
          sh = b.back().get();
        }
      }
      if (sh) {
        int64_t tokens = 0;
        for (int a = 0; a < attn_dp_; ++a) tokens += agg_[kAgg * a];
        if (engine_) {
          launch_ = cost::launch_mode(*engine_, seqs, tokens, attn_dp_);
          floors_ = launch_ != cost::Launch::kGraph && engine_->launch_s > 0;
        }
        evaluate(*sh, t);
        if (engine_) {  // as CostModel: the engine's CPU work once per iteration
          const double gpu = t.total_s;
          t.total_s = cost::engine_step_s(*engine_, gpu, cost::iteration_cpu_s(*engine_, seqs, tokens, attn_dp_), pp_);
          if (!t.stage_s.empty()) t.stage_s[0] += t.total_s - gpu;
        }
        if (verify_) {
          const StepTiming f = full(batch);
          bool same = close(f.total_s, t.total_s) && close(f.flops, t.flops) && close(f.bytes, t.bytes) &&
                      f.stage_s.size() == t.stage_s.size();
          for (size_t i = 0; same && i < f.stage_s.size(); ++i) same = close(f.stage_s[i], t.stage_s[i]);
          if (!same)
            throw RuntimeFailure("analytic step runner: compiled step " + std::to_string(t.total_s) +
                                 " s differs from the cost model's " + std::to_string(f.total_s) + " s");
        }
        return t;
      }
    }
  }
  return exact_memo(batch);
}

}  // namespace parasol::serve

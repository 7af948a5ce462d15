// build_step: the per-rank op programs of one iteration (program layout in build_step.hpp). Allocation-light: a
// StepBuilder keeps the per-pool structure and reuses the output Step's vectors and strings.
#include "core/plan/build_step.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

#include "core/common/error.hpp"
#include "core/plan/feasibility.hpp"

namespace parasol::plan {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// Rank i's share of `total` split `parts` ways: total / parts, the first total % parts ranks one more (the executor
// slices weights and tokens the same way, exec/layout.hpp).
int64_t share(int64_t total, int64_t parts, int64_t i) { return total / parts + (i < total % parts ? 1 : 0); }
double d(int64_t v) { return static_cast<double>(v); }

// Causal attention products: query i of a chunk of q new tokens after c cached ones sees c + i + 1 keys.
double attended_keys(int64_t q, int64_t ctx_after) {
  const int64_t c = ctx_after - q;
  return d(q) * d(c) + d(q) * d(q + 1) / 2.0;
}

// Expected fraction of tokens that route at least one of their k distinct experts (of E) into a set that receives
// `pairs` of the `total_pairs` (token, expert) pairs: the set counts as s = E x pairs / total_pairs experts of equal
// popularity, which a token misses with probability C(E - s, k) / C(E, k) = prod_{i<k} (E - s - i) / (E - i) (exact
// for uniform routing; a real s interpolates skewed routing).
double hit_fraction(double pairs, double total_pairs, int64_t E, int64_t k) {
  if (pairs <= 0 || total_pairs <= 0) return 0.0;
  const double s = d(E) * pairs / total_pairs;
  double miss = 1.0;
  for (int64_t i = 0; i < k; ++i) {
    const double f = (d(E) - s - d(i)) / d(E - i);
    if (f <= 0) return 1.0;
    miss *= f;
  }
  return 1.0 - miss;
}

int64_t sequences(const Batch& batch) {
  int64_t n = 0;
  for (const auto& sq : batch.seqs) n += sq.new_tokens > 0 ? 1 : 0;
  return n;
}

// Sequences of one attention-DP group.
struct GroupWork {
  int64_t tokens = 0, sampled = 0;
  std::vector<int64_t> q_lens, ctx_lens;  // all sequences (GQA)
  double keys = 0, ctx_sum = 0;
  // MLA: prefill (expanded) and decode (absorbed) subsets.
  std::vector<int64_t> pq, pctx, dq, dctx;
  uint64_t lens_id = 0, p_id = 0, d_id = 0;  // Op::lens_id of (q_lens, ctx_lens), (pq, pctx), (dq, dctx)
  int64_t ptokens = 0, dtokens = 0;
  double pkeys = 0, dkeys = 0, pctx_sum = 0, dctx_sum = 0;
  void clear() {
    tokens = sampled = ptokens = dtokens = 0;
    keys = ctx_sum = pkeys = dkeys = pctx_sum = dctx_sum = 0;
    q_lens.clear(), ctx_lens.clear(), pq.clear(), pctx.clear(), dq.clear(), dctx.clear();
  }
  void trim(size_t keep) {
    for (auto* v : {&q_lens, &ctx_lens, &pq, &pctx, &dq, &dctx})
      if (v->capacity() > keep) std::vector<int64_t>().swap(*v);
  }
};

class Emit {
 public:
  explicit Emit(RankProgram& p) : p_(p) {}
  Op& op(OpKind kind, int layer, std::string_view what, DType dtype) {
    if (n_ == p_.ops.size()) p_.ops.emplace_back();
    Op& o = p_.ops[n_++];
    o.kind = kind;
    o.layer = layer;
    o.dtype = dtype;
    o.name.clear();
    if (layer >= 0) {
      char buf[24];
      buf[0] = 'L';
      auto res = std::to_chars(buf + 1, buf + sizeof(buf) - 1, layer);
      *res.ptr++ = '.';
      o.name.append(buf, res.ptr);
    }
    o.name.append(what);
    o.m = o.n = o.k = 0;
    o.batch = 1;
    o.tokens = o.heads = o.kv_heads = o.head_dim = o.v_head_dim = 0;
    o.q_lens.clear();
    o.ctx_lens.clear();
    o.lens_id = 0;
    o.expert_tokens.clear();
    o.group = o.peer = -1;
    o.comm_bytes = 0;
    o.a2a_send_bytes.clear();
    o.algo = CollectiveAlgo::kAuto;
    o.flops = o.bytes = 0;
    return o;
  }
  void finish() { p_.ops.resize(n_); }
  const Op* last() const { return n_ > 0 ? &p_.ops[n_ - 1] : nullptr; }

 private:
  RankProgram& p_;
  size_t n_ = 0;
};

}  // namespace

struct StepBuilder::Impl {
  spec::Model m;
  ParallelConfig c;
  std::vector<std::pair<int64_t, int64_t>> stage_layers;
  Routing routing;
  DType wd, kd, ad, ed;  // weights, KV, activations, embedding / LM head / absorbed MLA weights
  double a = 2, wb = 2, kvb = 2, eb = 2, h = 0;
  HeadSharding hs;
  int pool = 0, R = 1;
  bool mla = false, a2a = false;
  std::vector<Group> groups;
  std::vector<int> tp_group, stage_group, pp_group;

  // Per build.
  std::vector<GroupWork> gw;
  std::vector<int64_t> slice;  // a2a form: tokens of stage-local rank j's slice
  int64_t stage_tokens = -1, max_slice = 0;
  std::vector<std::vector<int64_t>> counts;  // per layer: tokens per expert
  std::vector<std::vector<double>> pairs_to;  // per layer: pairs routed to each stage-local rank's experts

  // Engine options (build_step.hpp). Per stage, for node forwarding: each stage-local rank's domain (0..nodes-1) and
  // index in it, each domain's members; per build and MoE layer: expected distinct tokens reaching each stage-local
  // rank (hits_to) and, per stage, each domain (node_hits).
  StepOptions opts;
  std::vector<bool> is_tp_group;
  struct StageNodes {
    std::vector<int> node, local;
    std::vector<std::vector<int>> members;
    std::vector<double> relay_in;  // per build: slice shares the rank relays into its domain (node forwarding)
  };
  std::vector<StageNodes> nodes;  // per stage; members.size() <= 1: one domain (no forwarding)
  std::vector<std::vector<double>> hits_to;                // [layer][x]
  std::vector<std::vector<std::vector<double>>> node_hits;  // [stage][layer][domain]
  double dispatch_token_bytes = 0, combine_token_bytes = 0;

  Impl(const Plan& plan, int pool_index, const StepOptions& options) : opts(options) {
    if (pool_index < 0 || pool_index >= static_cast<int>(plan.pools.size()))
      throw Error("build_step: pool " + std::to_string(pool_index) + " out of range");
    const Pool& p = plan.pools[static_cast<size_t>(pool_index)];
    m = plan.model;
    c = p.config;
    if (auto why = c.invalid_reason(); !why.empty()) throw Error("build_step: " + why);
    stage_layers = p.stage_layers.empty() ? split_layers(m.layers, c.pp) : p.stage_layers;
    routing = plan.routing;
    wd = plan.weight_dtype;
    kd = plan.kv_dtype;
    ad = m.act_dtype;
    ed = dtype_bytes(wd) < 2 ? DType::kBf16 : wd;
    a = dtype_bytes(ad), wb = dtype_bytes(wd), kvb = dtype_bytes(kd), eb = dtype_bytes(ed), h = d(m.hidden);
    hs = shard_heads(m, c.tp);
    pool = pool_index;
    R = c.ranks_per_stage();
    mla = m.attention == spec::AttentionKind::kMla && m.mla.has_value();
    a2a = m.is_moe() && moe_all_to_all(c);
    auto add = [this](std::string name, std::vector<int> ranks) {
      groups.push_back({std::move(name), std::move(ranks)});
      return static_cast<int>(groups.size()) - 1;
    };
    for (int s = 0; s < c.pp; ++s) {
      for (int g = 0; g < c.attn_dp; ++g) {
        std::vector<int> ranks;
        for (int t = 0; t < c.tp; ++t) ranks.push_back(c.rank(s, g, t));
        tp_group.push_back(add("tp.s" + std::to_string(s) + ".a" + std::to_string(g), std::move(ranks)));
      }
      std::vector<int> ranks;
      for (int j = 0; j < R; ++j) ranks.push_back(s * R + j);
      stage_group.push_back(add("stage.s" + std::to_string(s), std::move(ranks)));
    }
    if (c.pp > 1)
      for (int g = 0; g < c.attn_dp; ++g)
        for (int t = 0; t < c.tp; ++t) {
          std::vector<int> ranks;
          for (int s = 0; s < c.pp; ++s) ranks.push_back(c.rank(s, g, t));
          pp_group.push_back(add("pp.a" + std::to_string(g) + ".t" + std::to_string(t), std::move(ranks)));
        }
    gw.resize(static_cast<size_t>(c.attn_dp));
    slice.resize(static_cast<size_t>(R));
    counts.resize(static_cast<size_t>(m.layers));
    pairs_to.resize(static_cast<size_t>(m.layers));
    is_tp_group.assign(groups.size(), false);
    for (int g : tp_group) is_tp_group[static_cast<size_t>(g)] = true;
    init_dispatch();
  }
  void init_dispatch();
  void dispatch_row(int s, int64_t l, int j, std::vector<double>& out) const;
  double dispatched(int s, int64_t l, int src, int dst) const;

  void prepare(const Batch& batch);
  void emit_rank(int r, RankProgram& prog);
  void emit_layer(Emit& e, int64_t l, int s, int a_group, int t, int j);
  void emit_gqa(Emit& e, int layer, const GroupWork& g);
  void emit_mla(Emit& e, int layer, const GroupWork& g);
  void emit_dense_mlp(Emit& e, int layer, int64_t T, int tpg, int t);
  void emit_moe(Emit& e, int64_t l, int s, int a_group, int j);

  void gemm(Op& o, int64_t M, int64_t N, int64_t K, double w_bytes, int64_t batch = 1) const {
    o.m = M, o.n = N, o.k = K, o.batch = batch, o.tokens = M;
    o.flops = 2.0 * d(M) * d(N) * d(K) * d(batch);
    o.bytes = d(batch) * (d(M) * d(K) * a + d(M) * d(N) * a + d(K) * d(N) * w_bytes);
  }
  // `residual`: the norm that also adds the residual stream (fused: one kernel reads x and the residual and writes
  // both; an engine that does not fuse them runs an add kernel first). After a layer's TP all-reduce that fuses the
  // add and the norm (allreduce_rmsnorm), there is no norm kernel at all.
  void norm(Emit& e, int layer, std::string_view what, int64_t rows, int64_t width, bool residual) const {
    if (residual && opts.fusion.allreduce_rmsnorm) {
      const Op* prev = e.last();
      if (prev && prev->kind == OpKind::kAllReduce && prev->layer >= 0 &&
          is_tp_group[static_cast<size_t>(prev->group)] && prev->comm_bytes <= opts.fused_allreduce_max_bytes)
        return;
    }
    const bool fused = residual && opts.fusion.residual_rmsnorm;
    if (residual && !fused) {
      Op& o = e.op(OpKind::kActivation, layer, what, ad);
      o.name.append(".residual_add");
      o.tokens = rows, o.n = width;
      o.flops = d(rows) * d(width);
      o.bytes = 3.0 * d(rows) * d(width) * a;
    }
    Op& o = e.op(OpKind::kRmsNorm, layer, what, ad);
    o.tokens = rows, o.n = width;
    o.flops = 4.0 * d(rows) * d(width);
    o.bytes = d(rows) * d(width) * a * (fused ? 4.0 : 2.0) + d(width) * 2.0;
  }
  void activation(Emit& e, int layer, std::string_view what, int64_t rows, int64_t width) const {
    if (!opts.fusion.silu_mul) {  // SiLU over the gate half, then the product with the up half
      Op& s = e.op(OpKind::kActivation, layer, what, ad);
      s.name.append(".silu");
      s.tokens = rows, s.n = width;
      s.flops = 4.0 * d(rows) * d(width);
      s.bytes = 2.0 * d(rows) * d(width) * a;
      Op& o = e.op(OpKind::kActivation, layer, what, ad);
      o.name.append(".mul");
      o.tokens = rows, o.n = width;
      o.flops = d(rows) * d(width);
      o.bytes = 3.0 * d(rows) * d(width) * a;
      return;
    }
    Op& o = e.op(OpKind::kActivation, layer, what, ad);
    o.tokens = rows, o.n = width;
    o.flops = 5.0 * d(rows) * d(width);
    o.bytes = 3.0 * d(rows) * d(width) * a;
  }
  void collective(Emit& e, OpKind kind, int layer, std::string_view what, int group, double S) const {
    Op& o = e.op(kind, layer, what, ad);
    o.group = group;
    o.comm_bytes = S;
  }
};

void StepBuilder::Impl::prepare(const Batch& batch) {
  for (auto& g : gw) g.clear();
  for (const auto& s : batch.seqs) {
    if (s.attn_group < 0 || s.attn_group >= c.attn_dp)
      throw ConfigError("", 0, 0, "batch.seq " + std::to_string(s.seq_id) + ".attn_group",
                        "a group in [0, " + std::to_string(c.attn_dp) + ")", std::to_string(s.attn_group));
    if (s.new_tokens < 0 || s.context < 0)
      throw ConfigError("", 0, 0, "batch.seq " + std::to_string(s.seq_id), "non-negative token counts",
                        std::to_string(s.new_tokens) + " new, " + std::to_string(s.context) + " context");
    if (s.new_tokens == 0) continue;
    GroupWork& g = gw[static_cast<size_t>(s.attn_group)];
    const int64_t ctx = attended_context(s.new_tokens, s.context + s.new_tokens, m.sliding_window);
    const double keys = attended_keys(s.new_tokens, ctx);
    g.tokens += s.new_tokens;
    g.sampled += s.sample ? 1 : 0;
    g.q_lens.push_back(s.new_tokens);
    g.ctx_lens.push_back(ctx);
    g.keys += keys;
    g.ctx_sum += d(ctx);
    if (s.is_decode()) {
      g.dq.push_back(s.new_tokens), g.dctx.push_back(ctx), g.dtokens += s.new_tokens, g.dkeys += keys;
      g.dctx_sum += d(ctx);
    } else {
      g.pq.push_back(s.new_tokens), g.pctx.push_back(ctx), g.ptokens += s.new_tokens, g.pkeys += keys;
      g.pctx_sum += d(ctx);
    }
  }
  for (auto& g : gw) g.lens_id = new_lens_id(), g.p_id = new_lens_id(), g.d_id = new_lens_id();
  int64_t Ts = 0;
  max_slice = 0;
  for (int j = 0; j < R; ++j) {
    const int64_t T = gw[static_cast<size_t>(j / c.tp)].tokens, t = j % c.tp;
    slice[static_cast<size_t>(j)] = T / c.tp + (t < T % c.tp ? 1 : 0);
    max_slice = std::max(max_slice, ceil_div(T, c.tp));
    Ts += slice[static_cast<size_t>(j)];
  }
  for (auto& sn : nodes) {  // node forwarding: the slice shares each rank relays into its domain
    if (sn.members.size() <= 1) continue;
    std::fill(sn.relay_in.begin(), sn.relay_in.end(), 0.0);
    for (int j = 0; j < R; ++j) {
      const double share_j = Ts > 0 ? d(slice[static_cast<size_t>(j)]) / d(Ts) : 0.0;
      for (size_t n = 0; n < sn.members.size(); ++n) {
        if (static_cast<int>(n) == sn.node[static_cast<size_t>(j)]) continue;
        const auto& mem = sn.members[n];
        const size_t relay = static_cast<size_t>(mem[static_cast<size_t>(sn.local[static_cast<size_t>(j)]) % mem.size()]);
        sn.relay_in[relay] += share_j;
      }
    }
  }
  if (Ts == stage_tokens || !m.is_moe()) {
    stage_tokens = Ts;
    return;
  }
  stage_tokens = Ts;
  const int64_t E = m.moe.num_experts, k = m.moe.top_k, El = E / c.ep;
  // Expected distinct tokens reaching a set of experts that receives `pairs` of the Ts x k (token, expert) pairs.
  auto hits = [&](double pairs) { return std::min(pairs, d(Ts) * hit_fraction(pairs, d(Ts) * d(k), E, k)); };
  for (int64_t l = 0; l < m.layers; ++l) {
    if (!m.is_moe_layer(l)) continue;
    auto& cnt = counts[static_cast<size_t>(l)];
    expert_token_counts(routing, m.moe.num_experts, m.moe.top_k, Ts, l, cnt);
    auto& to = pairs_to[static_cast<size_t>(l)];
    to.assign(static_cast<size_t>(c.ep), 0.0);
    for (int64_t x = 0; x < m.moe.num_experts; ++x) to[static_cast<size_t>(x / El)] += d(cnt[static_cast<size_t>(x)]);
    if (!a2a || !opts.dispatch.per_rank) continue;
    auto& ht = hits_to[static_cast<size_t>(l)];
    ht.resize(to.size());
    for (size_t x = 0; x < to.size(); ++x) ht[x] = hits(to[x]);
    for (size_t st = 0; st < nodes.size(); ++st) {
      const auto& sn = nodes[st];
      if (sn.members.size() <= 1) continue;
      auto& nh = node_hits[st][static_cast<size_t>(l)];
      nh.assign(sn.members.size(), 0.0);
      for (size_t n = 0; n < sn.members.size(); ++n) {
        double pairs = 0;
        for (int x : sn.members[n]) pairs += to[static_cast<size_t>(x)];
        nh[n] = hits(pairs);
      }
    }
  }
}

void StepBuilder::Impl::init_dispatch() {
  hits_to.resize(static_cast<size_t>(m.layers));
  nodes.assign(static_cast<size_t>(c.pp), StageNodes{});
  node_hits.assign(static_cast<size_t>(c.pp), {});
  if (!a2a || !opts.dispatch.per_rank || !opts.dispatch.node_forwarding || opts.rank_domain.empty()) return;
  if (static_cast<int>(opts.rank_domain.size()) < c.instance_size())
    throw Error("build_step: rank_domain names " + std::to_string(opts.rank_domain.size()) +
                " ranks, the instance has " + std::to_string(c.instance_size()));
  for (int st = 0; st < c.pp; ++st) {
    StageNodes& sn = nodes[static_cast<size_t>(st)];
    sn.node.resize(static_cast<size_t>(R));
    sn.local.resize(static_cast<size_t>(R));
    std::vector<std::pair<int, int>> seen;  // (domain, node index), first-seen order
    for (int j = 0; j < R; ++j) {
      const int dom = opts.rank_domain[static_cast<size_t>(st * R + j)];
      auto it = std::find_if(seen.begin(), seen.end(), [dom](const auto& p) { return p.first == dom; });
      if (it == seen.end()) {
        seen.emplace_back(dom, static_cast<int>(sn.members.size()));
        sn.members.emplace_back();
        it = seen.end() - 1;
      }
      sn.node[static_cast<size_t>(j)] = it->second;
      sn.local[static_cast<size_t>(j)] = static_cast<int>(sn.members[static_cast<size_t>(it->second)].size());
      sn.members[static_cast<size_t>(it->second)].push_back(j);
    }
    sn.relay_in.assign(static_cast<size_t>(R), 0.0);
    node_hits[static_cast<size_t>(st)].resize(static_cast<size_t>(m.layers));
  }
}

// Tokens (copies of a hidden vector) stage-local rank `src` sends to `dst` in the dispatch of MoE layer l (the
// combine sends the same counts back, dst to src).
double StepBuilder::Impl::dispatched(int st, int64_t l, int src, int dst) const {
  const double share_src = stage_tokens > 0 ? d(slice[static_cast<size_t>(src)]) / d(stage_tokens) : 0.0;
  if (!opts.dispatch.per_rank) return pairs_to[static_cast<size_t>(l)][static_cast<size_t>(dst)] * share_src;
  const double to_dst = hits_to[static_cast<size_t>(l)][static_cast<size_t>(dst)];
  const StageNodes& sn = nodes[static_cast<size_t>(st)];
  if (sn.members.size() <= 1) return to_dst * share_src;
  const int ns = sn.node[static_cast<size_t>(src)], nd = sn.node[static_cast<size_t>(dst)];
  if (ns == nd) return to_dst * (share_src + (src == dst ? 0.0 : sn.relay_in[static_cast<size_t>(src)]));
  const auto& mem = sn.members[static_cast<size_t>(nd)];
  return mem[static_cast<size_t>(sn.local[static_cast<size_t>(src)]) % mem.size()] == dst
             ? node_hits[static_cast<size_t>(st)][static_cast<size_t>(l)][static_cast<size_t>(nd)] * share_src
             : 0.0;
}

void StepBuilder::Impl::emit_rank(int r, RankProgram& prog) {
  const int s = c.stage_of(r), ag = c.attn_group_of(r), t = c.tp_index_of(r), j = r % R;
  prog.rank = r;
  prog.stage = s;
  Emit e(prog);
  const GroupWork& g = gw[static_cast<size_t>(ag)];
  const int64_t T = g.tokens;
  const int tpg = tp_group[static_cast<size_t>(s * c.attn_dp + ag)];
  if (s == 0) {
    Op& o = e.op(OpKind::kEmbedding, -1, "embed", ed);
    o.tokens = T, o.n = share(m.vocab, c.tp, t), o.k = m.hidden;
    o.bytes = d(T) * h * a + d(T) / c.tp * h * eb;
    if (c.tp > 1) collective(e, OpKind::kAllReduce, -1, "embed.allreduce", tpg, d(T) * h * a);
  } else {
    Op& o = e.op(OpKind::kRecv, -1, "pp.recv", ad);
    o.peer = c.rank(s - 1, ag, t);
    o.group = pp_group[static_cast<size_t>(ag * c.tp + t)];
    o.comm_bytes = 2.0 * d(T) * h * a;  // hidden + residual
    o.tokens = T;
  }
  const auto [first, last] = stage_layers[static_cast<size_t>(s)];
  for (int64_t l = first; l < last; ++l) emit_layer(e, l, s, ag, t, j);
  if (s + 1 < c.pp) {
    Op& o = e.op(OpKind::kSend, -1, "pp.send", ad);
    o.peer = c.rank(s + 1, ag, t);
    o.group = pp_group[static_cast<size_t>(ag * c.tp + t)];
    o.comm_bytes = 2.0 * d(T) * h * a;
    o.tokens = T;
  } else {
    norm(e, -1, "final_norm", T, m.hidden, true);
    const int64_t vshard = share(m.vocab, c.tp, t);
    gemm(e.op(OpKind::kGemm, -1, "lm_head", ed), g.sampled, vshard, m.hidden, eb);
    if (c.tp > 1)  // payload: n x the largest share (nccl-tests' S)
      collective(e, OpKind::kAllGather, -1, "lm_head.allgather", tpg,
                 d(g.sampled) * d(ceil_div(m.vocab, c.tp)) * c.tp * a);
    Op& o = e.op(OpKind::kSample, -1, "sample", ad);
    o.tokens = g.sampled, o.n = m.vocab;
    o.flops = d(g.sampled) * d(m.vocab);
    o.bytes = d(g.sampled) * d(m.vocab) * a;
  }
  e.finish();
}

void StepBuilder::Impl::emit_layer(Emit& e, int64_t l, int s, int ag, int t, int j) {
  const GroupWork& g = gw[static_cast<size_t>(ag)];
  const int layer = static_cast<int>(l);
  norm(e, layer, "attn_norm", g.tokens, m.hidden, true);
  if (mla)
    emit_mla(e, layer, g);
  else
    emit_gqa(e, layer, g);
  const int my_tp = tp_group[static_cast<size_t>(s * c.attn_dp + ag)];
  if (c.tp > 1) collective(e, OpKind::kAllReduce, layer, "attn.allreduce", my_tp, d(g.tokens) * h * a);
  norm(e, layer, "mlp_norm", g.tokens, m.hidden, true);
  if (m.is_moe_layer(l))
    emit_moe(e, l, s, ag, j);
  else
    emit_dense_mlp(e, layer, g.tokens, my_tp, t);
}

void StepBuilder::Impl::emit_gqa(Emit& e, int layer, const GroupWork& g) {
  const int64_t T = g.tokens, hq = hs.q_heads, hkv = hs.kv_heads, hd = m.head_dim;
  gemm(e.op(OpKind::kGemm, layer, "attn.qkv", wd), T, (hq + 2 * hkv) * hd, m.hidden, wb);
  if (m.qk_norm) norm(e, layer, "attn.qk_norm", T * (hq + hkv), hd, false);
  if (opts.fusion.rope_kv_append) {  // one kernel: read q, k, v; write the rotated q and k, v into the cache
    Op& o = e.op(OpKind::kKvAppend, layer, "attn.rope_kv_append", kd);
    o.tokens = T, o.heads = hq, o.kv_heads = hkv, o.head_dim = hd;
    o.flops = 6.0 * d(T) * d((hq + hkv) * hd);
    o.bytes = d(T) * d(hd) * (d(2 * hq + 2 * hkv) * a + d(2 * hkv) * kvb);
  } else {
    {
      Op& o = e.op(OpKind::kRope, layer, "attn.rope", ad);
      o.tokens = T, o.heads = hq, o.kv_heads = hkv, o.head_dim = hd;
      o.flops = 6.0 * d(T) * d((hq + hkv) * hd);
      o.bytes = 2.0 * d(T) * d((hq + hkv) * hd) * a;
    }
    Op& o = e.op(OpKind::kKvAppend, layer, "attn.kv_append", kd);
    o.tokens = T, o.kv_heads = hkv, o.head_dim = hd;
    o.bytes = d(T) * 2.0 * d(hkv * hd) * (a + kvb);
  }
  {
    Op& o = e.op(OpKind::kAttention, layer, "attn.core", ad);
    o.tokens = T, o.heads = hq, o.kv_heads = hkv, o.head_dim = hd, o.v_head_dim = hd;
    o.q_lens = g.q_lens;
    o.ctx_lens = g.ctx_lens;
    o.lens_id = g.lens_id;
    o.flops = 2.0 * d(hq) * g.keys * d(2 * hd);
    o.bytes = 2.0 * d(T) * d(hq * hd) * a + g.ctx_sum * 2.0 * d(hkv * hd) * kvb;
  }
  gemm(e.op(OpKind::kGemm, layer, "attn.o", wd), T, m.hidden, hq * hd, wb);
}

void StepBuilder::Impl::emit_mla(Emit& e, int layer, const GroupWork& g) {
  const auto& L = *m.mla;
  const int64_t T = g.tokens, hq = hs.q_heads, dk = L.qk_nope_head_dim + L.qk_rope_head_dim;
  const int64_t latent = L.kv_lora_rank + L.qk_rope_head_dim;
  if (L.q_lora_rank > 0) {
    gemm(e.op(OpKind::kGemm, layer, "attn.qkv_a", wd), T, L.q_lora_rank + latent, m.hidden, wb);
    norm(e, layer, "attn.q_norm", T, L.q_lora_rank, false);
    norm(e, layer, "attn.kv_norm", T, L.kv_lora_rank, false);
    gemm(e.op(OpKind::kGemm, layer, "attn.q_b", wd), T, hq * dk, L.q_lora_rank, wb);
  } else {
    gemm(e.op(OpKind::kGemm, layer, "attn.q", wd), T, hq * dk, m.hidden, wb);
    gemm(e.op(OpKind::kGemm, layer, "attn.kv_a", wd), T, latent, m.hidden, wb);
    norm(e, layer, "attn.kv_norm", T, L.kv_lora_rank, false);
  }
  if (opts.fusion.rope_kv_append) {  // one kernel: rotate q_pe and k_pe, write the latent (c_kv + k_pe) to the cache
    Op& o = e.op(OpKind::kKvAppend, layer, "attn.rope_kv_append", kd);
    o.tokens = T, o.heads = hq, o.kv_heads = 1, o.head_dim = latent;
    o.flops = 6.0 * d(T) * d((hq + 1) * L.qk_rope_head_dim);
    o.bytes = d(T) * (d((2 * hq + 1) * L.qk_rope_head_dim) * a + d(L.kv_lora_rank) * a + d(latent) * kvb);
  } else {
    {
      Op& o = e.op(OpKind::kRope, layer, "attn.rope", ad);
      o.tokens = T, o.heads = hq, o.kv_heads = 1, o.head_dim = L.qk_rope_head_dim;
      o.flops = 6.0 * d(T) * d((hq + 1) * L.qk_rope_head_dim);
      o.bytes = 2.0 * d(T) * d((hq + 1) * L.qk_rope_head_dim) * a;
    }
    Op& o = e.op(OpKind::kKvAppend, layer, "attn.kv_append", kd);
    o.tokens = T, o.kv_heads = 1, o.head_dim = latent;
    o.bytes = d(T) * d(latent) * (a + kvb);
  }
  if (g.ptokens > 0) {  // expanded form: materialize K_nope and V of the whole context, then MHA
    const int64_t ctx = static_cast<int64_t>(g.pctx_sum);
    gemm(e.op(OpKind::kGemm, layer, "attn.kv_b", wd), ctx, hq * (L.qk_nope_head_dim + L.v_head_dim),
         L.kv_lora_rank, wb);
    Op& o = e.op(OpKind::kMlaAttention, layer, "attn.prefill", ad);
    o.tokens = g.ptokens, o.heads = hq, o.kv_heads = hq, o.head_dim = dk, o.v_head_dim = L.v_head_dim;
    o.q_lens = g.pq;
    o.ctx_lens = g.pctx;
    o.lens_id = g.p_id;
    o.flops = 2.0 * d(hq) * g.pkeys * d(dk + L.v_head_dim);
    o.bytes = d(g.ptokens) * d(hq) * d(dk + L.v_head_dim) * a +
              g.pctx_sum * (d(hq * (L.qk_nope_head_dim + L.v_head_dim)) * a + d(L.qk_rope_head_dim) * kvb);
  }
  if (g.dtokens > 0) {  // absorbed form: attend in the latent space (MQA, one 576-wide KV head)
    gemm(e.op(OpKind::kGemm, layer, "attn.q_absorb", ed), g.dtokens, L.kv_lora_rank, L.qk_nope_head_dim, eb, hq);
    Op& o = e.op(OpKind::kMlaAttention, layer, "attn.decode", ad);
    o.tokens = g.dtokens, o.heads = hq, o.kv_heads = 1, o.head_dim = latent, o.v_head_dim = L.kv_lora_rank;
    o.q_lens = g.dq;
    o.ctx_lens = g.dctx;
    o.lens_id = g.d_id;
    o.flops = 2.0 * d(hq) * g.dkeys * d(latent + L.kv_lora_rank);
    o.bytes = d(g.dtokens) * d(hq) * d(latent + L.kv_lora_rank) * a + g.dctx_sum * d(latent) * kvb;
    gemm(e.op(OpKind::kGemm, layer, "attn.v_absorb", ed), g.dtokens, L.v_head_dim, L.kv_lora_rank, eb, hq);
  }
  gemm(e.op(OpKind::kGemm, layer, "attn.o", wd), T, m.hidden, hq * L.v_head_dim, wb);
}

void StepBuilder::Impl::emit_dense_mlp(Emit& e, int layer, int64_t T, int tpg, int t) {
  const int64_t f = share(m.ffn, c.tp, t);
  gemm(e.op(OpKind::kGemm, layer, "mlp.gate_up", wd), T, 2 * f, m.hidden, wb);
  activation(e, layer, "mlp.act", T, f);
  gemm(e.op(OpKind::kGemm, layer, "mlp.down", wd), T, m.hidden, f, wb);
  if (c.tp > 1) collective(e, OpKind::kAllReduce, layer, "mlp.allreduce", tpg, d(T) * h * a);
}

void StepBuilder::Impl::emit_moe(Emit& e, int64_t l, int s, int ag, int j) {
  const int layer = static_cast<int>(l);
  const int tpg = tp_group[static_cast<size_t>(s * c.attn_dp + ag)], sg = stage_group[static_cast<size_t>(s)];
  const auto& mo = m.moe;
  const int64_t T = gw[static_cast<size_t>(ag)].tokens, E = mo.num_experts, El = E / c.ep;
  const int64_t ef = share(mo.expert_ffn, c.moe_tp(), j % c.moe_tp());
  const int ep_index = j / c.moe_tp();
  const auto& cnt = counts[static_cast<size_t>(l)];
  // Tokens this rank gates / scatters (its slice in the all-to-all form, the stage's tokens in the gather form).
  const int64_t Tin = a2a ? slice[static_cast<size_t>(j)] : (c.attn_dp > 1 ? stage_tokens : T);
  const int64_t Tgate = Tin;
  if (!a2a && c.attn_dp > 1)
    collective(e, OpKind::kAllGather, layer, "moe.allgather", sg, d(R) * d(max_slice) * h * a);
  {
    Op& o = e.op(OpKind::kMoeGate, layer, "moe.gate", DType::kBf16);
    o.tokens = Tgate, o.m = Tgate, o.n = E, o.k = m.hidden;
    o.flops = 2.0 * d(Tgate) * h * d(E) + 4.0 * d(Tgate) * d(E);
    o.bytes = d(Tgate) * h * a + h * d(E) * 2.0 + d(Tgate) * d(E) * 4.0;
  }
  int64_t local_pairs = 0;
  for (int64_t x = ep_index * El; x < (ep_index + 1) * El; ++x) local_pairs += cnt[static_cast<size_t>(x)];
  // A Triton fused-MoE kernel in the gather form sees every routed pair: it zero-fills other ranks' pairs, and the
  // activation and the combine run over all of them (spec::MoeExperts).
  const bool triton = !a2a && opts.triton_experts;
  const int64_t seen = triton ? Tin * mo.top_k : local_pairs;
  {
    Op& o = e.op(OpKind::kMoeDispatch, layer, "moe.permute", ad);
    const int64_t pairs = a2a ? Tgate * mo.top_k : local_pairs;
    o.tokens = a2a ? Tgate : Tin;
    // Triton: the routing ids sorted by expert (int32 in, int32 out), no copy of the token rows.
    o.bytes = triton ? d(Tin) * d(mo.top_k) * 8.0 : (d(o.tokens) + d(pairs)) * h * a;
  }
  if (a2a) {
    Op& o = e.op(OpKind::kAllToAll, layer, "moe.dispatch", ad);
    o.group = sg;
    o.a2a_send_bytes.resize(static_cast<size_t>(R));
    const double fp8_bytes = h + std::ceil(h / d(opts.dispatch.fp8_block)) * 4.0;  // fp8 values + fp32 scales
    for (int x = 0; x < R; ++x) {
      const double copies = dispatched(s, l, j, x);
      o.a2a_send_bytes[static_cast<size_t>(x)] = opts.dispatch.fp8 ? copies * fp8_bytes : copies * h * a;
      o.comm_bytes += o.a2a_send_bytes[static_cast<size_t>(x)];
    }
  }
  auto experts = [&](std::string_view what, int64_t N, int64_t K) {
    Op& o = e.op(OpKind::kGemm, layer, what, wd);
    o.expert_tokens.assign(cnt.begin() + ep_index * El, cnt.begin() + (ep_index + 1) * El);
    int64_t active = 0;
    for (int64_t v : o.expert_tokens) active += v > 0 ? 1 : 0;
    o.m = local_pairs, o.n = N, o.k = K, o.batch = El, o.tokens = seen;
    o.flops = 2.0 * d(local_pairs) * d(N) * d(K);
    o.bytes = d(local_pairs) * (d(K) + d(N)) * a + d(seen - local_pairs) * d(N) * a + d(active) * d(K) * d(N) * wb;
  };
  experts("moe.experts.gate_up", 2 * ef, m.hidden);
  activation(e, layer, "moe.experts.act", seen, ef);
  experts("moe.experts.down", m.hidden, ef);
  if (a2a) {
    Op& o = e.op(OpKind::kAllToAll, layer, "moe.combine", ad);
    o.group = sg;
    o.a2a_send_bytes.resize(static_cast<size_t>(R));
    for (int x = 0; x < R; ++x) {
      o.a2a_send_bytes[static_cast<size_t>(x)] = dispatched(s, l, x, j) * h * a;  // the dispatch's path, reversed
      o.comm_bytes += o.a2a_send_bytes[static_cast<size_t>(x)];
    }
  }
  {
    Op& o = e.op(OpKind::kMoeCombine, layer, "moe.unpermute", ad);
    const int64_t pairs = a2a ? Tgate * mo.top_k : seen;
    o.tokens = a2a ? Tgate : Tin;
    o.flops = 2.0 * d(pairs) * h;
    o.bytes = (d(o.tokens) + d(pairs)) * h * a;
  }
  if (mo.num_shared_experts > 0) {
    const int64_t sf = a2a ? mo.num_shared_experts * mo.expert_ffn : share(mo.num_shared_experts * mo.expert_ffn, R, j);
    gemm(e.op(OpKind::kGemm, layer, "moe.shared.gate_up", wd), Tin, 2 * sf, m.hidden, wb);
    activation(e, layer, "moe.shared.act", Tin, sf);
    gemm(e.op(OpKind::kGemm, layer, "moe.shared.down", wd), Tin, m.hidden, sf, wb);
  }
  if (a2a) {
    if (c.tp > 1)
      collective(e, OpKind::kAllGather, layer, "moe.tp_allgather", tpg, d(c.tp) * d(ceil_div(T, c.tp)) * h * a);
  } else if (c.attn_dp == 1) {
    if (R > 1) collective(e, OpKind::kAllReduce, layer, "moe.allreduce", tpg, d(T) * h * a);
  } else {
    collective(e, OpKind::kReduceScatter, layer, "moe.reducescatter", sg, d(R) * d(max_slice) * h * a);
    if (c.tp > 1)
      collective(e, OpKind::kAllGather, layer, "moe.tp_allgather", tpg, d(c.tp) * d(ceil_div(T, c.tp)) * h * a);
  }
}

StepBuilder::StepBuilder(const Plan& plan, int pool, const StepOptions& options)
    : impl_(std::make_unique<Impl>(plan, pool, options)) {}
StepBuilder::~StepBuilder() = default;
StepBuilder::StepBuilder(StepBuilder&&) noexcept = default;
StepBuilder& StepBuilder::operator=(StepBuilder&&) noexcept = default;

void StepBuilder::build(const Batch& batch, Step& out) {
  Impl& im = *impl_;
  im.prepare(batch);
  out.groups = im.groups;
  out.tokens = batch.tokens();
  out.seqs = sequences(batch);
  out.pool = im.pool;
  const int n = im.c.instance_size();
  out.ranks.resize(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) im.emit_rank(r, out.ranks[static_cast<size_t>(r)]);
}

void StepBuilder::build_ranks(const Batch& batch, const std::vector<int>& ranks, Step& out) {
  Impl& im = *impl_;
  im.prepare(batch);
  out.groups = im.groups;
  out.tokens = batch.tokens();
  out.seqs = sequences(batch);
  out.pool = im.pool;
  out.ranks.resize(ranks.size());
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= im.c.instance_size())
      throw Error("build_step: rank " + std::to_string(ranks[i]) + " out of range");
    im.emit_rank(ranks[i], out.ranks[i]);
  }
}

void StepBuilder::trim_scratch() {
  size_t total = 0;
  for (const auto& g : impl_->gw) total += g.q_lens.capacity();
  if (total <= (size_t{1} << 16)) return;
  for (auto& g : impl_->gw) g.trim(0);
}

Step StepBuilder::build(const Batch& batch) {
  Step s;
  build(batch, s);
  return s;
}

Step build_step(const Plan& plan, int pool, const Batch& batch, const StepOptions& options) {
  return StepBuilder(plan, pool, options).build(batch);
}

StepOptions step_options(const spec::Engine& engine, const Plan& plan, int pool, const spec::Cluster& cluster) {
  StepOptions o;
  o.fusion = engine.fusion;
  o.dispatch = engine.moe_dispatch;
  o.triton_experts = engine.moe_experts.is_triton(plan.weight_dtype);
  o.fused_allreduce_max_bytes = engine.custom_allreduce.enabled ? engine.custom_allreduce.max_bytes : 0.0;
  if (pool < 0 || pool >= static_cast<int>(plan.pools.size())) return o;
  if (plan.pools[static_cast<size_t>(pool)].placement.empty()) return o;
  for (int gpu : plan.pools[static_cast<size_t>(pool)].placement.front()) {
    const int dom = gpu >= 0 && gpu < cluster.gpu_count() ? cluster.domain_of(gpu) : -1;
    o.rank_domain.push_back(dom >= 0 ? dom : -1 - gpu);  // no scale-up domain: a domain of its own
  }
  return o;
}

double gemm_flops(const RankProgram& rank) {
  double f = 0;
  for (const auto& o : rank.ops)
    if (o.kind == OpKind::kGemm) f += o.flops;
  return f;
}

double gemm_flops(const Step& step) {
  double f = 0;
  for (const auto& r : step.ranks) f += gemm_flops(r);
  return f;
}

}  // namespace parasol::plan

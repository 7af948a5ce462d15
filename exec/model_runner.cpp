// ModelRunner: the step driver (Batch -> build_step -> this rank's program, op by op, each checked against the
// Step), KV blocks, embedding, LM head, pipeline hand-off and sampling. Weights are loaded in model_weights.cpp; the
// layer blocks are in model_layers.cpp (attention, MLA, dense MLP) and model_moe.cpp (MoE).
#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/common/error.hpp"
#include "exec/runner_impl.hpp"

namespace parasol::exec {
namespace {

std::string describe(const plan::Op& op) {
  std::ostringstream os;
  os << plan::to_string(op.kind) << " '" << op.name << "'";
  return os.str();
}

}  // namespace

const plan::Op& ModelRunner::Impl::expect(StepState& st, plan::OpKind kind, const std::string& name,
                                          const OpShape& shape) {
  const auto& ops = st.program->ops;
  const std::string where =
      "executor vs Step (rank " + std::to_string(layout.rank) + ", op " + std::to_string(st.next_op) + "): ";
  if (st.next_op >= ops.size())
    throw Error(where + "the executor runs " + plan::to_string(kind) + " '" + name + "' after the program's last op");
  const plan::Op& op = ops[st.next_op];
  if (op.kind != kind || op.name != name)
    throw Error(where + "the Step has " + describe(op) + ", the executor runs " + plan::to_string(kind) + " '" + name +
                "'");
  auto check = [&](const char* field, int64_t planned, int64_t actual) {
    if (actual >= 0 && planned != actual)
      throw Error(where + describe(op) + ": " + field + " is " + std::to_string(planned) + " in the Step, " +
                  std::to_string(actual) + " in the executor");
  };
  check("n", op.n, shape.n);
  check("k", op.k, shape.k);
  if (!shape.data_dependent) {
    check("m", op.m, shape.m);
    check("tokens", op.tokens, shape.tokens);
  }
  return op;
}

void ModelRunner::Impl::run_op(StepState& st, plan::OpKind kind, int layer, const std::string& what,
                               const OpShape& shape, const std::function<void()>& fn) {
  const plan::Op& planned = expect(st, kind, op_name(layer, what), shape);
  ++st.next_op;
  OpRecord rec{planned, 0.0};
  plan::Op& op = rec.op;
  if (shape.data_dependent) {
    // Routed-expert ops: the rows are the (token, expert) pairs the real router sent to this rank's experts. Costs
    // as build_step states them (GEMM: A + C per row; activation: 5 FLOPs and 3 elements per output element).
    const int64_t rows = shape.m >= 0 ? shape.m : shape.tokens;
    op.m = kind == plan::OpKind::kGemm ? rows : op.m;
    op.tokens = rows;
    op.expert_tokens = shape.expert_tokens;
    if (kind == plan::OpKind::kGemm) {
      int64_t active = 0;
      for (int64_t v : op.expert_tokens) active += v > 0 ? 1 : 0;
      op.flops = 2.0 * rows * op.n * op.k;
      op.bytes = static_cast<double>(rows) * static_cast<double>(op.k + op.n) * act_bytes +
                 static_cast<double>(active) * static_cast<double>(op.k * op.n) * weight_bytes;
    } else {
      op.flops = 5.0 * rows * op.n;
      op.bytes = 3.0 * rows * op.n * act_bytes;
    }
  } else {
    if (shape.m >= 0) op.m = shape.m;
    if (shape.tokens >= 0) op.tokens = shape.tokens;
  }
  if (opt.profile) {
    auto a = be.create_event(), b = be.create_event();
    be.record(*a);
    fn();
    be.record(*b);
    rec.time_s = be.elapsed_s(*a, *b);
  } else {
    fn();
  }
  st.ops->push_back(std::move(rec));
}

void ModelRunner::Impl::gemm(StepState& st, int layer, const std::string& what, const Tensor& x, const Tensor& w,
                             const Tensor& y, bool accumulate) {
  const int64_t m = x.numel() / std::max<int64_t>(1, x.dim(-1));
  run_op(st, plan::OpKind::kGemm, layer, what, {m, w.dim(0), w.dim(1), -1, false}, [&] {
    if (m > 0) be.gemm(x, w, y, accumulate);
  });
}

void ModelRunner::Impl::collective(StepState& st, plan::OpKind kind, int layer, const std::string& what,
                                   Communicator& c, const std::vector<int>& members, const std::function<void()>& fn) {
  const std::string name = op_name(layer, what);
  const plan::Op& op = expect(st, kind, name, {});
  if (op.group < 0 || op.group >= static_cast<int>(st.step->groups.size()) ||
      st.step->groups[static_cast<size_t>(op.group)].ranks != members || c.size() != static_cast<int>(members.size()))
    throw Error("executor vs Step (rank " + std::to_string(layout.rank) + "): " + describe(op) +
                " runs over another group than the Step's");
  run_op(st, kind, layer, what, {}, fn);
}

void ModelRunner::Impl::all_reduce(StepState& st, int layer, const std::string& what, const Tensor& t) {
  collective(st, plan::OpKind::kAllReduce, layer, what, *tp_comm, tp_members,
             [&] { tp_comm->all_reduce(t.data, t.data, t.numel(), t.dtype, op_name(layer, what)); });
}

void ModelRunner::Impl::all_gather_v(StepState& st, Communicator& c, const std::vector<int>& members, int layer,
                                     const std::string& what, const Tensor& mine, const std::vector<int64_t>& counts,
                                     const Tensor& out) {
  collective(st, plan::OpKind::kAllGather, layer, what, c, members,
             [&] { c.all_gather_v(mine.data, out.data, counts, mine.dtype, op_name(layer, what)); });
}

void ModelRunner::Impl::norm(StepState& st, int layer, const std::string& what, const Tensor& w) {
  run_op(st, plan::OpKind::kRmsNorm, layer, what, {-1, model.hidden, -1, st.T, false}, [&] {
    if (st.T == 0) return;
    if (st.pending) be.add(st.x, st.partial, st.x);
    be.rms_norm(st.x, w, static_cast<float>(model.rms_eps), *st.h);
  });
  st.pending = false;
}

void ModelRunner::Impl::prepare(StepState& st, const StepRequest& req) {
  st.seqs.block_tokens = opt.block_tokens;
  st.group_tokens.assign(layout.config.attn_dp, 0);
  for (const SeqInput& s : req.seqs)
    if (s.attn_group >= 0 && s.attn_group < layout.config.attn_dp)
      st.group_tokens[s.attn_group] += static_cast<int64_t>(s.tokens.size());
  std::vector<int32_t> pos, slots;
  for (size_t i = 0; i < req.seqs.size(); ++i) {
    const SeqInput& s = req.seqs[i];
    if (s.attn_group < 0 || s.attn_group >= layout.config.attn_dp)
      throw ConfigError("sequence " + std::to_string(s.seq_id) + ": attention group " + std::to_string(s.attn_group) +
                        " outside [0, " + std::to_string(layout.config.attn_dp) + ")");
    if (s.attn_group != layout.attn_group || s.tokens.empty()) continue;
    int64_t q = static_cast<int64_t>(s.tokens.size()), ctx = s.context + q;
    auto& table = block_tables[s.seq_id];
    if (static_cast<int64_t>(table.size()) * opt.block_tokens < s.context)
      throw Error("sequence " + std::to_string(s.seq_id) + " claims " + std::to_string(s.context) +
                  " cached tokens but holds " + std::to_string(table.size() * opt.block_tokens));
    while (static_cast<int64_t>(table.size()) * opt.block_tokens < ctx) {
      if (free_blocks.empty()) throw RuntimeFailure("KV cache full (" + std::to_string(opt.kv_blocks) + " blocks)");
      table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    for (int64_t j = 0; j < q; ++j) {
      int64_t p = s.context + j;
      pos.push_back(static_cast<int32_t>(p));
      slots.push_back(static_cast<int32_t>(table[p / opt.block_tokens] * opt.block_tokens + p % opt.block_tokens));
    }
    st.seqs.q_lens.push_back(q);
    st.seqs.ctx_lens.push_back(ctx);
    st.seqs.block_tables.push_back(table);
    st.seq_index.push_back(static_cast<int>(i));
    st.decode.push_back(q == 1 && s.context > 0);
  }
  st.T = static_cast<int64_t>(pos.size());
  const int64_t H = model.hidden;
  st.positions = OwnedTensor(be, ElemType::kI32, {st.T});
  st.slots = OwnedTensor(be, ElemType::kI32, {st.T});
  upload_i32(be, pos, *st.positions);
  upload_i32(be, slots, *st.slots);
  st.xp = OwnedTensor(be, ElemType::kF32, {2 * st.T, H});
  st.x = st.xp->rows(0, st.T);
  st.partial = st.xp->rows(st.T, 2 * st.T);
  st.h = OwnedTensor(be, ElemType::kF32, {st.T, H});
}

void ModelRunner::Impl::embed_or_recv(StepState& st, const StepRequest& req) {
  const int rps = layout.config.ranks_per_stage();
  if (!layout.first_stage()) {
    const int peer = layout.rank - rps;
    const plan::Op& op = expect(st, plan::OpKind::kRecv, "pp.recv", {-1, -1, -1, st.T, false});
    if (op.peer != peer) throw Error("executor vs Step: pp.recv from rank " + std::to_string(op.peer) + " in the Step");
    // hidden (x) and residual (partial) of the previous stage, as the Step's payload says
    run_op(st, plan::OpKind::kRecv, -1, "pp.recv", {-1, -1, -1, st.T, false},
           [&] { world.recv(st.xp->data, st.xp->numel(), ElemType::kF32, peer, "pp.recv"); });
    st.pending = true;
    return;
  }
  std::vector<int32_t> ids;
  for (int i : st.seq_index) ids.insert(ids.end(), req.seqs[i].tokens.begin(), req.seqs[i].tokens.end());
  for (int32_t id : ids)
    if (id < 0 || id >= model.vocab) throw ConfigError("token id " + std::to_string(id) + " outside the vocabulary");
  OwnedTensor idt(be, ElemType::kI32, {st.T});
  upload_i32(be, ids, *idt);
  run_op(st, plan::OpKind::kEmbedding, -1, "embed", {-1, embed->dim(0), model.hidden, st.T, false}, [&] {
    if (st.T > 0) be.embedding(*idt, *embed, layout.vocab.begin, st.x);
  });
  if (layout.config.tp > 1) all_reduce(st, -1, "embed.allreduce", st.x);
}

void ModelRunner::Impl::finish(StepState& st, const StepRequest& req, StepResult& res, bool all_ranks) {
  const int64_t H = model.hidden, V = model.vocab;
  const int rps = layout.config.ranks_per_stage();
  std::vector<int32_t> sampled;  // (request index, token) pairs this rank reports
  if (!layout.last_stage()) {
    const int peer = layout.rank + rps;
    const plan::Op& op = expect(st, plan::OpKind::kSend, "pp.send", {-1, -1, -1, st.T, false});
    if (op.peer != peer) throw Error("executor vs Step: pp.send to rank " + std::to_string(op.peer) + " in the Step");
    if (!st.pending) be.fill_zero(st.partial);
    run_op(st, plan::OpKind::kSend, -1, "pp.send", {-1, -1, -1, st.T, false},
           [&] { world.send(st.xp->data, st.xp->numel(), ElemType::kF32, peer, "pp.send"); });
    st.pending = false;
  } else {
    norm(st, -1, "final_norm", *final_norm);
    std::vector<int32_t> rows;
    int64_t t0 = 0;
    for (size_t s = 0; s < st.seq_index.size(); ++s) {
      const SeqInput& in = req.seqs[st.seq_index[s]];
      int64_t q = st.seqs.q_lens[s];
      for (int64_t j = 0; j < q; ++j)
        if (opt.all_logits || (in.sample && j == q - 1)) {
          rows.push_back(static_cast<int32_t>(t0 + j));
          res.logit_rows.push_back({st.seq_index[s], j});
        }
      t0 += q;
    }
    const int64_t R = static_cast<int64_t>(rows.size()), Vl = layout.vocab.size();
    OwnedTensor idx(be, ElemType::kI32, {R}), hs(be, ElemType::kF32, {R, H}), part(be, ElemType::kF32, {R, Vl});
    upload_i32(be, rows, *idx);
    if (R > 0) be.gather_rows(*st.h, *idx, *hs);
    run_op(st, plan::OpKind::kGemm, -1, "lm_head", {opt.all_logits ? -1 : R, Vl, H, -1, false}, [&] {
      if (R > 0) be.gemm(*hs, *lm_head, *part);
    });
    OwnedTensor full(be, ElemType::kF32, {R, V});
    const int tp = layout.config.tp;
    if (tp == 1) {
      if (R > 0) be.copy(full->data, part->data, part->bytes());
    } else {
      std::vector<int64_t> counts(tp);
      for (int r = 0; r < tp; ++r) counts[r] = R * balanced_range(V, tp, r).size();
      OwnedTensor gathered(be, ElemType::kF32, {R * V});
      all_gather_v(st, *tp_comm, tp_members, -1, "lm_head.allgather", *part, counts, *gathered);
      // [rank][row][vocab slice] -> [row][vocab]
      std::vector<float> g = download_f32(be, *gathered), f(static_cast<size_t>(R * V));
      int64_t off = 0;
      for (int r = 0; r < tp; ++r) {
        Range vr = balanced_range(V, tp, r);
        for (int64_t i = 0; i < R; ++i)
          std::copy(g.begin() + off + i * vr.size(), g.begin() + off + (i + 1) * vr.size(),
                    f.begin() + i * V + vr.begin);
        off += R * vr.size();
      }
      upload_f32(be, f, *full);
    }
    OwnedTensor tok(be, ElemType::kI32, {R});
    run_op(st, plan::OpKind::kSample, -1, "sample", {-1, V, -1, opt.all_logits ? -1 : R, false}, [&] {
      if (R > 0) be.argmax(*full, *tok);
    });
    res.logits = download_f32(be, *full);
    std::vector<int32_t> toks = download_i32(be, *tok);
    if (layout.tp_index == 0)
      for (int64_t i = 0; i < R; ++i) {
        auto [si, j] = res.logit_rows[i];
        if (req.seqs[si].sample && j == static_cast<int64_t>(req.seqs[si].tokens.size()) - 1) {
          sampled.push_back(si);
          sampled.push_back(toks[i]);
        }
      }
  }
  res.next_tokens.assign(req.seqs.size(), -1);
  if (!all_ranks) {  // control plane, outside the Step: the last stage's tokens go to instance rank 0
    if (layout.rank == 0) {
      for (size_t i = 0; i + 1 < sampled.size(); i += 2) res.next_tokens[static_cast<size_t>(sampled[i])] = sampled[i + 1];
    } else if (layout.last_stage() && layout.tp_index == 0) {
      const int32_t n = static_cast<int32_t>(sampled.size());
      world.send(&n, 1, ElemType::kI32, 0, "sample.tokens");
      world.send(sampled.data(), n, ElemType::kI32, 0, "sample.tokens");
    }
    return;
  }
  // Control plane, outside the Step: every rank learns every sampled token (the first stage needs them next step).
  int32_t n = static_cast<int32_t>(sampled.size());
  std::vector<int32_t> counts32(world.size());
  world.all_gather(&n, counts32.data(), 1, ElemType::kI32, "sample.tokens");
  std::vector<int64_t> counts(counts32.begin(), counts32.end());
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::vector<int32_t> all(static_cast<size_t>(total));
  world.all_gather_v(sampled.data(), all.data(), counts, ElemType::kI32, "sample.tokens");
  for (int64_t i = 0; i + 1 < total; i += 2) res.next_tokens[all[i]] = all[i + 1];
}

namespace {
const spec::Model& executable(const spec::Model& m) {
  if (m.sliding_window > 0)
    throw ConfigError("", 0, 0, "model.sliding_window",
                      "a model with full attention (the executor's attention kernels have no sliding window)",
                      std::to_string(m.sliding_window));
  return m;
}
}  // namespace

ModelRunner::ModelRunner(const spec::Model& model, const RankLayout& layout, Backend& backend, Communicator& instance,
                         const WeightSource& weights, const RunnerOptions& options)
    : layout_(layout),
      impl_(std::make_unique<Impl>(executable(model), layout, backend, instance, weights, options)) {}

ModelRunner::~ModelRunner() = default;

StepResult ModelRunner::step(const StepRequest& request) {
  if (!impl_->submitted.empty())
    throw Error("exec: step() with " + std::to_string(impl_->submitted.size()) + " submitted iterations not collected");
  StepResult res;
  impl_->run_step(request, res, true);
  return res;
}

std::vector<OpRecord> ModelRunner::submit(const StepRequest& request) {
  Impl& im = *impl_;
  StepResult res;
  im.run_step(request, res, false);
  std::vector<OpRecord> ops = std::move(res.ops);
  if (layout_.rank == 0) im.submitted.push_back(std::move(res));
  return ops;
}

StepResult ModelRunner::collect() {
  Impl& im = *impl_;
  if (layout_.rank != 0) throw Error("exec: collect() on instance rank " + std::to_string(layout_.rank));
  if (im.submitted.empty()) throw Error("exec: collect() with no submitted iteration");
  StepResult res = std::move(im.submitted.front());
  im.submitted.pop_front();
  for (int r : im.token_senders) {  // in rank order: each pair (request index, token) of that rank's group
    int32_t n = 0;
    im.world.recv(&n, 1, ElemType::kI32, r, "sample.tokens");
    std::vector<int32_t> pairs(static_cast<size_t>(n));
    im.world.recv(pairs.data(), n, ElemType::kI32, r, "sample.tokens");
    for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
      const size_t si = static_cast<size_t>(pairs[i]);
      if (si >= res.next_tokens.size())
        throw Error("exec: rank " + std::to_string(r) + " sampled for request index " + std::to_string(si) + " of " +
                    std::to_string(res.next_tokens.size()) + " (results collected out of order?)");
      res.next_tokens[si] = pairs[i + 1];
    }
  }
  return res;
}

void ModelRunner::Impl::run_step(const StepRequest& request, StepResult& res, bool all_ranks) {
  plan::Batch batch;
  for (const SeqInput& s : request.seqs)
    batch.seqs.push_back({s.seq_id, static_cast<int64_t>(s.tokens.size()), s.context, s.attn_group, s.sample});
  builder->build(batch, step);
  StepState st;
  st.ops = &res.ops;
  st.step = &step;
  st.program = &step.ranks.at(static_cast<size_t>(layout.rank));
  prepare(st, request);
  embed_or_recv(st, request);
  for (auto& lw : layers) {
    int l = static_cast<int>(lw.index);
    norm(st, l, "attn_norm", *lw.attn_norm);
    if (model.mla)
      mla(st, lw);
    else
      attention(st, lw);
    if (layout.config.tp > 1) all_reduce(st, l, "attn.allreduce", st.partial);
    st.pending = true;
    norm(st, l, "mlp_norm", *lw.mlp_norm);
    if (lw.moe)
      moe(st, lw);
    else
      dense_block(st, lw);
    st.pending = true;
  }
  finish(st, request, res, all_ranks);
  if (st.next_op != st.program->ops.size())
    throw Error("executor vs Step (rank " + std::to_string(layout.rank) + "): the executor ran " +
                std::to_string(st.next_op) + " ops of the program's " + std::to_string(st.program->ops.size()) +
                "; next: " + describe(st.program->ops[st.next_op]));
}

void ModelRunner::release(int64_t seq_id) {
  auto it = impl_->block_tables.find(seq_id);
  if (it == impl_->block_tables.end()) return;
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) impl_->free_blocks.push_back(*b);
  std::sort(impl_->free_blocks.begin(), impl_->free_blocks.end(), std::greater<int32_t>());
  impl_->block_tables.erase(it);
}

namespace {
// The KV caches of a layer that hold rows per slot (k and v, or the MLA latent).
std::vector<const Tensor*> kv_caches(const LayerWeights& lw) {
  std::vector<const Tensor*> out;
  for (const OwnedTensor* t : {&lw.k_cache, &lw.v_cache, &lw.latent})
    if (t->view.data) out.push_back(&t->view);
  return out;
}
size_t row_bytes(const Tensor& cache) { return cache.bytes() / static_cast<size_t>(cache.dim(0)); }
}  // namespace

std::vector<uint8_t> ModelRunner::export_kv(int64_t seq_id, int64_t tokens) const {
  auto it = impl_->block_tables.find(seq_id);
  if (it == impl_->block_tables.end()) return {};
  const std::vector<int32_t>& table = it->second;
  const int64_t bt = impl_->opt.block_tokens;
  if (static_cast<int64_t>(table.size()) * bt < tokens)
    throw Error("export_kv: sequence " + std::to_string(seq_id) + " holds fewer than " + std::to_string(tokens) +
                " tokens of KV");
  std::vector<uint8_t> out;
  for (const LayerWeights& lw : impl_->layers)
    for (const Tensor* cache : kv_caches(lw)) {
      const size_t rb = row_bytes(*cache);
      for (int64_t t = 0; t < tokens; t += bt) {  // one block at a time: its slots are consecutive rows
        const int64_t rows = std::min(bt, tokens - t);
        const size_t at = out.size();
        out.resize(at + static_cast<size_t>(rows) * rb);
        const auto* src = static_cast<const uint8_t*>(cache->data) +
                          static_cast<size_t>(table[static_cast<size_t>(t / bt)]) * static_cast<size_t>(bt) * rb;
        impl_->be.download(out.data() + at, src, static_cast<size_t>(rows) * rb);
      }
    }
  return out;
}

void ModelRunner::import_kv(int64_t seq_id, int64_t tokens, const std::vector<uint8_t>& bytes) {
  release(seq_id);
  const int64_t bt = impl_->opt.block_tokens;
  size_t want = 0;
  for (const LayerWeights& lw : impl_->layers)
    for (const Tensor* cache : kv_caches(lw)) want += static_cast<size_t>(tokens) * row_bytes(*cache);
  if (bytes.size() != want)
    throw RuntimeFailure("import_kv: sequence " + std::to_string(seq_id) + ": " + std::to_string(bytes.size()) +
                         " bytes of KV for a layout that holds " + std::to_string(want));
  std::vector<int32_t>& table = impl_->block_tables[seq_id];
  while (static_cast<int64_t>(table.size()) * bt < tokens) {
    if (impl_->free_blocks.empty())
      throw RuntimeFailure("KV cache full (" + std::to_string(impl_->opt.kv_blocks) + " blocks)");
    table.push_back(impl_->free_blocks.back());
    impl_->free_blocks.pop_back();
  }
  size_t at = 0;
  for (const LayerWeights& lw : impl_->layers)
    for (const Tensor* cache : kv_caches(lw)) {
      const size_t rb = row_bytes(*cache);
      for (int64_t t = 0; t < tokens; t += bt) {
        const int64_t rows = std::min(bt, tokens - t);
        auto* dst = static_cast<uint8_t*>(cache->data) +
                    static_cast<size_t>(table[static_cast<size_t>(t / bt)]) * static_cast<size_t>(bt) * rb;
        impl_->be.upload(dst, bytes.data() + at, static_cast<size_t>(rows) * rb);
        at += static_cast<size_t>(rows) * rb;
      }
    }
}

int64_t ModelRunner::free_kv_blocks() const {
  return static_cast<int64_t>(impl_->free_blocks.size());
}
const plan::Step& ModelRunner::last_step() const {
  return impl_->step;
}
const plan::Plan& ModelRunner::plan() const {
  return impl_->plan;
}

}  // namespace parasol::exec

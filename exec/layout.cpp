#include "exec/layout.hpp"

#include <algorithm>
#include <string>

#include "core/common/error.hpp"
#include "core/plan/feasibility.hpp"

namespace parasol::exec {

std::string layout_label(const plan::ParallelConfig& c) {
  return "tp" + std::to_string(c.tp) + ".pp" + std::to_string(c.pp) + ".ep" + std::to_string(c.ep) + ".adp" +
         std::to_string(c.attn_dp) + ".dp" + std::to_string(c.dp);
}

Range balanced_range(int64_t total, int parts, int i) {
  const int64_t base = total / parts, extra = total % parts;
  const int64_t begin = i * base + std::min<int64_t>(i, extra);
  return {begin, begin + base + (i < extra ? 1 : 0)};
}

RankLayout RankLayout::make(const spec::Model& m, const plan::ParallelConfig& c,
                            const std::vector<std::pair<int64_t, int64_t>>& stage_layers, int rank) {
  auto fail = [&](const std::string& why) {
    throw ConfigError("layout " + layout_label(c) + " cannot run model '" + m.name + "': " + why);
  };
  if (c.tp < 1 || c.pp < 1 || c.ep < 1 || c.attn_dp < 1) fail("every degree must be >= 1");
  if (rank < 0 || rank >= c.instance_size()) fail("rank " + std::to_string(rank) + " outside the instance");
  if (c.ranks_per_stage() % c.ep != 0) fail("ep must divide tp x attn_dp");
  RankLayout l;
  l.config = c;
  l.rank = rank;
  l.stage = c.stage_of(rank);
  l.attn_group = c.attn_group_of(rank);
  l.tp_index = c.tp_index_of(rank);
  l.stage_rank = rank % c.ranks_per_stage();
  int moe_tp = c.moe_tp();
  l.ep_index = l.stage_rank / moe_tp;
  l.moe_tp_index = l.stage_rank % moe_tp;

  if (!stage_layers.empty()) {
    if (static_cast<int>(stage_layers.size()) != c.pp)
      fail("stage_layers has " + std::to_string(stage_layers.size()) + " entries for pp " + std::to_string(c.pp));
    l.stage_layers = stage_layers;
  } else {
    if (m.layers < c.pp) fail("fewer layers than pipeline stages");
    l.stage_layers = plan::split_layers(m.layers, c.pp);
  }
  l.layer_begin = l.stage_layers[l.stage].first;
  l.layer_end = l.stage_layers[l.stage].second;

  if (m.heads % c.tp != 0) fail("heads (" + std::to_string(m.heads) + ") not divisible by tp");
  l.q_heads = balanced_range(m.heads, c.tp, l.tp_index);
  if (!m.mla) {
    int64_t kv = m.kv_heads > 0 ? m.kv_heads : m.heads;
    if (m.heads % kv != 0) fail("heads not a multiple of kv_heads");
    if (kv >= c.tp ? kv % c.tp != 0 : c.tp % kv != 0) fail("kv_heads and tp must divide one another");
    int64_t g = m.heads / kv;
    l.kv_heads = {l.q_heads.begin / g, (l.q_heads.end - 1) / g + 1};
  }
  l.vocab = balanced_range(m.vocab, c.tp, l.tp_index);
  l.ffn = balanced_range(m.ffn, c.tp, l.tp_index);
  if (m.is_moe()) {
    if (m.moe.num_experts % c.ep != 0) fail("experts not divisible by ep");
    int64_t per = m.moe.num_experts / c.ep;
    l.experts = {l.ep_index * per, (l.ep_index + 1) * per};
    l.expert_ffn = balanced_range(m.moe.expert_ffn, moe_tp, l.moe_tp_index);
    l.moe_all_to_all = c.ep > 1 && moe_tp == 1;
    int64_t shared = m.moe.num_shared_experts * m.moe.expert_ffn;
    l.shared_ffn = l.moe_all_to_all ? Range{0, shared} : balanced_range(shared, c.ranks_per_stage(), l.stage_rank);
  }
  return l;
}

}  // namespace parasol::exec

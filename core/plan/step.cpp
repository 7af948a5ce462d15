// Names of Step enums and op classification.
#include "core/plan/step.hpp"

#include <atomic>

#include "core/common/hash.hpp"

namespace parasol::plan {

std::string to_string(OpKind k) {
  switch (k) {
    case OpKind::kEmbedding: return "embedding";
    case OpKind::kRmsNorm: return "rmsnorm";
    case OpKind::kGemm: return "gemm";
    case OpKind::kRope: return "rope";
    case OpKind::kAttention: return "attention";
    case OpKind::kMlaAttention: return "mla_attention";
    case OpKind::kKvAppend: return "kv_append";
    case OpKind::kActivation: return "activation";
    case OpKind::kMoeGate: return "moe_gate";
    case OpKind::kMoeDispatch: return "moe_dispatch";
    case OpKind::kMoeCombine: return "moe_combine";
    case OpKind::kAllReduce: return "all_reduce";
    case OpKind::kAllGather: return "all_gather";
    case OpKind::kReduceScatter: return "reduce_scatter";
    case OpKind::kAllToAll: return "all_to_all";
    case OpKind::kSend: return "send";
    case OpKind::kRecv: return "recv";
    case OpKind::kSample: return "sample";
  }
  return "unknown";
}

std::string to_string(CollectiveAlgo a) {
  switch (a) {
    case CollectiveAlgo::kAuto: return "auto";
    case CollectiveAlgo::kRing: return "ring";
    case CollectiveAlgo::kTree: return "tree";
    case CollectiveAlgo::kNvls: return "nvls";
    case CollectiveAlgo::kHierarchical: return "hierarchical";
    case CollectiveAlgo::kDirect: return "direct";
    case CollectiveAlgo::kOneShot: return "one_shot";
    case CollectiveAlgo::kTwoShot: return "two_shot";
  }
  return "unknown";
}

uint64_t lengths_hash(const std::vector<int64_t>& q_lens, const std::vector<int64_t>& ctx_lens) {
  uint64_t h = kFnvOffset;
  for (const auto* v : {&q_lens, &ctx_lens}) {
    h = fnv1a64_word(h, v->size());
    for (int64_t x : *v) h = fnv1a64_word(h, static_cast<uint64_t>(x));
  }
  return h;
}

uint64_t new_lens_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

void step_work(const Step& step, double& flops, double& bytes) {
  flops = 0;
  bytes = 0;
  for (const auto& r : step.ranks)
    for (const auto& op : r.ops) {
      flops += op.flops;
      bytes += op.bytes;
    }
}

}  // namespace parasol::plan

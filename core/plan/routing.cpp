// Token counts per expert under a routing distribution (build_step.hpp). Expected counts, rounded by largest
// remainder so that they sum to tokens x top_k exactly, each capped at `tokens` (a token picks distinct experts).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/common/error.hpp"
#include "core/plan/build_step.hpp"

namespace parasol::plan {

void expert_token_counts(const Routing& routing, int64_t num_experts, int64_t top_k, int64_t tokens, int64_t layer,
                         std::vector<int64_t>& out) {
  const size_t e_count = static_cast<size_t>(num_experts);
  out.assign(e_count, 0);
  if (num_experts <= 0 || tokens <= 0 || top_k <= 0) return;
  const int64_t k = std::min(top_k, num_experts);
  const int64_t pairs = tokens * k;
  if (routing.kind == "uniform") {
    // Equal shares; the remainder goes to a layer-rotated run of experts so no expert is always the heavy one.
    const int64_t base = pairs / num_experts, extra = pairs % num_experts;
    for (int64_t i = 0; i < num_experts; ++i) {
      int64_t e = (i + layer) % num_experts;
      out[static_cast<size_t>(e)] = base + (i < extra ? 1 : 0);
    }
    return;
  }
  if (routing.kind != "zipf")
    throw ConfigError("", 0, 0, "routing.kind", "'uniform' or 'zipf'", "'" + routing.kind + "'");
  // Popularity p_r ~ 1 / r^s by popularity rank r; which expert holds rank r is a seeded per-layer permutation
  // (Fisher-Yates with our own index draws: libstdc++-independent).
  std::vector<int64_t> perm(e_count);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(routing.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(layer));
  for (size_t i = e_count - 1; i > 0; --i) {
    size_t j = static_cast<size_t>(rng() % (i + 1));
    std::swap(perm[i], perm[j]);
  }
  std::vector<double> want(e_count);
  // Water-filling: experts whose share exceeds `tokens` are capped and the rest renormalized.
  std::vector<bool> capped(e_count, false);
  double left = static_cast<double>(pairs);
  for (int iter = 0; iter < 64; ++iter) {
    double mass = 0;
    for (size_t r = 0; r < e_count; ++r)
      if (!capped[r]) mass += std::pow(static_cast<double>(r + 1), -routing.zipf_s);
    bool changed = false;
    for (size_t r = 0; r < e_count; ++r) {
      if (capped[r]) continue;
      want[r] = left * std::pow(static_cast<double>(r + 1), -routing.zipf_s) / mass;
      if (want[r] > static_cast<double>(tokens)) {
        capped[r] = true;
        want[r] = static_cast<double>(tokens);
        left -= static_cast<double>(tokens);
        changed = true;
      }
    }
    if (!changed) break;
  }
  std::vector<int64_t> count(e_count);
  std::vector<std::pair<double, size_t>> rem;
  rem.reserve(e_count);
  int64_t assigned = 0;
  for (size_t r = 0; r < e_count; ++r) {
    count[r] = static_cast<int64_t>(std::floor(want[r]));
    assigned += count[r];
    rem.emplace_back(want[r] - static_cast<double>(count[r]), r);
  }
  std::stable_sort(rem.begin(), rem.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < pairs && i < rem.size(); ++i) {
    size_t r = rem[i].second;
    if (count[r] < tokens) {
      ++count[r];
      ++assigned;
    }
  }
  for (size_t r = 0; assigned < pairs && r < e_count; ++r)  // rounding against caps: fill the first room left
    while (assigned < pairs && count[r] < tokens) {
      ++count[r];
      ++assigned;
    }
  for (size_t r = 0; r < e_count; ++r) out[static_cast<size_t>(perm[r])] = count[r];
}

std::vector<int64_t> expert_token_counts(const Routing& routing, int64_t num_experts, int64_t top_k, int64_t tokens,
                                         int64_t layer) {
  std::vector<int64_t> out;
  expert_token_counts(routing, num_experts, top_k, tokens, layer, out);
  return out;
}

}  // namespace parasol::plan

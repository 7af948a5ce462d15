// ParallelConfig / DisaggConfig labels and consistency checks.
#include "core/plan/parallel_config.hpp"

#include <charconv>

namespace parasol::plan {

std::string ParallelConfig::label() const {
  return "tp" + std::to_string(tp) + ".pp" + std::to_string(pp) + ".ep" + std::to_string(ep) + ".adp" +
         std::to_string(attn_dp) + ".dp" + std::to_string(dp);
}

std::optional<ParallelConfig> ParallelConfig::parse_label(std::string_view text) {
  ParallelConfig c;
  int* fields[] = {&c.tp, &c.pp, &c.ep, &c.attn_dp, &c.dp};
  const std::string_view names[] = {"tp", "pp", "ep", "adp", "dp"};
  for (int i = 0; i < 5; ++i) {
    if (i > 0) {
      if (text.empty() || text.front() != '.') return std::nullopt;
      text.remove_prefix(1);
    }
    if (text.substr(0, names[i].size()) != names[i]) return std::nullopt;
    text.remove_prefix(names[i].size());
    int v = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || ptr == text.data() || v < 1) return std::nullopt;
    text.remove_prefix(static_cast<size_t>(ptr - text.data()));
    *fields[i] = v;
  }
  if (!text.empty()) return std::nullopt;
  return c;
}

std::string ParallelConfig::invalid_reason() const {
  if (tp < 1 || pp < 1 || dp < 1 || ep < 1 || attn_dp < 1)
    return "every degree must be >= 1 (" + label() + ")";
  if (ranks_per_stage() % ep != 0)
    return "ep " + std::to_string(ep) + " must divide tp x attn_dp = " + std::to_string(ranks_per_stage());
  return {};
}

std::string DisaggConfig::label() const { return "P[" + prefill.label() + "]+D[" + decode.label() + "]"; }

}  // namespace parasol::plan

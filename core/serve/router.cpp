#include "core/serve/router.hpp"

#include "core/common/error.hpp"

namespace parasol::serve {

int RoundRobinRouter::route(const Request&, std::span<const ReplicaLoad> replicas) {
  const size_t n = replicas.size();
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (next_ + k) % n;
    if (replicas[i].alive) {
      next_ = (i + 1) % n;
      return int(i);
    }
  }
  return -1;
}

int LeastOutstandingTokensRouter::route(const Request&, std::span<const ReplicaLoad> replicas) {
  int best = -1;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (!replicas[i].alive) continue;
    if (best < 0 || replicas[i].outstanding_tokens < replicas[size_t(best)].outstanding_tokens) best = int(i);
  }
  return best;
}

std::unique_ptr<Router> make_router(const std::string& policy) {
  if (policy == "round_robin") return std::make_unique<RoundRobinRouter>();
  if (policy == "least_outstanding_tokens") return std::make_unique<LeastOutstandingTokensRouter>();
  throw ConfigError("unknown router policy '" + policy + "': expected round_robin or least_outstanding_tokens");
}

}  // namespace parasol::serve

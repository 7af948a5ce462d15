#include "core/serve/router.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "core/common/error.hpp"
#include "core/serve/block_manager.hpp"

namespace parasol::serve {
namespace {

// Indexed by RouterPolicy.
constexpr std::array<const char*, 6> kPolicyNames = {
    "round_robin",  "least_outstanding_tokens", "least_outstanding_requests", "power_of_two",
    "prefix_aware", "session_affinity"};

std::string policy_choices() {
  std::string s;
  for (size_t i = 0; i < kPolicyNames.size(); ++i) {
    s += i == 0 ? "" : i + 1 == kPolicyNames.size() ? " or " : ", ";
    s += kPolicyNames[i];
  }
  return s;
}

std::optional<RouterPolicy> find_policy(const std::string& name) {
  for (size_t i = 0; i < kPolicyNames.size(); ++i) {
    if (name == kPolicyNames[i]) return RouterPolicy(i);
  }
  return std::nullopt;
}

int least_tokens(std::span<const ReplicaLoad> replicas) {
  int best = -1;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (!replicas[i].alive) continue;
    if (best < 0 || replicas[i].outstanding_tokens < replicas[size_t(best)].outstanding_tokens) best = int(i);
  }
  return best;
}

// a is less loaded than b: fewer outstanding requests, then fewer outstanding tokens (index order breaks the rest:
// callers scan upwards and keep the first).
bool lighter(const ReplicaLoad& a, const ReplicaLoad& b) {
  if (a.outstanding_requests != b.outstanding_requests) return a.outstanding_requests < b.outstanding_requests;
  return a.outstanding_tokens < b.outstanding_tokens;
}

int least_requests(std::span<const ReplicaLoad> replicas) {
  int best = -1;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (!replicas[i].alive) continue;
    if (best < 0 || lighter(replicas[i], replicas[size_t(best)])) best = int(i);
  }
  return best;
}

// The chain keys of r's prefix blocks, as the scheduler's prefix cache keys them (block k: all hashes 0..k).
void chain_keys(const Request& r, std::vector<uint64_t>& keys) {
  keys.clear();
  uint64_t key = 0;
  for (uint64_t h : r.prefix_hashes) {
    key = BlockManager::chain(key, h);
    keys.push_back(key);
  }
}

}  // namespace

void update_load(ReplicaLoad& load, const Scheduler& s) {
  load.outstanding_tokens = s.outstanding_tokens();
  load.outstanding_requests = s.outstanding_requests();
  const SchedulerConfig& c = s.config();
  load.prefix_cache_blocks = c.prefix_caching ? s.kv_total_blocks() * c.kv_block_tokens / kPrefixHashTokens : 0;
}

const char* to_string(RouterPolicy p) {
  return kPolicyNames[size_t(p)];
}

RouterPolicy parse_router_policy(const std::string& name) {
  if (auto p = find_policy(name)) return *p;
  throw ConfigError("unknown router policy '" + name + "': expected " + policy_choices());
}

RouterConfig load_router(const yaml::Node& node, RouterConfig c) {
  auto policy = [&](const yaml::Node& n) {
    const auto p = find_policy(n.as_string());
    if (!p) n.fail("a router policy: " + policy_choices());
    return *p;
  };
  if (node.is_scalar()) {
    c.policy = policy(node);
    return c;
  }
  if (!node.is_map()) node.fail("a router policy name or a map");
  node.allow_keys(
      {"policy", "seed", "cache_threshold", "balance_abs_threshold", "balance_rel_threshold", "cache_blocks"});
  if (auto n = node.get("policy")) c.policy = policy(*n);
  if (auto n = node.get("seed")) c.seed = uint64_t(n->as_int(0));
  c.cache_threshold = node.number_or("cache_threshold", c.cache_threshold, 0.0, 1.0);
  c.balance_abs_threshold = node.integer_or("balance_abs_threshold", c.balance_abs_threshold, 0);
  // Below 1 the relative test would call a replica overloaded when it carries less than the least loaded one.
  c.balance_rel_threshold = node.number_or("balance_rel_threshold", c.balance_rel_threshold, 1.0);
  c.cache_blocks = node.integer_or("cache_blocks", c.cache_blocks, 0);
  return c;
}

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
  return least_tokens(replicas);
}

int LeastOutstandingRequestsRouter::route(const Request&, std::span<const ReplicaLoad> replicas) {
  return least_requests(replicas);
}

uint64_t PowerOfTwoRouter::draw(uint64_t n) {
  // Values below 2^64 mod n would make the low residues more likely: redraw them.
  const uint64_t reject_below = (0 - n) % n;
  while (true) {
    const uint64_t v = rng_();
    if (v >= reject_below) return v % n;
  }
}

int PowerOfTwoRouter::route(const Request&, std::span<const ReplicaLoad> replicas) {
  alive_.clear();
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (replicas[i].alive) alive_.push_back(int(i));
  }
  if (alive_.empty()) return -1;
  if (alive_.size() == 1) return alive_.front();
  // Two distinct replicas: the second is drawn among the other n - 1 (indices past the first shift by one).
  const uint64_t n = alive_.size();
  const uint64_t x = draw(n);
  uint64_t y = draw(n - 1);
  if (y >= x) ++y;
  int a = alive_[x], b = alive_[y];
  if (b < a) std::swap(a, b);  // ties go to the lower index
  return replicas[size_t(b)].outstanding_tokens < replicas[size_t(a)].outstanding_tokens ? b : a;
}

int64_t PrefixAwareRouter::matched_blocks(const Record& rec) const {
  int64_t k = 0;
  while (k < int64_t(keys_.size()) && rec.index.count(keys_[size_t(k)])) ++k;
  return k;
}

int64_t PrefixAwareRouter::capacity(const ReplicaLoad& load) const {
  if (config_.cache_blocks > 0) return config_.cache_blocks;
  return load.prefix_cache_blocks > 0 ? load.prefix_cache_blocks : kDefaultRouterCacheBlocks;
}

void PrefixAwareRouter::insert(Record& rec, int64_t cap) {
  // Deepest block first, so the prompt's first block ends most recent: eviction then trims prefixes from their
  // ends, as a radix cache evicts leaves, and a record never holds block k without block k - 1 for long.
  for (auto it = keys_.rbegin(); it != keys_.rend(); ++it) {
    if (auto f = rec.index.find(*it); f != rec.index.end()) {
      rec.lru.splice(rec.lru.begin(), rec.lru, f->second);
    } else {
      rec.lru.push_front(*it);
      rec.index.emplace(*it, rec.lru.begin());
    }
  }
  while (int64_t(rec.lru.size()) > cap) {
    rec.index.erase(rec.lru.back());
    rec.lru.pop_back();
  }
}

int PrefixAwareRouter::route(const Request& r, std::span<const ReplicaLoad> replicas) {
  if (records_.size() < replicas.size()) records_.resize(replicas.size());
  const int least = least_requests(replicas);
  if (least < 0) return -1;
  chain_keys(r, keys_);
  int chosen = least;  // a prompt without prefix hashes carries nothing to match: least load
  if (!keys_.empty()) {
    int best = -1;
    int64_t best_blocks = 0;
    int smallest = -1;  // the replica with the smallest record: the most room for a new prefix
    for (size_t i = 0; i < replicas.size(); ++i) {
      if (!replicas[i].alive) {
        // A failed replica lost its KV cache: when it comes back, it holds nothing of what was sent to it.
        records_[i] = Record();
        continue;
      }
      const int64_t m = matched_blocks(records_[i]);
      if (m > best_blocks || (m == best_blocks && m > 0 && lighter(replicas[i], replicas[size_t(best)]))) {
        best = int(i);
        best_blocks = m;
      }
      const size_t size_i = records_[i].lru.size();
      if (smallest < 0 || size_i < records_[size_t(smallest)].lru.size() ||
          (size_i == records_[size_t(smallest)].lru.size() && lighter(replicas[i], replicas[size_t(smallest)]))) {
        smallest = int(i);
      }
    }
    const int64_t hit = std::min(best_blocks * kPrefixHashTokens, r.input_tokens);
    const bool follow =
        best >= 0 && r.input_tokens > 0 && double(hit) > config_.cache_threshold * double(r.input_tokens);
    const int candidate = follow ? best : smallest;
    // The load bound: the candidate is overloaded when it carries more than balance_abs_threshold requests beyond
    // the least loaded replica and more than balance_rel_threshold times its requests.
    const auto lc = replicas[size_t(candidate)].outstanding_requests;
    const auto lm = replicas[size_t(least)].outstanding_requests;
    const bool overloaded =
        lc - lm > config_.balance_abs_threshold && double(lc) > config_.balance_rel_threshold * double(lm);
    chosen = overloaded ? least : candidate;
  }
  insert(records_[size_t(chosen)], capacity(replicas[size_t(chosen)]));
  return chosen;
}

int64_t PrefixAwareRouter::matched_tokens(const Request& r, int replica) const {
  if (replica < 0 || size_t(replica) >= records_.size()) return 0;
  const Record& rec = records_[size_t(replica)];
  uint64_t key = 0;
  int64_t k = 0;
  for (uint64_t h : r.prefix_hashes) {
    key = BlockManager::chain(key, h);
    if (!rec.index.count(key)) break;
    ++k;
  }
  return std::min(k * kPrefixHashTokens, r.input_tokens);
}

int64_t PrefixAwareRouter::record_blocks(int replica) const {
  return replica >= 0 && size_t(replica) < records_.size() ? int64_t(records_[size_t(replica)].lru.size()) : 0;
}

int SessionAffinityRouter::route(const Request& r, std::span<const ReplicaLoad> replicas) {
  if (r.session < 0) return least_tokens(replicas);
  if (auto it = sessions_.find(r.session); it != sessions_.end()) {
    const auto i = size_t(it->second);
    if (i < replicas.size() && replicas[i].alive) return it->second;
  }
  const int i = least_tokens(replicas);
  if (i >= 0) sessions_[r.session] = i;
  return i;
}

RouterConfig router_config(const spec::Scenario& scenario, uint64_t seed) {
  RouterConfig c;
  c.seed = seed;
  if (const spec::Serving serving = spec::effective_serving(scenario); serving.router)
    c = load_router(*serving.router, c);
  return c;
}

std::unique_ptr<Router> make_router(const RouterConfig& c) {
  switch (c.policy) {
    case RouterPolicy::kRoundRobin:
      return std::make_unique<RoundRobinRouter>();
    case RouterPolicy::kLeastOutstandingTokens:
      return std::make_unique<LeastOutstandingTokensRouter>();
    case RouterPolicy::kLeastOutstandingRequests:
      return std::make_unique<LeastOutstandingRequestsRouter>();
    case RouterPolicy::kPowerOfTwo:
      return std::make_unique<PowerOfTwoRouter>(c.seed);
    case RouterPolicy::kPrefixAware:
      return std::make_unique<PrefixAwareRouter>(c);
    case RouterPolicy::kSessionAffinity:
      return std::make_unique<SessionAffinityRouter>();
  }
  throw ConfigError("router: unknown policy");
}

std::unique_ptr<Router> make_router(const std::string& policy) {
  RouterConfig c;
  c.policy = parse_router_policy(policy);
  return make_router(c);
}

}  // namespace parasol::serve

// Router: picks the replica that serves an arriving request. The driver keeps one ReplicaLoad per replica up to
// date (update_load() after each add and complete) and asks the router; the router never touches schedulers, so the
// same policies serve sim and exec. Policies (docs/routing.md describes each, its keys and where the defaults come
// from):
//   round_robin                 the next alive replica in turn
//   least_outstanding_tokens    fewest prompt tokens to prefill + output tokens to generate (ties: lowest index)
//   least_outstanding_requests  fewest requests queued or running (ties: fewer tokens, then lowest index)
//   power_of_two                two distinct alive replicas drawn from a seeded RNG; the one with fewer outstanding
//                               tokens (Mitzenmacher's power of two choices)
//   prefix_aware                cache-aware with a load bound (SGLang router's cache_aware policy): the replica whose
//                               record of prefix blocks sent to it matches the longest prompt prefix, unless that
//                               replica is overloaded relative to the least loaded one
//   session_affinity            all requests of a session on one replica (the least loaded when the session starts,
//                               again when its replica dies); requests without a session: least outstanding tokens
// Every policy is deterministic: the same requests, loads and seed give the same choices.
// Thread behaviour: a router is used by one thread; route() may update the router's own state (cursor, RNG, prefix
// records, session table).
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/common/yaml_node.hpp"
#include "core/serve/request.hpp"
#include "core/serve/scheduler.hpp"

namespace parasol::serve {

struct ReplicaLoad {
  int64_t outstanding_tokens = 0;    // prompt tokens to prefill + output tokens to generate
  int64_t outstanding_requests = 0;  // queued, running or swapped out
  bool alive = true;                 // dead replicas (failures) are never picked
  // The replica's prefix-cache capacity in kPrefixHashTokens-token blocks (its KV capacity when prefix caching is
  // on; 0: unknown or no prefix cache). prefix_aware bounds its record of that replica by it unless the config says.
  int64_t prefix_cache_blocks = 0;
};

// Fills every field of `load` from the replica's scheduler except `alive` (the scheduler does not know whether its
// replica failed: the driver owns that flag).
void update_load(ReplicaLoad& load, const Scheduler& s);

enum class RouterPolicy {
  kRoundRobin,
  kLeastOutstandingTokens,
  kLeastOutstandingRequests,
  kPowerOfTwo,
  kPrefixAware,
  kSessionAffinity
};
const char* to_string(RouterPolicy p);
// One of the names above; anything else is a ConfigError listing every choice.
RouterPolicy parse_router_policy(const std::string& name);

// Used by prefix_aware when neither the config nor the ReplicaLoad gives a record capacity: 2^16 blocks of 512
// tokens (32 Mi tokens, more KV than one 8-GPU node holds for a mid-size model), so a record stays a few MiB.
inline constexpr int64_t kDefaultRouterCacheBlocks = int64_t{1} << 16;

struct RouterConfig {
  RouterPolicy policy = RouterPolicy::kLeastOutstandingTokens;
  uint64_t seed = 0;  // power_of_two's draws
  // prefix_aware. Defaults are the SGLang router's (sgl-router CacheAwareConfig::default: cache_threshold 0.5,
  // balance_abs_threshold 32, balance_rel_threshold 1.1); load is counted in outstanding requests, as there.
  double cache_threshold = 0.5;  // follow the longest match only when it covers more than this prompt fraction
  int64_t balance_abs_threshold = 32;
  double balance_rel_threshold = 1.1;
  int64_t cache_blocks = 0;  // record capacity per replica in prefix blocks; 0: ReplicaLoad's, else default
};

// The `router:` section of a scenario: either a policy name alone (`router: power_of_two`) or a map with keys
// policy, seed, cache_threshold, balance_abs_threshold, balance_rel_threshold, cache_blocks. Absent keys keep
// `defaults`; unknown keys and bad values are ConfigErrors at the key.
RouterConfig load_router(const yaml::Node& node, RouterConfig defaults);
// A scenario's router: its serving.router (spec::effective_serving) over the defaults, drawing from `seed` unless the
// section sets its own.
RouterConfig router_config(const spec::Scenario& scenario, uint64_t seed);

class Router {
 public:
  virtual ~Router() = default;
  // Index of the replica for `r`, or -1 when no replica is alive. O(replicas) at most, except prefix_aware:
  // O(replicas x prefix blocks of r).
  virtual int route(const Request& r, std::span<const ReplicaLoad> replicas) = 0;
  virtual std::string name() const = 0;
};

class RoundRobinRouter final : public Router {
 public:
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override;
  std::string name() const override { return "round_robin"; }

 private:
  size_t next_ = 0;
};

class LeastOutstandingTokensRouter final : public Router {
 public:
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override;
  std::string name() const override { return "least_outstanding_tokens"; }
};

class LeastOutstandingRequestsRouter final : public Router {
 public:
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override;
  std::string name() const override { return "least_outstanding_requests"; }
};

class PowerOfTwoRouter final : public Router {
 public:
  explicit PowerOfTwoRouter(uint64_t seed) : rng_(seed) {}
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override;
  std::string name() const override { return "power_of_two"; }

 private:
  uint64_t draw(uint64_t n);  // uniform in [0, n), by rejection (the same draws with any standard library)
  std::mt19937_64 rng_;
  std::vector<int> alive_;  // scratch
};

class PrefixAwareRouter final : public Router {
 public:
  explicit PrefixAwareRouter(const RouterConfig& config) : config_(config) {}
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override;
  std::string name() const override { return "prefix_aware"; }

  // Prompt tokens of `r` whose prefix blocks the record of `replica` holds (0 for a replica never routed to).
  int64_t matched_tokens(const Request& r, int replica) const;
  int64_t record_blocks(int replica) const;  // blocks in the record of `replica`

 private:
  // The prefix blocks sent to one replica, keyed like the scheduler's prefix cache (BlockManager::chain), with LRU
  // order: front = most recently used.
  struct Record {
    std::list<uint64_t> lru;
    std::unordered_map<uint64_t, std::list<uint64_t>::iterator> index;
  };
  int64_t matched_blocks(const Record& rec) const;  // over keys_
  void insert(Record& rec, int64_t capacity);       // keys_ into rec, then evict past capacity
  int64_t capacity(const ReplicaLoad& load) const;

  RouterConfig config_;
  std::vector<Record> records_;
  std::vector<uint64_t> keys_;  // scratch: chain keys of the request being routed
};

class SessionAffinityRouter final : public Router {
 public:
  int route(const Request& r, std::span<const ReplicaLoad> replicas) override;
  std::string name() const override { return "session_affinity"; }

 private:
  // One entry per session seen (8 + 4 bytes of payload each): a session's replica is kept for the whole run.
  std::unordered_map<int64_t, int> sessions_;
};

std::unique_ptr<Router> make_router(const RouterConfig& config);
// The policy with the default config; an unknown name is a ConfigError listing the choices.
std::unique_ptr<Router> make_router(const std::string& policy);

}  // namespace parasol::serve

// Router: picks the replica that serves an arriving request. The driver keeps one ReplicaLoad per replica up to
// date (from Scheduler::outstanding_tokens() / outstanding_requests() after each add and complete) and asks the
// router; the router never touches schedulers, so the same policies serve sim and exec. Policies now: round-robin
// and least-outstanding-tokens (ties -> lowest index); more implement Router.
// Thread behaviour: a router is used by one thread; route() may update the router's own state (round-robin cursor).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/serve/request.hpp"

namespace parasol::serve {

struct ReplicaLoad {
  int64_t outstanding_tokens = 0;    // prompt tokens to prefill + output tokens to generate
  int64_t outstanding_requests = 0;
  bool alive = true;                 // dead replicas (failures) are never picked
};

class Router {
 public:
  virtual ~Router() = default;
  // Index of the replica for `r`, or -1 when no replica is alive. O(replicas) at most.
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

// "round_robin" | "least_outstanding_tokens"; anything else is a ConfigError listing the choices.
std::unique_ptr<Router> make_router(const std::string& policy);

}  // namespace parasol::serve

// Clock: where "now" comes from. core/serve never reads time itself: every Scheduler / MetricsCollector call takes
// `now_s` from the caller, who owns a Clock — the SimGrid engine's clock in sim/, a wall clock in exec/, a manual
// clock in tests; the serving loop (serving_loop.hpp) takes its time from a LoopHost.
// Thread behaviour: ManualClock is a plain value; WallClock::now_s() is thread-safe.
#pragma once

#include <chrono>

namespace parasol::serve {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual double now_s() const = 0;
};

// Time set by the caller (discrete-event loops, tests).
class ManualClock final : public Clock {
 public:
  double now_s() const override { return now_s_; }
  void set(double t_s) { now_s_ = t_s; }
  void advance(double dt_s) { now_s_ += dt_s; }

 private:
  double now_s_ = 0;
};

// Seconds since construction on a steady clock (real serving). Never goes into deterministic outputs of sim.
class WallClock final : public Clock {
 public:
  WallClock() : start_(std::chrono::steady_clock::now()) {}
  double now_s() const override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace parasol::serve

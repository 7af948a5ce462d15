// Test helper for the serving tests: a RequestSource that yields a fixed list of requests in order.
// Header-only; not thread-safe (one simulation reads it).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/serve/workload.hpp"

namespace parasol::testing {

class ListSource final : public serve::RequestSource {
 public:
  explicit ListSource(std::vector<serve::Request> r) : r_(std::move(r)) {}
  std::optional<serve::Request> next() override {
    if (i_ >= r_.size()) return std::nullopt;
    return r_[i_++];
  }
  std::string describe() const override { return "list"; }

 private:
  std::vector<serve::Request> r_;
  size_t i_ = 0;
};

}  // namespace parasol::testing

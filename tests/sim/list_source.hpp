// Test helpers for the serving tests: a RequestSource that yields a fixed list of requests in order, and a request.
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

inline serve::Request make_request(int64_t id, double arrival_s, int64_t in, int64_t out,
                                   std::vector<uint64_t> hashes = {}, int64_t session = -1) {
  serve::Request r;
  r.id = id;
  r.arrival_s = arrival_s;
  r.input_tokens = in;
  r.output_tokens = out;
  r.prefix_hashes = std::move(hashes);
  r.session = session;
  return r;
}

}  // namespace parasol::testing

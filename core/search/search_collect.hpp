// What a search keeps of its ranked candidates when it does not keep them all (core/search/search.hpp, keep_top > 0):
// the best N under ranks_before (a bounded heap) and the Pareto frontier over (goodput tokens/s/GPU, tokens/s/user),
// both maximized, kept incrementally as candidates stream in, plus the queries the prefill/decode pair evaluation
// prunes with (could a candidate with these bounds still be kept?). FrontierRanks then gives each frontier point its
// rank in the full ranking from one more pass over (the cheap keys of) every ranked candidate.
// The frontier is the set the exhaustive sweep gives (docs/search.md): a candidate with goodput/GPU > 0 is on it iff
// no other candidate is at least as good on both figures and better on one, or equal on both and ranked before it.
// Thread behaviour: plain values, one thread each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/search/search.hpp"

namespace parasol::search {

class RankedCollector {
 public:
  explicit RankedCollector(size_t top_n);

  // Could a candidate with SLO verdict `meets` and goodput/GPU `gpg` be among the top N? (true when it ties with the
  // N-th on both: then tokens/s/user decides.)
  bool top_open(bool meets, double gpg) const;
  // Could a candidate with goodput/GPU at most `gpg_max`, whatever its verdict, be among the top N?
  bool top_open_below(double gpg_max) const;
  // Could a candidate with goodput/GPU at most `gpg_max` and tokens/s/user at most `tpu_max` be on the frontier?
  // (false when a kept point dominates every such candidate.)
  bool frontier_open(double gpg_max, double tpu_max) const;

  void offer(const Candidate& c);  // kept when among the top N so far or on the frontier so far

  std::vector<Candidate> top() const;                                // best first
  const std::vector<Candidate>& frontier() const { return front_; }  // goodput/GPU descending

 private:
  size_t n_;
  std::vector<Candidate> heap_;   // max-heap under ranks_before: front() is the worst kept
  std::vector<Candidate> front_;  // goodput/GPU strictly descending, tokens/s/user strictly ascending
};

// Ranks of the frontier points among every ranked candidate: each ranked candidate is added once, by its keys
// (add) when it ties with no frontier point on (verdict, goodput/GPU), else in full (add_full).
class FrontierRanks {
 public:
  explicit FrontierRanks(const std::vector<Candidate>& frontier);

  // Could a candidate with goodput/GPU at most `gpg_max`, whatever its verdict, rank before a frontier point?
  bool matters(double gpg_max) const;
  // Does (meets, gpg) equal a frontier point's? Then the candidate must be added in full.
  bool ties(bool meets, double gpg) const;
  void add(bool meets, double gpg);
  void add_full(const Candidate& c);
  std::vector<int64_t> ranks() const;  // 1-based, in the frontier's order

 private:
  struct Class {
    std::vector<double> gpg;    // descending
    std::vector<size_t> point;  // frontier index of each
    std::vector<int64_t> from;  // from[k]: candidates ranking before points k.. (a difference array)
  };
  const std::vector<Candidate>* frontier_;
  Class meets_, misses_;
  int64_t meeting_ = 0;         // candidates that meet the SLOs (before every point of misses_)
  std::vector<int64_t> exact_;  // from add_full, per frontier point
};

}  // namespace parasol::search

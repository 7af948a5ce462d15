// The kept part of a ranking (search_collect.hpp): bounded heap, incremental Pareto staircase, frontier ranks.
#include "core/search/search_collect.hpp"

#include <algorithm>

namespace parasol::search {

namespace {

// Points of the staircase with goodput/GPU > g (strict) or >= g: a prefix, as the staircase is sorted descending.
size_t count_above(const std::vector<Candidate>& f, double g, bool or_equal) {
  return static_cast<size_t>(std::partition_point(f.begin(), f.end(),
                                                  [&](const Candidate& x) {
                                                    return or_equal ? x.goodput_tok_s_per_gpu >= g
                                                                    : x.goodput_tok_s_per_gpu > g;
                                                  }) -
                             f.begin());
}

}  // namespace

RankedCollector::RankedCollector(size_t top_n) : n_(top_n) {}

bool RankedCollector::top_open(bool meets, double gpg) const {
  if (heap_.size() < n_) return true;
  if (n_ == 0) return false;
  const Candidate& w = heap_.front();
  if (meets != w.meets_slo) return meets;
  return gpg >= w.goodput_tok_s_per_gpu;
}

bool RankedCollector::top_open_below(double gpg_max) const {
  if (heap_.size() < n_) return true;
  if (n_ == 0) return false;
  const Candidate& w = heap_.front();
  return !w.meets_slo || gpg_max >= w.goodput_tok_s_per_gpu;
}

bool RankedCollector::frontier_open(double gpg_max, double tpu_max) const {
  if (!(gpg_max > 0)) return false;
  // The point of the largest tokens/s/user among those with goodput/GPU > (>=) gpg_max is the last of that prefix.
  const size_t above = count_above(front_, gpg_max, false);
  if (above > 0 && front_[above - 1].tok_s_per_user >= tpu_max) return false;
  const size_t at_least = count_above(front_, gpg_max, true);
  if (at_least > 0 && front_[at_least - 1].tok_s_per_user > tpu_max) return false;
  return true;
}

void RankedCollector::offer(const Candidate& c) {
  if (n_ > 0) {
    if (heap_.size() < n_) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    } else if (ranks_before(c, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
      heap_.back() = c;
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    }
  }
  const double g = c.goodput_tok_s_per_gpu, u = c.tok_s_per_user;
  if (!(g > 0)) return;
  const size_t at_least = count_above(front_, g, true);
  if (at_least > 0) {  // the best tokens/s/user among the points at least as good on goodput/GPU
    const Candidate& x = front_[at_least - 1];
    if (x.tok_s_per_user > u) return;
    if (x.tok_s_per_user == u && (x.goodput_tok_s_per_gpu > g || !ranks_before(c, x))) return;
  }
  // c stays: drop the points it dominates (or equals and ranks before): goodput/GPU <= g and tokens/s/user <= u,
  // a run starting at the first point with goodput/GPU <= g.
  const size_t first = count_above(front_, g, false);
  size_t last = first;
  while (last < front_.size() && front_[last].tok_s_per_user <= u) ++last;
  front_.erase(front_.begin() + static_cast<std::ptrdiff_t>(first), front_.begin() + static_cast<std::ptrdiff_t>(last));
  front_.insert(front_.begin() + static_cast<std::ptrdiff_t>(first), c);
}

std::vector<Candidate> RankedCollector::top() const {
  std::vector<Candidate> out = heap_;
  std::sort(out.begin(), out.end(), ranks_before);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------

FrontierRanks::FrontierRanks(const std::vector<Candidate>& frontier)
    : frontier_(&frontier), exact_(frontier.size(), 0) {
  for (size_t i = 0; i < frontier.size(); ++i) {
    Class& k = frontier[i].meets_slo ? meets_ : misses_;
    k.gpg.push_back(frontier[i].goodput_tok_s_per_gpu);  // the frontier is sorted descending already
    k.point.push_back(i);
  }
  meets_.from.assign(meets_.gpg.size() + 1, 0);
  misses_.from.assign(misses_.gpg.size() + 1, 0);
}

bool FrontierRanks::matters(double gpg_max) const {
  return !misses_.gpg.empty() || (!meets_.gpg.empty() && gpg_max >= meets_.gpg.back());
}

bool FrontierRanks::ties(bool meets, double gpg) const {
  const Class& k = meets ? meets_ : misses_;
  return std::binary_search(k.gpg.begin(), k.gpg.end(), gpg, [](double a, double b) { return a > b; });
}

void FrontierRanks::add(bool meets, double gpg) {
  Class& k = meets ? meets_ : misses_;
  if (meets) ++meeting_;
  // Before every point of its class with a lower goodput/GPU: those from the first such point on.
  const auto it = std::partition_point(k.gpg.begin(), k.gpg.end(), [&](double x) { return x >= gpg; });
  ++k.from[static_cast<size_t>(it - k.gpg.begin())];
}

void FrontierRanks::add_full(const Candidate& c) {
  for (size_t i = 0; i < frontier_->size(); ++i)
    if (ranks_before(c, (*frontier_)[i])) ++exact_[i];
}

std::vector<int64_t> FrontierRanks::ranks() const {
  std::vector<int64_t> out(exact_.size(), 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] += exact_[i];
  for (const Class* k : {&meets_, &misses_}) {
    int64_t before = k == &misses_ ? meeting_ : 0;
    for (size_t j = 0; j < k->point.size(); ++j) {
      before += k->from[j];
      out[k->point[j]] += before;
    }
  }
  return out;
}

}  // namespace parasol::search

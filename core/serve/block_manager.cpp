#include "core/serve/block_manager.hpp"

#include <cassert>
#include <string>

#include "core/common/error.hpp"
#include "core/serve/request.hpp"

namespace parasol::serve {

BlockManager::BlockManager(int64_t total_blocks, int64_t block_tokens, bool prefix_caching)
    : total_blocks_(total_blocks),
      block_tokens_(block_tokens),
      prefix_caching_(prefix_caching),
      unit_blocks_(block_tokens > 0 ? kPrefixHashTokens / block_tokens : 0),
      free_(total_blocks) {
  if (total_blocks < 0 || block_tokens <= 0) {
    throw ConfigError("KV cache: block size must be positive and the capacity non-negative (got " +
                      std::to_string(block_tokens) + " tokens per block, " + std::to_string(total_blocks) +
                      " blocks)");
  }
  if (prefix_caching && kPrefixHashTokens % block_tokens != 0) {
    throw ConfigError("KV cache: prefix caching needs a block size dividing " + std::to_string(kPrefixHashTokens) +
                      " tokens, got " + std::to_string(block_tokens));
  }
  for (int k = 0; k < 62; ++k)
    if ((int64_t{1} << k) == block_tokens) block_shift_ = k;
}

bool BlockManager::allocate(int64_t n) {
  if (n <= 0) return true;
  if (n > free_blocks()) return false;
  while (free_ < n) evict_one();
  free_ -= n;
  return true;
}

void BlockManager::release(int64_t n) {
  assert(n >= 0 && free_ + n <= total_blocks_);
  free_ += n;
}

uint64_t BlockManager::chain(uint64_t parent_key, uint64_t hash) {
  // splitmix64 over the pair: a fixed, portable mix (no std::hash).
  uint64_t x = parent_key * 0x9E3779B97F4A7C15ULL + hash + 0x632BE59BD9B4E019ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

int32_t BlockManager::acquire(uint64_t key) {
  if (!prefix_caching_) return -1;
  auto it = index_.find(key);
  if (it == index_.end()) return -1;
  const int32_t u = it->second;
  if (units_[size_t(u)].refs == 0) {
    lru_remove(u);
    evictable_blocks_ -= unit_blocks_;
  }
  ++units_[size_t(u)].refs;
  return u;
}

int32_t BlockManager::insert(uint64_t key) {
  if (!prefix_caching_) return -1;
  auto [it, fresh] = index_.try_emplace(key, 0);
  if (!fresh) return -1;
  int32_t u;
  if (!free_units_.empty()) {
    u = free_units_.back();
    free_units_.pop_back();
  } else {
    u = int32_t(units_.size());
    units_.emplace_back();
  }
  it->second = u;
  Unit& unit = units_[size_t(u)];
  unit.key = key;
  unit.refs = 1;
  unit.prev = unit.next = -1;
  cached_blocks_ += unit_blocks_;
  return u;
}

void BlockManager::unpin(int32_t handle) {
  Unit& unit = units_[size_t(handle)];
  assert(unit.refs > 0);
  if (--unit.refs == 0) {
    lru_push_back(handle);
    evictable_blocks_ += unit_blocks_;
  }
}

void BlockManager::lru_push_back(int32_t u) {
  Unit& unit = units_[size_t(u)];
  unit.prev = lru_tail_;
  unit.next = -1;
  if (lru_tail_ >= 0) units_[size_t(lru_tail_)].next = u;
  else lru_head_ = u;
  lru_tail_ = u;
}

void BlockManager::lru_remove(int32_t u) {
  Unit& unit = units_[size_t(u)];
  if (unit.prev >= 0) units_[size_t(unit.prev)].next = unit.next;
  else lru_head_ = unit.next;
  if (unit.next >= 0) units_[size_t(unit.next)].prev = unit.prev;
  else lru_tail_ = unit.prev;
  unit.prev = unit.next = -1;
}

void BlockManager::evict_one() {
  const int32_t u = lru_head_;
  assert(u >= 0);
  lru_remove(u);
  index_.erase(units_[size_t(u)].key);
  free_units_.push_back(u);
  evictable_blocks_ -= unit_blocks_;
  cached_blocks_ -= unit_blocks_;
  free_ += unit_blocks_;
}

}  // namespace parasol::serve

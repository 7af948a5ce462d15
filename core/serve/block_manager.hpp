// BlockManager: the paged KV cache of one replica (one attention-DP group), counted in blocks of `block_tokens`
// tokens, and its prefix cache. The simulator needs how many blocks are in use, not where they are, so blocks are
// counted, not addressed (exec's paged KV cache owns addresses). Allocation, release, lookup and eviction are O(1)
// (amortized), so a replica serving millions of requests pays nothing per request it does not touch.
//
// Prefix cache (vLLM's automatic prefix caching, at the granularity of kPrefixHashTokens-token "units" of
// unit_blocks() blocks each): a unit is keyed by the chain of prefix hashes up to it (key_k = mix(key_{k-1}, hash_k)),
// so equal keys mean an equal prompt prefix. A unit referenced by a running sequence is pinned; when its last
// reference goes it stays resident but evictable, in LRU order, and its blocks are reclaimed (oldest first) only when
// an allocation finds no free block. free_blocks() counts evictable blocks as free.
// Thread behaviour: owned by one Scheduler; not thread-safe.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace parasol::serve {

class BlockManager {
 public:
  BlockManager(int64_t total_blocks, int64_t block_tokens, bool prefix_caching);

  int64_t total_blocks() const { return total_blocks_; }
  int64_t block_tokens() const { return block_tokens_; }
  bool prefix_caching() const { return prefix_caching_; }
  int64_t blocks_for(int64_t tokens) const {
    // A shift for power-of-two block sizes (the usual 16): this runs for every sequence of every iteration.
    return block_shift_ >= 0 && tokens >= 0 ? (tokens + block_tokens_ - 1) >> block_shift_
                                            : (tokens + block_tokens_ - 1) / block_tokens_;
  }

  // Blocks an allocation can get now: unreferenced + evictable cached.
  int64_t free_blocks() const { return free_ + evictable_blocks_; }
  // Blocks referenced by sequences (owned, or cached units with a reference).
  int64_t used_blocks() const { return total_blocks_ - free_ - evictable_blocks_; }
  int64_t cached_blocks() const { return cached_blocks_; }        // resident prefix units, pinned or evictable
  int64_t evictable_blocks() const { return evictable_blocks_; }

  // Takes n blocks (evicting LRU units when needed). False, and nothing taken, when fewer than n are free.
  bool allocate(int64_t n);
  void release(int64_t n);

  // --- prefix cache (no-ops returning -1 / false when prefix caching is off) ---
  int64_t unit_blocks() const { return unit_blocks_; }
  static uint64_t chain(uint64_t parent_key, uint64_t hash);  // key of the next unit; the first unit's parent is 0
  // If the unit `key` is resident, pins it (one more reference) and returns its handle; else -1.
  int32_t acquire(uint64_t key);
  // Turns unit_blocks() blocks the caller already allocated into the resident unit `key`, pinned once by the caller.
  // Returns its handle, or -1 when `key` is already resident (the caller keeps its blocks as private ones).
  int32_t insert(uint64_t key);
  // Drops one reference; the unit becomes evictable (most recently used) at zero.
  void unpin(int32_t handle);

 private:
  struct Unit {
    uint64_t key = 0;
    int32_t refs = 0;
    int32_t prev = -1, next = -1;  // LRU list of evictable units (refs == 0)
  };
  void lru_push_back(int32_t u);
  void lru_remove(int32_t u);
  void evict_one();

  int64_t total_blocks_;
  int64_t block_tokens_;
  int block_shift_ = -1;  // log2(block_tokens_) when a power of two, else -1
  bool prefix_caching_;
  int64_t unit_blocks_;
  int64_t free_;
  int64_t cached_blocks_ = 0;
  int64_t evictable_blocks_ = 0;
  std::vector<Unit> units_;
  std::vector<int32_t> free_units_;
  std::unordered_map<uint64_t, int32_t> index_;  // key -> unit (lookup only; never iterated)
  int32_t lru_head_ = -1, lru_tail_ = -1;        // head = least recently used
};

}  // namespace parasol::serve

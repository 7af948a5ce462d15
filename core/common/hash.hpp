// FNV-1a, 64 bits: a fast, stable (platform-independent) hash of bytes, for identifying inputs in outputs (a
// scenario's hash in summary.json) and keying memo tables. Not cryptographic.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace parasol {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

constexpr uint64_t fnv1a64(std::string_view bytes, uint64_t h = kFnvOffset) {
  for (unsigned char c : bytes) h = (h ^ c) * kFnvPrime;
  return h;
}

// One FNV-1a step over a whole 64-bit word (hashing sequences of integers: keys, lengths).
constexpr uint64_t fnv1a64_word(uint64_t h, uint64_t word) { return (h ^ word) * kFnvPrime; }

// 16 lowercase hex digits.
std::string hex64(uint64_t v);

}  // namespace parasol

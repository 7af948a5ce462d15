#include "core/common/hash.hpp"

#include <cstdio>

namespace parasol {

std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace parasol

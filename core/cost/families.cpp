// The family registry (fit_family.hpp): every op family of the calibration, in fit order, from their owners'
// family_*.cpp.
#include "core/cost/fit_family.hpp"

namespace parasol::cost {

const std::vector<Family>& families() {
  // Built once, on first use (after static initialization, so the owners' tables are ready); read-only afterwards.
  static const std::vector<Family> all = [] {
    std::vector<Family> v;
    for (auto part : {gemm_families(), attention_families(), collective_families()})
      for (auto& f : part) v.push_back(std::move(f));
    return v;
  }();
  return all;
}

const Family* find_family(const std::string& name) {
  for (const auto& f : families())
    if (f.name == name) return &f;
  return nullptr;
}

}  // namespace parasol::cost

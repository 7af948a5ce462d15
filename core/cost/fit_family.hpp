// An op family of the calibration: which measured tables it reads, how a row becomes a Sample, how the cost model
// predicts a Sample on a GPU, and which GPU parameters a fit may move (with bounds). `parasol calibrate` fits each
// family's parameters per GPU on the training split and reports the held-out error; the accuracy test does the same
// with the shipped parameters.
// Thread behaviour: immutable registry.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/cost/measurement.hpp"
#include "core/spec/gpu.hpp"

namespace parasol::cost {

struct FitParam {
  std::string name;                         // YAML path in the GPU file: "gemm.max_efficiency", "attention.fixed"
  std::function<double&(spec::Gpu&)> field;  // the value it sets (SI units: seconds, fractions)
  double lo = 0, hi = 1;                    // bounds of the fit
  bool time = false;                        // a time: the YAML value is written with a unit ("3.1 us")
};

struct Family {
  std::string name;                 // "gemm", "context_attention", "all_reduce", ...
  std::vector<std::string> tables;  // AIConfigurator table basenames it reads ("gemm_perf.csv")
  std::vector<FitParam> params;     // empty: nothing to fit (a derived family)
  // Appends the samples of `table`'s rows measured on `gpu`. Rows the family does not model (a dtype or kernel it
  // does not cover) are skipped, not errors; malformed rows throw ConfigError (file:line).
  std::function<void(const CsvTable& table, const std::string& gpu, std::vector<Sample>& out)> read;
  // The model's time for a sample on `gpu` (seconds).
  std::function<double(const Sample& s, const spec::Gpu& gpu)> predict;
  // Structure the family's parameters were fitted with that is not itself fitted (a tile choice): the cross-GPU check
  // carries it with them. May be empty.
  std::function<void(const spec::Gpu& from, spec::Gpu& to)> copy_structure;
};

// Every family, in fit order.
const std::vector<Family>& families();
const Family* find_family(const std::string& name);

// The families, by owner (family_*.cpp).
std::vector<Family> gemm_families();        // gemm, moe
std::vector<Family> attention_families();   // context_attention, generation_attention, mla_bmm, context_mla, generation_mla
std::vector<Family> collective_families();  // all_reduce, all_gather, reduce_scatter, alltoall, custom_all_reduce

}  // namespace parasol::cost

// CalibrationTable::load (calibration.hpp): a calibration or profile CSV, or a folder of them, or AIConfigurator
// tables converted through the op families' readers (fit_family.hpp) into rows: every compute Sample of one op becomes
// the row the executor would write for it (row_for), every NCCL collective Sample a collective row. Samples of several
// ops (an MoE layer, an attention module) do not fit a per-op table and are left to the model. The engines' custom
// all-reduce is not the NCCL collective the step's all-reduce ops are costed as, so its families are skipped too.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/common/error.hpp"
#include "core/cost/calibration.hpp"
#include "core/cost/fitting.hpp"

namespace parasol::cost {
namespace {

namespace fs = std::filesystem;

// The first content line of a file starts with the calibration table's first column: a calibration/profile CSV.
bool is_calibration_csv(const fs::path& p) {
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.find_first_not_of(" \r") == std::string::npos) continue;
    return line.rfind("gpu,", 0) == 0;
  }
  return false;
}

void add_samples(CalibrationTable& t, const std::vector<Sample>& samples, const Family& family) {
  if (family.name.find("custom") != std::string::npos) return;
  for (const auto& s : samples) {
    if (s.ops.size() != 1 || !(s.time_s > 0)) continue;
    const plan::Op& op = s.ops[0];
    if (plan::is_communication(op.kind)) {
      if (op.kind == plan::OpKind::kSend || op.kind == plan::OpKind::kRecv) continue;
      CalibrationRow r;
      r.gpu = s.gpu;
      r.kind = op.kind;
      r.n = s.num_gpus;
      r.bytes = op.comm_bytes;
      r.time_s = s.time_s;
      t.add(r);
    } else {
      t.add(CalibrationTable::row_for(op, s.gpu, s.time_s));
    }
  }
}

// The AIConfigurator sources `dir` stands for: the aiconfigurator folder (every GPU), one GPU folder, or one framework
// folder of a GPU.
std::vector<AicSource> aic_sources_of(const fs::path& dir) {
  std::error_code ec;
  if (auto all = aic_sources(dir.string()); !all.empty()) return all;
  const fs::path parent = dir.parent_path();
  for (const auto& s : aic_sources(parent.string()))
    if (fs::equivalent(s.dir, dir, ec)) return {s};
  const std::string name = dir.filename().string();
  if (name.rfind("nccl-", 0) == 0) return {};
  for (auto s : aic_sources(parent.parent_path().string()))
    if (fs::equivalent(s.dir, parent, ec)) {
      s.framework = name;
      return {s};
    }
  return {};
}

}  // namespace

CalibrationTable CalibrationTable::load(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return load_csv(path);
  if (!fs::is_directory(path, ec))
    throw ConfigError(path, 0, 0, "calibration", "a calibration CSV or a folder of measured tables", "no such file");
  fs::path dir = fs::path(path).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "dir/" -> "dir"
  CalibrationTable t;
  std::vector<fs::path> csvs;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".csv" && is_calibration_csv(e.path())) csvs.push_back(e.path());
  std::sort(csvs.begin(), csvs.end());
  for (const auto& p : csvs) t.merge(load_csv(p.string()));
  for (const AicSource& src : aic_sources_of(dir))
    for (const Family& f : families()) add_samples(t, load_samples(src, f), f);
  if (t.size() == 0)
    throw ConfigError(path, 0, 0, "calibration",
                      "calibration CSVs (gpu,kind,...) or AIConfigurator tables (h100_sxm/vllm-0.24.0/...)",
                      "no measured rows in this folder");
  return t;
}

}  // namespace parasol::cost

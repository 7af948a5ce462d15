// `--calibration PATH` (plan, sim, step, netbench) and a scenario's `calibration:`: loads the measured tables
// (cost::CalibrationTable::load: a CSV, a folder of CSVs, an AIConfigurator GPU folder) and makes them this process's
// active calibration, so that every cost model the command builds uses them where they cover an op. Nothing is cached
// on disk: the tables are read on every run (`-v` prints how long that took).
// Thread behaviour: call once, before any costing.
#pragma once

#include <chrono>
#include <iostream>
#include <memory>
#include <string>

#include "core/common/units.hpp"
#include "core/cost/calibration.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {

// Loads `path` (resolved as a shipped data path) and activates it; returns the table (null when `path` is empty).
inline std::shared_ptr<const cost::CalibrationTable> activate_calibration(const std::string& path, int verbosity) {
  if (path.empty()) return nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  auto table = std::make_shared<const cost::CalibrationTable>(cost::CalibrationTable::load(resolve_data_path(path)));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (verbosity > 1)
    std::cerr << "parasol: calibration " << path << ": " << table->size() << " measured rows, loaded in "
              << format_number("%.2f", load_s) << " s\n";
  cost::set_active_calibration(table);
  return table;
}

}  // namespace parasol::tools

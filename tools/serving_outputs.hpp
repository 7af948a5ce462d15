// The metrics of a serving run and the files they go to, shared by `parasol sim` and `parasol exec` so the two write
// the same set the same way: the MetricsCollector (SLOs from the scenario), requests.csv and trace.json streamed while
// the run goes (with an --out folder), then summary.json, the command's own extra files and run.json, every file
// staged and renamed into place only when all are written (tools/cli.hpp StagedFile: an I/O error names the file and
// its errno and leaves none of them).
// Thread behaviour: one per run, on the thread that reports.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/serve/metrics.hpp"
#include "core/spec/scenario.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {

class ServingOutputs {
 public:
  // `config`: replicas, GPUs, peaks and trace options; its SLOs are set from the scenario and its streams from
  // `out_dir` ("" : no files).
  ServingOutputs(const std::string& out_dir, serve::MetricsConfig config, const spec::Scenario& scenario);
  serve::MetricsCollector& metrics() { return *metrics_; }
  // Another file of the run (links.csv, ...), committed with the others.
  std::ostream& extra(const std::string& name);
  // Writes summary.json (`summary_json`), checks and commits every file, then run.json. Nothing without a folder.
  void commit(const std::string& summary_json, const std::string& command, const std::vector<std::string>& inputs,
              uint64_t seed);

 private:
  std::string dir_;
  std::unique_ptr<StagedFile> csv_, trace_;
  std::vector<std::unique_ptr<StagedFile>> extra_;
  std::unique_ptr<serve::MetricsCollector> metrics_;
};

}  // namespace parasol::tools

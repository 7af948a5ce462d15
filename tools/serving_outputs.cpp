#include "tools/serving_outputs.hpp"

namespace parasol::tools {

ServingOutputs::ServingOutputs(const std::string& out_dir, serve::MetricsConfig config, const spec::Scenario& sc)
    : dir_(out_dir) {
  if (sc.slo.ttft_p99_s) config.slo.ttft_s = *sc.slo.ttft_p99_s;
  if (sc.slo.tpot_p99_s) config.slo.tpot_s = *sc.slo.tpot_p99_s;
  if (!dir_.empty()) {
    csv_ = std::make_unique<StagedFile>(dir_, "requests.csv");
    trace_ = std::make_unique<StagedFile>(dir_, "trace.json");
    config.requests_csv = &csv_->stream();
    config.trace_json = &trace_->stream();
  }
  metrics_ = std::make_unique<serve::MetricsCollector>(config);
}

std::ostream& ServingOutputs::extra(const std::string& name) {
  extra_.push_back(std::make_unique<StagedFile>(dir_, name));
  return extra_.back()->stream();
}

void ServingOutputs::commit(const std::string& summary_json, const std::string& command,
                            const std::vector<std::string>& inputs, uint64_t seed) {
  if (dir_.empty()) return;
  StagedFile summary(dir_, "summary.json");
  summary.stream() << summary_json;
  std::vector<StagedFile*> all{csv_.get(), trace_.get(), &summary};
  for (auto& f : extra_) all.push_back(f.get());
  for (StagedFile* f : all) f->check();
  for (StagedFile* f : all) f->commit();
  write_run_json(dir_, command, inputs, seed);
}

}  // namespace parasol::tools

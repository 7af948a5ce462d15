// `parasol calibrate`: fits the cost model's per-family GPU parameters to measured tables (the AIConfigurator kernel
// database, an executor profile, nccl-tests output), reports the held-out error, and with --write stores the fitted
// values in the GPU YAMLs (each with a provenance comment naming this command). --report evaluates the shipped YAMLs
// instead (docs/accuracy.md is its --markdown output). Algorithms: core/cost/fitting.hpp; docs/calibration.md.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/cost/fitting.hpp"
#include "core/cost/nccl_tests.hpp"
#include "core/cost/profile_samples.hpp"
#include "core/spec/gpu.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultAic = "../shared/calibration/aiconfigurator";

struct CalibrateArgs {
  std::string aic;
  std::vector<std::string> gpus, families;
  std::string profile, nccl_tests, device, samples;
  bool write = false, report = false, markdown = false;
};

std::string today_utc() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// The command line that reproduces this fit, for the provenance comments (options in a fixed order).
std::string command_line(const CalibrateArgs& a) {
  std::string s = "parasol calibrate";
  if (!a.aic.empty()) s += " --aic " + a.aic;
  for (const auto& g : a.gpus) s += " --gpu " + g;
  for (const auto& f : a.families) s += " --family " + f;
  if (!a.profile.empty()) s += " --profile " + a.profile;
  if (!a.nccl_tests.empty()) s += " --nccl-tests " + a.nccl_tests;
  if (!a.device.empty()) s += " --device " + a.device;
  return s + " --write";
}

// AIConfigurator folder names are accepted for GPUs too ("h100_sxm").
std::string canonical_gpu(const std::string& name, const std::vector<cost::AicSource>& sources) {
  for (const auto& s : sources)
    if (fs::path(s.dir).filename() == name) return s.gpu;
  return name;
}

bool selected(const std::vector<std::string>& list, const std::string& x) {
  if (list.empty()) return true;
  for (const auto& l : list)
    if (l == x || l == "all") return true;
  return false;
}

std::string gpu_file(const std::string& gpu) { return resolve_data_path("topologies/gpus/" + gpu + ".yaml"); }

struct GpuSet {
  std::string device_path;  // --device
  std::optional<spec::Gpu> device;
  std::map<std::string, spec::Gpu> cache;
  const spec::Gpu& get(const std::string& name) {
    if (device && device->name == name) return *device;
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    const std::string path = gpu_file(name);
    if (!fs::exists(path))
      throw ConfigError("", 0, 0, "--gpu", "a GPU in topologies/gpus or a --device FILE named '" + name + "'",
                        "no file " + path);
    return cache.emplace(name, spec::load_gpu_file(path)).first->second;
  }
  std::string path_of(const std::string& name) const {
    return device && device->name == name ? device_path : gpu_file(name);
  }
};

void check_families(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (n == "all" || cost::find_family(n)) continue;
    std::string known;
    for (const auto& f : cost::families()) known += (known.empty() ? "" : ", ") + f.name;
    throw ConfigError("", 0, 0, "--family", "one of: " + (known.empty() ? std::string("(no family built)") : known),
                      "'" + n + "'");
  }
}

std::string pct(double f) { return format_number("%.1f%%", 100 * f); }

// A CSV field: as is, or quoted (RFC 4180) when it holds a comma, a quote or a line break (sample keys do).
std::string csv_field(const std::string& v) {
  if (v.find_first_of(",\"\n\r") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Every held-out sample of the report's GPUs and families with its own GPU's prediction, as CSV (one line per
// sample: where the model disagrees with which measurement).
void write_samples(const std::string& path, const std::vector<cost::AicSource>& sources, const cost::ReportOptions& opts,
                   GpuSet& gpus) {
  const fs::path p(path);
  StagedFile out(p.parent_path().empty() ? "." : p.parent_path().string(), p.filename().string());
  auto& o = out.stream();
  o << "gpu,family,key,where,measured_s,predicted_s,error\n";
  for (const auto& src : sources) {
    if (!selected(opts.gpus, src.gpu)) continue;
    const spec::Gpu gpu = gpus.get(src.gpu);
    for (const auto& f : cost::families()) {
      if (!selected(opts.families, f.name)) continue;
      const auto held = cost::split(cost::load_samples(src, f)).second;
      for (const auto& s : held) {
        const double pred = f.predict(s, gpu);
        o << src.gpu << "," << f.name << "," << csv_field(s.key) << "," << csv_field(s.where) << ","
          << format_number("%.6g", s.time_s) << "," << format_number("%.6g", pred) << ","
          << format_number("%+.4f", (pred - s.time_s) / s.time_s) << "\n";
      }
    }
  }
  out.commit();
}

int run_report(const CalibrateArgs& a, const CommonOptions& common, GpuSet& gpus, const std::string& aic_root) {
  const auto sources = cost::aic_sources(aic_root);
  if (sources.empty()) throw ConfigError(aic_root, 0, 0, "--aic", "an AIConfigurator folder (h100_sxm/, ...)", "none there");
  cost::ReportOptions opts;
  for (const auto& g : a.gpus)
    if (g != "all") opts.gpus.push_back(canonical_gpu(g, sources));
  for (const auto& f : a.families)
    if (f != "all") opts.families.push_back(f);
  const auto t0 = std::chrono::steady_clock::now();
  const auto rows = cost::accuracy_report(aic_root, [&](const std::string& g) { return gpus.get(g); }, opts);
  const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.samples.empty()) write_samples(a.samples, sources, opts, gpus);
  bool all_pass = true;
  for (const auto& r : rows) all_pass = all_pass && r.pass();
  if (common.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows)
      j.push_back({{"gpu", r.gpu}, {"family", r.family}, {"params_from", r.params_from}, {"n", r.stats.n},
                   {"median", r.stats.median}, {"p90", r.stats.p90}, {"bias", r.stats.bias}, {"pass", r.pass()}});
    std::cout << nlohmann::json{{"rows", j}, {"pass", all_pass}}.dump(2) << "\n";
    return 0;
  }
  std::cout << cost::format_report(rows, a.markdown);
  if (common.verbosity > 1) std::cerr << "parasol: report took " << format_number("%.2f", elapsed_s) << " s\n";
  return 0;
}

// Sample sets of one GPU, by family.
using SampleSets = std::map<std::string, std::map<std::string, std::vector<cost::Sample>>>;  // gpu -> family -> samples

int run_fit(const CalibrateArgs& a, const CommonOptions& common, GpuSet& gpus, const std::string& aic_root,
            bool use_aic) {
  SampleSets sets;
  std::vector<std::string> gpu_order;
  auto note_gpu = [&](const std::string& g) {
    if (std::find(gpu_order.begin(), gpu_order.end(), g) == gpu_order.end()) gpu_order.push_back(g);
  };
  std::vector<cost::AicSource> sources;
  if (use_aic) sources = cost::aic_sources(aic_root);
  std::vector<std::string> want_gpus;
  for (const auto& g : a.gpus) want_gpus.push_back(canonical_gpu(g, sources));
  if (want_gpus.empty() && gpus.device) want_gpus.push_back(gpus.device->name);

  const auto t0 = std::chrono::steady_clock::now();
  if (use_aic) {
    if (sources.empty()) throw ConfigError(aic_root, 0, 0, "--aic", "an AIConfigurator folder (h100_sxm/, ...)", "none there");
    for (const auto& src : sources) {
      if (!selected(want_gpus, src.gpu)) continue;
      note_gpu(src.gpu);
      for (const auto& f : cost::families())
        if (selected(a.families, f.name)) {
          auto s = cost::load_samples(src, f);
          auto& dst = sets[src.gpu][f.name];
          dst.insert(dst.end(), s.begin(), s.end());
        }
    }
  }
  auto add_samples = [&](std::vector<cost::Sample> samples) {
    for (auto& s : samples) {
      if (!selected(want_gpus, s.gpu) || !selected(a.families, s.family)) continue;
      note_gpu(s.gpu);
      sets[s.gpu][s.family].push_back(std::move(s));
    }
  };
  if (!a.profile.empty()) add_samples(cost::profile_samples(cost::CsvTable::load(a.profile)));
  if (!a.nccl_tests.empty()) {
    if (want_gpus.size() != 1 || want_gpus[0] == "all")
      throw ConfigError("", 0, 0, "--gpu", "exactly one GPU (or a --device) for --nccl-tests",
                        std::to_string(want_gpus.size()) + " GPUs");
    add_samples(cost::load_nccl_tests(a.nccl_tests, want_gpus[0]));
  }
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (common.verbosity > 1) std::cerr << "parasol: loaded the samples in " << format_number("%.2f", load_s) << " s\n";

  nlohmann::json jout = nlohmann::json::array();
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> to_write;  // gpu -> (path, value)
  bool any = false;
  for (const auto& g : gpu_order) {
    spec::Gpu gpu = gpus.get(g);
    for (const auto& f : cost::families()) {
      auto it = sets[g].find(f.name);
      if (it == sets[g].end() || it->second.empty()) continue;
      any = true;
      const cost::FitResult r = cost::fit_family(f, it->second, gpu);  // the fixed split: the report holds out the same shapes
      gpu = r.gpu;  // later families start from (and may share) the parameters fitted so far
      if (common.json) {
        nlohmann::json jv = nlohmann::json::object();
        nlohmann::json unfit = nlohmann::json::array();
        for (size_t i = 0; i < r.values.size(); ++i)
          if (r.fitted[i])
            jv[r.values[i].first] = r.values[i].second;
          else
            unfit.push_back(r.values[i].first);
        auto js = [](const cost::ErrorStats& s) {
          return nlohmann::json{{"n", s.n}, {"median", s.median}, {"p90", s.p90}, {"bias", s.bias}};
        };
        jout.push_back({{"gpu", g}, {"family", f.name}, {"values", jv}, {"not_fitted", unfit}, {"train", js(r.train)},
                        {"held_out", js(r.held_out)}, {"evaluations", r.evaluations}});
      } else {
        std::cout << g << "  " << f.name << ": train n " << r.train.n << " median " << pct(r.train.median) << " p90 "
                  << pct(r.train.p90) << " bias " << format_number("%+.1f%%", 100 * r.train.bias) << "; held-out n "
                  << r.held_out.n << " median " << pct(r.held_out.median) << " p90 " << pct(r.held_out.p90) << " bias "
                  << format_number("%+.1f%%", 100 * r.held_out.bias) << " (" << r.evaluations << " evaluations)\n";
        for (size_t i = 0; i < r.values.size(); ++i)
          std::cout << "    " << r.values[i].first << ": " << cost::yaml_value(f.params[i], r.values[i].second)
                    << (r.fitted[i] ? "" : "  (no sample depends on it: not fitted, not written)") << "\n";
      }
      for (size_t i = 0; i < r.values.size(); ++i) {
        if (!r.fitted[i]) continue;
        auto& w = to_write[g];
        const std::string v = cost::yaml_value(f.params[i], r.values[i].second);
        bool replaced = false;
        for (auto& [p, old] : w)
          if (p == r.values[i].first) old = v, replaced = true;
        if (!replaced) w.emplace_back(r.values[i].first, v);
      }
    }
  }
  if (common.json) std::cout << jout.dump(2) << "\n";
  if (!any) {
    std::cerr << "parasol: calibrate: no samples for the selected GPUs and families\n";
    return 2;
  }
  if (a.write) {
    const std::string comment = "fitted: " + command_line(a) + " (" + today_utc() + ")";
    for (const auto& [g, values] : to_write) {
      if (values.empty()) continue;
      const std::string path = gpus.path_of(g);
      std::ifstream in(path, std::ios::binary);
      if (!in) throw ConfigError(path, 0, 0, "--write", "a readable GPU YAML", "cannot open it");
      std::ostringstream ss;
      ss << in.rdbuf();
      const std::string text = cost::update_yaml(ss.str(), values, comment, path);
      const fs::path p(path);
      StagedFile out(p.parent_path().empty() ? "." : p.parent_path().string(), p.filename().string());
      out.stream() << text;
      out.commit();
      if (common.verbosity > 0 && !common.json) std::cerr << "parasol: wrote " << values.size() << " values to " << path << "\n";
    }
  }
  return 0;
}

int run_calibrate(const CalibrateArgs& a, const CommonOptions& common) {
  check_families(a.families);
  GpuSet gpus;
  if (!a.device.empty()) {
    gpus.device_path = a.device;
    gpus.device = spec::load_gpu_file(a.device);
  }
  const bool explicit_aic = !a.aic.empty();
  const std::string aic_root = resolve_data_path(explicit_aic ? a.aic : kDefaultAic);
  if (!a.report && !a.samples.empty())
    throw ConfigError("", 0, 0, "--samples", "--report with it (the held-out samples of the report)", "no --report");
  if (a.report) {
    if (a.write) throw ConfigError("", 0, 0, "--write", "no --write with --report (the report fits nothing)", "both");
    return run_report(a, common, gpus, aic_root);
  }
  const bool use_aic = explicit_aic || (a.profile.empty() && a.nccl_tests.empty());
  if (use_aic && !fs::is_directory(aic_root))
    throw ConfigError(aic_root, 0, 0, "--aic", "the AIConfigurator folder (../shared/calibration/aiconfigurator)",
                      "no such directory");
  return run_fit(a, common, gpus, aic_root, use_aic);
}

PARASOL_COMMAND("calibrate", 60, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* sub = app.add_subcommand("calibrate", "Fit the cost model to measured tables; report its held-out error");
  add_common_options(sub, common);
  sub->add_option("--aic", args->aic, std::string("AIConfigurator kernel database folder (default ") + kDefaultAic +
                                          ", relative to the data directory)");
  sub->add_option("--gpu", args->gpus, "GPU to fit or report (parasol or AIConfigurator name; repeatable; 'all')");
  sub->add_option("--family", args->families, "Op family (gemm, context_attention, all_reduce, ...; repeatable; 'all')");
  sub->add_option("--profile", args->profile, "Executor profile CSV (parasol exec --profile) to fit");
  sub->add_option("--nccl-tests", args->nccl_tests, "nccl-tests text output to fit the collectives of one --gpu");
  sub->add_option("--device", args->device, "GPU YAML not in topologies/gpus (e.g. the CPU device file): fit and write it");
  sub->add_flag("--write", args->write, "Write the fitted values into the GPU YAMLs, with a provenance comment");
  sub->add_flag("--report", args->report, "Fit nothing: the held-out error of the GPU YAMLs as shipped, and cross-GPU");
  sub->add_flag("--markdown", args->markdown, "With --report: a Markdown table (docs/accuracy.md)");
  sub->add_option("--samples", args->samples,
                  "With --report: write every held-out sample's measured and predicted time to this CSV");
  set_examples(sub, {"parasol calibrate --gpu h100-sxm --family gemm  # fit GEMM on H100, print the held-out error",
                     "parasol calibrate --gpu all --write  # fit every family on every GPU and store the values",
                     "parasol calibrate --report --markdown  # the accuracy table of docs/accuracy.md",
                     "parasol calibrate --profile prof.csv --device cpu.yaml --write  # fit this CPU from a profile"});
  return [args, &common] { return run_calibrate(*args, common); };
});

}  // namespace
}  // namespace parasol::tools

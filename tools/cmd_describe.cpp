// `parasol describe FILE...`: a readable summary of model, GPU, cluster, scenario, plan and trace files. Every file is
// described (a bad one does not stop the others); its outcome is one line on stderr. With --json, stdout is an array
// with one object per file, in argument order: {"file", "kind", "name", "summary", "ok": true, "exit_code": 0} or
// {"file", "ok": false, "exit_code": 2 (bad input) | 1 (internal), "error"}. --out DIR writes describe.json and
// describe.txt. The exit code is the worst of the files' (1 beats 2 beats 0). Request traces (.csv, .jsonl, or any
// file under --trace-format) are read through with the simulator's readers, so a bad row is the same located error.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/serve/workload.hpp"
#include "tools/cli.hpp"
#include "tools/describe.hpp"

namespace parasol::tools {
namespace {

struct DescribeArgs {
  std::vector<std::string> files;
  std::string trace_format;  // empty: traces by extension, format from the header
};

bool is_trace_path(const std::string& path) {
  const std::string ext = std::filesystem::path(path).extension().string();
  return ext == ".csv" || ext == ".jsonl";
}

// The format of a trace file from its first line: the JSON Lines of Mooncake, or a CSV header.
serve::TraceFormat detect_trace_format(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, 0, "", "a readable trace file", "no such file or not readable");
  std::string first;
  std::getline(in, first);
  if (!first.empty() && first.back() == '\r') first.pop_back();
  if (!first.empty() && (first.front() == '{' || first.front() == '[')) return serve::TraceFormat::kMooncake;
  if (first.find("arrival_s") != std::string::npos) return serve::TraceFormat::kParasol;
  if (first.find("ContextTokens") != std::string::npos) return serve::TraceFormat::kAzure;
  if (first.find("Request tokens") != std::string::npos) return serve::TraceFormat::kBurstGpt;
  throw ConfigError(path, 1, 1, "",
                    "a trace header (azure: TIMESTAMP,ContextTokens,GeneratedTokens; burstgpt: Timestamp,Model,Request "
                    "tokens,Response tokens,...; parasol: arrival_s,input_tokens,output_tokens), JSON Lines "
                    "(mooncake), or --trace-format",
                    "'" + first.substr(0, 80) + "'");
}

// Reads the whole trace (O(1) memory) and summarizes it as the simulator will replay it.
Description describe_trace(const std::string& path, const std::string& format_name) {
  const serve::TraceFormat format =
      format_name.empty() ? detect_trace_format(path) : serve::parse_trace_format(format_name);
  auto src = serve::open_trace(serve::trace_spec(path, format));
  int64_t n = 0, in_max = 0, out_max = 0, no_output = 0, hashed = 0;
  double first = 0, last = 0, in_sum = 0, out_sum = 0;
  while (auto r = src->next()) {
    if (n == 0) first = r->arrival_s;
    last = r->arrival_s;
    ++n;
    in_sum += static_cast<double>(r->input_tokens);
    out_sum += static_cast<double>(r->output_tokens);
    in_max = std::max(in_max, r->input_tokens);
    out_max = std::max(out_max, r->output_tokens);
    no_output += r->output_tokens == 0 ? 1 : 0;
    hashed += r->prefix_hashes.empty() ? 0 : 1;
  }
  const double span = last - first;
  const double mean_in = n ? in_sum / static_cast<double>(n) : 0, mean_out = n ? out_sum / static_cast<double>(n) : 0;
  Description d;
  d.file = path;
  const std::string name = std::filesystem::path(path).filename().string();
  d.text = "trace " + name + " (" + serve::to_string(format) + "): " + std::to_string(n) + " requests over " +
           format_time(span) + (span > 0 ? ", " + format_number("%.4g", static_cast<double>(n) / span) + " req/s" : "") +
           "\n  prompt tokens mean " + format_number("%.1f", mean_in) + ", max " + std::to_string(in_max) +
           "; answer tokens mean " + format_number("%.1f", mean_out) + ", max " + std::to_string(out_max) +
           (no_output ? ", " + std::to_string(no_output) + " without an answer" : "") +
           (hashed ? "; " + std::to_string(hashed) + " with prefix hashes" : "") + "\n";
  d.json = {{"file", path},       {"kind", "trace"},        {"name", name},           {"format", serve::to_string(format)},
            {"requests", n},      {"span_s", span},         {"input_mean", mean_in},  {"input_max", in_max},
            {"output_mean", mean_out}, {"output_max", out_max}, {"without_output", no_output},
            {"with_prefix_hashes", hashed}, {"summary", d.text}};
  return d;
}

int run_describe(const DescribeArgs& args, const CommonOptions& common) {
  nlohmann::json all = nlohmann::json::array();
  std::string text;
  int rc = 0;
  for (const auto& given : args.files) {
    const std::string path = resolve_data_path(given);
    nlohmann::json entry;
    int file_rc = 0;
    try {
      Description d = !args.trace_format.empty() || is_trace_path(path) ? describe_trace(path, args.trace_format)
                                                                        : describe_file(path, common.verbosity);
      entry = d.json;
      entry["ok"] = true;
      entry["exit_code"] = 0;
      if (!text.empty()) text += "\n";
      text += d.text;
    } catch (const ConfigError& e) {
      file_rc = 2;
      std::cerr << "parasol: error: " << e.what() << "\n";
      entry = {{"file", path}, {"ok", false}, {"exit_code", 2}, {"error", e.what()}};
    } catch (const std::exception& e) {
      file_rc = 1;
      std::cerr << "parasol: internal error describing " << path << ": " << e.what() << "\n";
      entry = {{"file", path}, {"ok", false}, {"exit_code", 1}, {"error", e.what()}};
    }
    rc = worse_exit_code(rc, file_rc);
    all.push_back(std::move(entry));
  }
  // Mutated or foreign files may hold invalid UTF-8: replace it rather than fail.
  const std::string json_text = all.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (common.json)
    std::cout << json_text;
  else if (common.verbosity > 0)
    std::cout << text;
  if (!common.out_dir.empty()) {
    write_file_atomic(common.out_dir, "describe.json", json_text);
    write_file_atomic(common.out_dir, "describe.txt", text);
    std::vector<std::string> inputs;
    for (const auto& f : args.files) inputs.push_back(resolve_data_path(f));
    write_run_json(common.out_dir, "describe", inputs, common.seed);
  }
  return rc;
}

}  // namespace

PARASOL_COMMAND("describe", 10, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<DescribeArgs>();
  CLI::App* sub = app.add_subcommand(
      "describe",
      "Summarize model, GPU, cluster, scenario, plan or trace files (kind from the 'schema:' line; traces: .csv, .jsonl)");
  sub->add_option("FILE", args->files,
                  "Files to describe (YAML, HF config.json, request traces); relative paths also resolve against the "
                  "source tree")
      ->required();
  sub->add_option("--trace-format", args->trace_format,
                  "Read every FILE as a request trace of this format (default: .csv/.jsonl files are traces, format "
                  "from the header)")
      ->check(CLI::IsMember({"azure", "mooncake", "burstgpt", "parasol"}));
  add_common_options(sub, common);
  set_examples(sub, {"parasol describe scenarios/default.yaml            # the default scenario",
                     "parasol describe topologies/clusters/*.yaml        # several files at once",
                     "parasol describe --json scenarios/models/*.yaml    # one JSON array, one object per file",
                     "parasol describe ../shared/traces/mooncake/*.jsonl  # request count, span, rate and lengths",
                     "parasol describe -v --out /tmp/d topologies/gpus/h100-sxm.yaml  # more detail; also to files"});
  return [args, &common] { return run_describe(*args, common); };
});

}  // namespace parasol::tools

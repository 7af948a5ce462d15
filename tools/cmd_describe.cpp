// `parasol describe FILE...`: a readable summary of model, GPU, cluster, scenario and plan files. Every file is
// described (a bad one does not stop the others); its outcome is one line on stderr. With --json, stdout is an array
// with one object per file, in argument order: {"file", "kind", "name", "summary", "ok": true, "exit_code": 0} or
// {"file", "ok": false, "exit_code": 2 (bad input) | 1 (internal), "error"}. --out DIR writes describe.json and
// describe.txt. The exit code is the worst of the files' (1 beats 2 beats 0).
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/common/error.hpp"
#include "core/spec/describe.hpp"
#include "tools/cli.hpp"

namespace parasol::tools {
namespace {

struct DescribeArgs {
  std::vector<std::string> files;
};

int run_describe(const DescribeArgs& args, const CommonOptions& common) {
  nlohmann::json all = nlohmann::json::array();
  std::string text;
  int rc = 0;
  for (const auto& given : args.files) {
    const std::string path = resolve_data_path(given);
    nlohmann::json entry;
    int file_rc = 0;
    try {
      spec::Description d = spec::describe_file(path, common.verbosity);
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
  }
  return rc;
}

}  // namespace

PARASOL_COMMAND("describe", 10, [](CLI::App& app, CommonOptions& common) -> std::function<int()> {
  auto args = std::make_shared<DescribeArgs>();
  CLI::App* sub = app.add_subcommand(
      "describe", "Summarize model, GPU, cluster, scenario or plan files (kind detected from their 'schema:' line)");
  sub->add_option("FILE", args->files,
                  "Files to describe (YAML or HF config.json); relative paths also resolve against the source tree")
      ->required();
  add_common_options(sub, common);
  set_examples(sub, {"parasol describe scenarios/default.yaml            # the default scenario",
                     "parasol describe topologies/clusters/*.yaml        # several files at once",
                     "parasol describe --json scenarios/models/*.yaml    # one JSON array, one object per file",
                     "parasol describe -v --out /tmp/d topologies/gpus/h100-sxm.yaml  # more detail; also to files"});
  return [args, &common] { return run_describe(*args, common); };
});

}  // namespace parasol::tools

// Checks on what `parasol exec --plan PLAN --workload SCENARIO --out DIR --profile DIR/profile.csv` wrote, shared by
// the local (tests/exec) and MPI (tests/mpi) end-to-end tests: every request of the workload completed with exactly
// the tokens it asked for (drawn here independently from the scenario and the seed), summary.json / requests.csv /
// trace.json parse and agree, and the profile loads as a calibration table that covers the ops it measured.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/common/dtype.hpp"
#include "core/cost/calibration.hpp"
#include "core/serve/workload.hpp"
#include "core/spec/scenario.hpp"

namespace parasol::exec::testing {

inline std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream is(line);
  while (std::getline(is, cell, ',')) out.push_back(cell);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

// `instances`: the replicas the requests must have been spread over (each serves some; 0: not checked); `profile`:
// whether a profile was written to DIR/profile.csv.
inline void check_served(const std::string& dir, const std::string& scenario, uint64_t seed, int instances = 1,
                         bool profile = true) {
  // What the workload asks for.
  const spec::Scenario sc = spec::load_scenario_file(scenario);
  ASSERT_TRUE(sc.workload.has_value());
  auto source = serve::make_source(serve::load_workload(*sc.workload), seed);
  std::map<int64_t, serve::Request> want;
  int64_t input = 0, output = 0;
  while (auto r = source->next()) {
    input += r->input_tokens;
    output += r->output_tokens;
    want[r->id] = *r;
  }
  ASSERT_FALSE(want.empty());

  std::ifstream sj(dir + "/summary.json");
  ASSERT_TRUE(sj) << dir;
  const nlohmann::json s = nlohmann::json::parse(sj);
  EXPECT_EQ(s["requests"]["arrived"].get<int64_t>(), static_cast<int64_t>(want.size()));
  EXPECT_EQ(s["requests"]["completed"].get<int64_t>(), static_cast<int64_t>(want.size()));
  EXPECT_EQ(s["tokens"]["input"].get<int64_t>(), input);
  EXPECT_EQ(s["tokens"]["output"].get<int64_t>(), output);
  EXPECT_GT(s["duration_s"].get<double>(), 0.0);

  std::ifstream rc(dir + "/requests.csv");
  std::string line;
  ASSERT_TRUE(std::getline(rc, line));
  const std::vector<std::string> header = split(line);
  auto col = [&](const std::string& name) {
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return i;
    ADD_FAILURE() << "requests.csv has no column " << name;
    return size_t{0};
  };
  const size_t c_id = col("id"), c_out = col("outcome"), c_in = col("input_tokens"), c_ask = col("output_tokens"),
               c_gen = col("generated_tokens"), c_ttft = col("ttft_s"), c_replica = col("replica");
  std::map<int64_t, int> seen;
  std::map<int, int> per_replica;
  while (std::getline(rc, line)) {
    const std::vector<std::string> f = split(line);
    ASSERT_EQ(f.size(), header.size()) << line;
    const int64_t id = std::stoll(f[c_id]);
    ++seen[id];
    ASSERT_TRUE(want.count(id)) << "unknown request " << id;
    EXPECT_EQ(f[c_out], "completed") << line;
    EXPECT_EQ(std::stoll(f[c_in]), want[id].input_tokens) << line;
    EXPECT_EQ(std::stoll(f[c_ask]), want[id].output_tokens) << line;
    EXPECT_EQ(std::stoll(f[c_gen]), want[id].output_tokens) << line;
    EXPECT_GT(std::stod(f[c_ttft]), 0.0) << line;
    ++per_replica[std::stoi(f[c_replica])];
  }
  if (instances > 0) {
    EXPECT_EQ(static_cast<int>(per_replica.size()), instances) << "requests per replica";
    for (const auto& [r, n] : per_replica) EXPECT_TRUE(r >= 0 && r < instances) << "replica " << r;
  }
  EXPECT_EQ(seen.size(), want.size());
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << "request " << id << " reported " << n << " times";

  std::ifstream tj(dir + "/trace.json");
  const nlohmann::json trace = nlohmann::json::parse(tj);
  EXPECT_FALSE(trace["traceEvents"].empty());

  if (!profile) return;
  // The profile: a calibration table with the Step's compute ops, covering the shapes it measured.
  const std::string profile = dir + "/profile.csv";
  const cost::CalibrationTable table = cost::CalibrationTable::load_csv(profile);
  EXPECT_GT(table.size(), 0u);
  std::ifstream pf(profile);
  ASSERT_TRUE(std::getline(pf, line));
  // The calibration columns first, then the executor profile's own (core/cost/profile_samples.hpp).
  EXPECT_EQ(line.rfind(cost::CalibrationTable::csv_header() + ",", 0), 0u) << line;
  std::map<std::string, int> kinds;
  int64_t covered = 0;
  while (std::getline(pf, line)) {
    const std::vector<std::string> f = split(line);
    ASSERT_GE(f.size(), 15u) << line;
    ++kinds[f[1]];
    EXPECT_GT(std::stod(f[14]), 0.0) << line;
    if (f[1] == "gemm" && std::stoll(f[4]) > 0) {
      plan::Op op;
      op.kind = plan::OpKind::kGemm;
      op.dtype = *parse_dtype(f[2]);
      op.m = std::stoll(f[4]), op.n = std::stoll(f[5]), op.k = std::stoll(f[6]), op.batch = std::stoll(f[7]);
      auto t = table.lookup(op, f[0]);
      ASSERT_TRUE(t.has_value()) << line;
      EXPECT_GT(*t, 0.0);
      ++covered;
    }
  }
  EXPECT_GT(covered, 0);
  for (const char* k : {"embedding", "rmsnorm", "gemm", "rope", "kv_append", "activation", "sample"})
    EXPECT_GT(kinds[k], 0) << "no " << k << " rows in the profile";
  EXPECT_GT(kinds["attention"] + kinds["mla_attention"], 0);
}

}  // namespace parasol::exec::testing

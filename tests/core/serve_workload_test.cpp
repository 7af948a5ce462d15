// Workload sources: trace readers (Azure timestamps, BurstGPT and parasol CSV written here, Mooncake hashes),
// shaping (window, rate scaling, cap), synthetic arrival and length statistics, and the `workload:` YAML section.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/common/error.hpp"
#include "core/serve/workload.hpp"

namespace parasol::serve {
namespace {

namespace fs = std::filesystem;

std::string write_temp(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / ("parasol_serve_test_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << text;
  return p.string();
}

std::vector<Request> drain(RequestSource& s) {
  std::vector<Request> out;
  while (auto r = s.next()) out.push_back(*r);
  return out;
}

TEST(ServeWorkload, AzureTimestampIsSecondsSinceEpoch) {
  EXPECT_DOUBLE_EQ(*parse_azure_timestamp("1970-01-02 00:00:01.5"), 86401.5);
  // 2023-11-16 18:17:03 UTC = 1700158623 (date -u -d '2023-11-16 18:17:03' +%s)
  EXPECT_NEAR(*parse_azure_timestamp("2023-11-16 18:17:03.9799600"), 1700158623.97996, 1e-6);
  EXPECT_NEAR(*parse_azure_timestamp("2000-03-01 00:00:00") - *parse_azure_timestamp("2000-02-28 00:00:00"),
              2 * 86400.0, 0);  // 2000 is a leap year
  EXPECT_FALSE(parse_azure_timestamp("2023/11/16 18:17:03"));
  EXPECT_FALSE(parse_azure_timestamp("2023-13-16 18:17:03"));
}

TEST(ServeWorkload, AzureReaderGivesSecondsSinceFirstRequest) {
  const std::string p = write_temp("azure.csv",
                                   "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                   "2023-11-16 23:59:59.5000000,100,10\n"
                                   "2023-11-17 00:00:00.7500000,200,20\r\n"
                                   "2023-11-17 00:00:02.0000000,300,30\n");
  TraceSpec t = trace_spec(p, TraceFormat::kAzure);
  auto src = open_trace(t);
  auto reqs = drain(*src);
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_DOUBLE_EQ(reqs[0].arrival_s, 0.0);
  EXPECT_DOUBLE_EQ(reqs[1].arrival_s, 1.25);
  EXPECT_DOUBLE_EQ(reqs[2].arrival_s, 2.5);
  EXPECT_EQ(reqs[2].input_tokens, 300);
  EXPECT_EQ(reqs[2].output_tokens, 30);
  EXPECT_EQ(reqs[2].id, 2);
}

TEST(ServeWorkload, BurstGptReaderFiltersAndSkipsFailedRequests) {
  const std::string p = write_temp("burst.csv",
                                   "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                                   "5,ChatGPT,472,18,490,Conversation log\n"
                                   "45,ChatGPT,1087,0,1087,Conversation log\n"
                                   "46,GPT-4,300,100,400,API log\n"
                                   "47.5,ChatGPT,20,7,27,API log\n");
  TraceSpec t = trace_spec(p, TraceFormat::kBurstGpt);
  auto all = drain(*open_trace(t));
  ASSERT_EQ(all.size(), 3u);  // the failed one (0 response tokens) skipped
  EXPECT_DOUBLE_EQ(all[0].arrival_s, 0);
  EXPECT_DOUBLE_EQ(all[2].arrival_s, 42.5);
  EXPECT_EQ(all[1].input_tokens, 300);
  t.model_filter = "ChatGPT";
  auto chat = drain(*open_trace(t));
  ASSERT_EQ(chat.size(), 2u);
  EXPECT_EQ(chat[1].output_tokens, 7);
  t.model_filter.clear();
  t.log_type_filter = "Conversation log";
  t.keep_failed = true;
  auto conv = drain(*open_trace(t));
  ASSERT_EQ(conv.size(), 2u);
  EXPECT_EQ(conv[1].output_tokens, 0);
}

TEST(ServeWorkload, ParasolCsvWithHashesWindowScaleAndCap) {
  const std::string p = write_temp("parasol.csv",
                                   "# a comment\n"
                                   "arrival_s,input_tokens,output_tokens,prefix_hashes\n"
                                   "0.0,1024,8,11 12\n"
                                   "1.0,600,4,11\n"
                                   "2.0,100,2,\n"
                                   "3.0,100,2,\n"
                                   "4.0,100,2,\n");
  TraceSpec t = trace_spec(p, TraceFormat::kParasol);
  auto reqs = drain(*open_trace(t));
  ASSERT_EQ(reqs.size(), 5u);
  EXPECT_EQ(reqs[0].prefix_hashes, (std::vector<uint64_t>{11, 12}));
  EXPECT_TRUE(reqs[2].prefix_hashes.empty());
  auto shaped = drain(*shape_source(open_trace(t), /*rate_scale=*/2.0, /*start=*/1.0, /*end=*/4.0, /*cap=*/-1));
  ASSERT_EQ(shaped.size(), 3u);  // arrivals 1, 2, 3
  EXPECT_EQ(shaped[0].id, 0);
  EXPECT_EQ(shaped[0].input_tokens, 600);
  EXPECT_DOUBLE_EQ(shaped[2].arrival_s, 1.0);  // (3 - 1) / 2
  auto capped = drain(*shape_source(open_trace(t), 1.0, 0, 1e300, 2));
  EXPECT_EQ(capped.size(), 2u);
}

TEST(ServeWorkload, MalformedTraceIsConfigErrorWithLine) {
  const std::string p = write_temp("bad.csv", "arrival_s,input_tokens,output_tokens\n0,10,1\n1,ten,1\n");
  auto src = open_trace(trace_spec(p, TraceFormat::kParasol));
  src->next();
  try {
    src->next();
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.key_path(), "input_tokens");
  }
  const std::string q = write_temp("order.csv", "arrival_s,input_tokens,output_tokens\n2,10,1\n1,10,1\n");
  auto src2 = open_trace(trace_spec(q, TraceFormat::kParasol));
  src2->next();
  EXPECT_THROW(src2->next(), ConfigError);
  EXPECT_THROW(open_trace(trace_spec("/nonexistent/trace.csv", TraceFormat::kAzure)), ConfigError);
}

TEST(ServeWorkload, MooncakeReaderKeepsHashIds) {
  const std::string p = PARASOL_DATA_DIR "/../shared/traces/mooncake_fast25/conversation_trace.jsonl";
  if (!fs::exists(p)) GTEST_SKIP() << p << " absent";
  auto src = open_trace(trace_spec(p, TraceFormat::kMooncake));
  auto r0 = src->next();
  ASSERT_TRUE(r0);
  EXPECT_EQ(r0->input_tokens, 6758);
  EXPECT_EQ(r0->output_tokens, 500);
  ASSERT_EQ(r0->prefix_hashes.size(), 14u);  // ceil(6758 / 512)
  EXPECT_EQ(r0->prefix_hashes[13], 13u);
}

TEST(ServeWorkload, PoissonAndGammaArrivalsHaveTheRequestedRateAndCv) {
  for (auto [kind, cv] : {std::pair{ArrivalKind::kPoisson, 1.0}, std::pair{ArrivalKind::kGamma, 3.0},
                          std::pair{ArrivalKind::kGamma, 0.5}, std::pair{ArrivalKind::kConstant, 0.0}}) {
    WorkloadSpec w;
    w.arrival.kind = kind;
    w.arrival.rate_per_s = 20;
    w.arrival.cv = cv;
    w.max_requests = 200000;
    auto src = make_source(w, 5);
    double last = 0, sum = 0, sum2 = 0;
    int64_t n = 0;
    while (auto r = src->next()) {
      if (r->id > 0) {
        const double gap = r->arrival_s - last;
        sum += gap;
        sum2 += gap * gap;
        ++n;
      }
      last = r->arrival_s;
    }
    const double mean = sum / double(n);
    const double sd = std::sqrt(std::max(sum2 / double(n) - mean * mean, 0.0));
    EXPECT_NEAR(mean, 1.0 / 20, 0.02 / 20);
    EXPECT_NEAR(sd / mean, cv, 0.03 * std::max(cv, 1.0));
  }
}

TEST(ServeWorkload, BurstArrivalsConcentrateInBursts) {
  WorkloadSpec w;
  w.arrival.kind = ArrivalKind::kBurst;
  w.arrival.rate_per_s = 10;
  w.arrival.burst_period_s = 10;
  w.arrival.burst_duration_s = 1;
  w.arrival.burst_factor = 9;
  w.max_requests = 100000;
  auto src = make_source(w, 3);
  int64_t in_burst = 0, n = 0;
  double last = 0;
  while (auto r = src->next()) {
    // The source starts at its first arrival (~0.01 s into the first burst): phases shift by that little.
    in_burst += std::fmod(r->arrival_s, 10.0) < 1.0;
    last = r->arrival_s;
    ++n;
  }
  // Per period: 90 requests in the 1 s burst, 90 in the 9 s outside -> 18 req/s, half of them in bursts.
  EXPECT_NEAR(double(n) / last, 18.0, 0.3);
  EXPECT_NEAR(double(in_burst) / double(n), 0.5, 0.01);
}

TEST(ServeWorkload, LognormalLengthsHaveTheRequestedMeanAndUniformStaysInBounds) {
  WorkloadSpec w;
  w.arrival.rate_per_s = 1;
  w.input.kind = LengthKind::kLognormal;
  w.input.mean = 1000;
  w.input.cv = 0.8;
  w.output.kind = LengthKind::kUniform;
  w.output.min = 5;
  w.output.max = 9;
  w.max_requests = 100000;
  auto src = make_source(w, 9);
  double sum = 0;
  int64_t lo = 100, hi = 0, n = 0;
  while (auto r = src->next()) {
    sum += double(r->input_tokens);
    lo = std::min(lo, r->output_tokens);
    hi = std::max(hi, r->output_tokens);
    ++n;
  }
  EXPECT_NEAR(sum / double(n), 1000, 10);
  EXPECT_EQ(lo, 5);
  EXPECT_EQ(hi, 9);
}

TEST(ServeWorkload, YamlSectionLoadsAndRejectsUnknownKeys) {
  const std::string trace = write_temp("y.csv", "arrival_s,input_tokens,output_tokens\n0,10,1\n5,20,2\n");
  const std::string yaml_file = write_temp("w.yaml",
                                           "workload:\n"
                                           "  kind: trace\n"
                                           "  trace: {path: " + fs::path(trace).filename().string() +
                                               ", format: parasol}\n"
                                               "  rate_scale: 2\n"
                                               "  window: {start: \"1 s\"}\n");
  auto root = yaml::load_file(yaml_file);
  WorkloadSpec w = load_workload(root.at("workload"));
  EXPECT_EQ(w.kind, WorkloadSpec::Kind::kTrace);
  EXPECT_EQ(w.trace.path, trace);
  EXPECT_DOUBLE_EQ(w.rate_scale, 2.0);
  EXPECT_DOUBLE_EQ(w.window_start_s, 1.0);
  auto reqs = drain(*make_source(w, 1));
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].input_tokens, 20);

  auto syn = yaml::load_string(
      "workload:\n  requests: 10\n  arrival: {process: gamma, rate: 4, cv: 2}\n"
      "  input: {dist: uniform, min: 1, max: 8}\n  output: 16\n",
      "syn.yaml");
  WorkloadSpec s = load_workload(syn.at("workload"));
  EXPECT_EQ(s.arrival.kind, ArrivalKind::kGamma);
  EXPECT_EQ(s.output.value, 16);
  EXPECT_EQ(drain(*make_source(s, 1)).size(), 10u);

  auto bad = yaml::load_string("workload:\n  requests: 10\n  arival: {process: poisson, rate: 1}\n", "bad.yaml");
  try {
    load_workload(bad.at("workload"));
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_NE(std::string(e.what()).find("arrival"), std::string::npos);  // did you mean
  }
  auto endless = yaml::load_string("workload:\n  arrival: {process: poisson, rate: 1}\n", "endless.yaml");
  EXPECT_THROW(load_workload(endless.at("workload")), ConfigError);
}

}  // namespace
}  // namespace parasol::serve

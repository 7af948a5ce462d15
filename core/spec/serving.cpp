#include "core/spec/serving.hpp"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/spec/gpu.hpp"

namespace parasol::spec {
namespace {

constexpr int64_t kMaxCount = int64_t{1} << 40;

const std::initializer_list<std::string_view> kKeys = {
    "max_num_seqs",          "max_num_batched_tokens",      "block_size",
    "gpu_memory_utilization", "enable_chunked_prefill",     "long_prefill_token_threshold",
    "enable_prefix_caching", "preemption_mode",             "swap_space",
    "max_model_len",         "router"};

void read_into(const yaml::Node& node, Serving& s) {
  if (auto n = node.get("max_num_seqs")) s.max_num_seqs = n->as_int(1, int64_t{1} << 20);
  if (auto n = node.get("max_num_batched_tokens")) s.max_num_batched_tokens = n->as_int(1, kMaxCount);
  if (auto n = node.get("block_size")) s.block_size = n->as_int(1, 1 << 20);
  if (auto n = node.get("gpu_memory_utilization")) {
    const double v = n->as_double(0, 1);
    if (v <= 0) n->fail("a fraction in (0, 1]");
    s.gpu_memory_utilization = v;
  }
  if (auto n = node.get("enable_chunked_prefill")) s.enable_chunked_prefill = n->as_bool();
  if (auto n = node.get("long_prefill_token_threshold")) s.long_prefill_token_threshold = n->as_int(0, kMaxCount);
  if (auto n = node.get("enable_prefix_caching")) s.enable_prefix_caching = n->as_bool();
  if (auto n = node.get("preemption_mode")) s.preemption_mode = n->as_enum({"recompute", "swap"});
  if (auto n = node.get("swap_space")) s.swap_space_bytes = n->as_quantity(Dimension::kBytes);
  if (auto n = node.get("max_model_len")) s.max_model_len = n->as_int(1, kMaxCount);
  if (auto n = node.get("router")) {
    if (!n->is_scalar() && !n->is_map()) n->fail("a router policy name or a router map (docs/routing.md)");
    s.router = *n;
  }
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Serving load_serving(const yaml::Node& node) {
  if (!node.is_map()) node.fail("a serving map (docs/scenario.md)");
  node.allow_keys(kKeys);
  Serving s;
  read_into(node, s);
  return s;
}

Serving overlay(Serving base, const Serving& over) {
  auto take = [](auto& a, const auto& b) {
    if (b) a = b;
  };
  take(base.max_num_seqs, over.max_num_seqs);
  take(base.max_num_batched_tokens, over.max_num_batched_tokens);
  take(base.block_size, over.block_size);
  take(base.gpu_memory_utilization, over.gpu_memory_utilization);
  take(base.enable_chunked_prefill, over.enable_chunked_prefill);
  take(base.long_prefill_token_threshold, over.long_prefill_token_threshold);
  take(base.enable_prefix_caching, over.enable_prefix_caching);
  take(base.preemption_mode, over.preemption_mode);
  take(base.swap_space_bytes, over.swap_space_bytes);
  take(base.max_model_len, over.max_model_len);
  take(base.router, over.router);
  return base;
}

nlohmann::json to_json(const Serving& s) {
  nlohmann::json j = nlohmann::json::object();
  auto put = [&](const char* k, const auto& v) {
    if (v) j[k] = *v;
  };
  put("max_num_seqs", s.max_num_seqs);
  put("max_num_batched_tokens", s.max_num_batched_tokens);
  put("block_size", s.block_size);
  put("gpu_memory_utilization", s.gpu_memory_utilization);
  put("enable_chunked_prefill", s.enable_chunked_prefill);
  put("long_prefill_token_threshold", s.long_prefill_token_threshold);
  put("enable_prefix_caching", s.enable_prefix_caching);
  put("preemption_mode", s.preemption_mode);
  put("swap_space_bytes", s.swap_space_bytes);
  put("max_model_len", s.max_model_len);
  if (s.router) j["router"] = s.router->is_scalar() ? nlohmann::json(s.router->as_string()) : nlohmann::json("map");
  return j;
}

Serving ServingDefaults::for_gpu(const std::string& gpu_name, const Gpu& gpu) const {
  if (!large_gpu || gpu.hbm_bytes < large_gpu->min_memory_bytes) return all;
  const std::string name = lower(gpu_name + " " + gpu.name);
  for (const std::string& e : large_gpu->except)
    if (name.find(lower(e)) != std::string::npos) return all;
  return overlay(all, large_gpu->serving);
}

ServingDefaults load_serving_defaults(const yaml::Node& node) {
  if (!node.is_map()) node.fail("a serving map (docs/schema-engine.md)");
  std::vector<std::string> keys(kKeys.begin(), kKeys.end());
  keys.erase(std::remove(keys.begin(), keys.end(), "router"), keys.end());
  keys.push_back("large_gpu");
  node.allow_keys(keys);
  ServingDefaults d;
  read_into(node, d.all);
  if (auto n = node.get("large_gpu")) {
    if (!n->is_map()) n->fail("a map: min_memory, except and the defaults on such GPUs");
    std::vector<std::string> lk(kKeys.begin(), kKeys.end());
    lk.erase(std::remove(lk.begin(), lk.end(), "router"), lk.end());
    lk.push_back("min_memory");
    lk.push_back("except");
    n->allow_keys(lk);
    ServingDefaults::LargeGpu g;
    g.min_memory_bytes = n->quantity("min_memory", Dimension::kBytes);
    if (auto e = n->get("except")) {
      if (!e->is_seq()) e->fail("a list of GPU name substrings");
      for (const yaml::Node& x : e->items()) g.except.push_back(x.as_string());
    }
    read_into(*n, g.serving);
    d.large_gpu = std::move(g);
  }
  return d;
}

}  // namespace parasol::spec

// parse_batch_spec (build_step.hpp): "prefill:4x2048,prefill:2x512@4096,decode:64@8192".
#include <charconv>

#include "core/common/error.hpp"
#include "core/plan/build_step.hpp"

namespace parasol::plan {
namespace {

const char* kExpected = "items like 'prefill:4x2048', 'prefill:2x512@4096' or 'decode:64@8192', comma-separated";
// Bounds: a batch of at most 2^20 sequences (engines batch hundreds to thousands), lengths and contexts of at most
// 2^40 tokens (as traces), so that a typo cannot make a step of 10^11 sequences.
constexpr int64_t kMaxSeqs = int64_t{1} << 20;
constexpr int64_t kMaxTokens = int64_t{1} << 40;

bool parse_int(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && out >= 0;
}

}  // namespace

Batch parse_batch_spec(const std::string& spec, int attn_dp, const std::string& key) {
  Batch b;
  std::string_view rest = spec;
  int64_t id = 0;
  if (rest.empty()) throw ConfigError("", 0, 0, key, kExpected, "nothing");
  if (rest.back() == ',' || rest.find(",,") != std::string_view::npos || rest.front() == ',')
    throw ConfigError("", 0, 0, key, kExpected, "'" + spec + "' (an empty item)");
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    auto bad = [&](const std::string& why) -> ConfigError {
      return ConfigError("", 0, 0, key, kExpected, "'" + std::string(item) + "' (" + why + ")");
    };
    const size_t colon = item.find(':');
    if (colon == std::string_view::npos) throw bad("no ':'");
    const std::string_view kind = item.substr(0, colon), body = item.substr(colon + 1);
    const size_t at = body.find('@');
    const std::string_view head = body.substr(0, at);
    int64_t n = 0, len = 1, ctx = 0;
    if (at != std::string_view::npos && !parse_int(body.substr(at + 1), ctx)) throw bad("context is not a count");
    if (kind == "prefill") {
      const size_t x = head.find('x');
      if (x == std::string_view::npos) throw bad("prefill needs NxL");
      if (!parse_int(head.substr(0, x), n) || !parse_int(head.substr(x + 1), len) || n < 1 || len < 1)
        throw bad("N and L must be positive counts");
    } else if (kind == "decode") {
      if (!parse_int(head, n) || n < 1) throw bad("N must be a positive count");
      if (ctx < 1) throw bad("decode needs a context, decode:N@C with C >= 1");
    } else {
      throw bad("kind must be prefill or decode");
    }
    if (len > kMaxTokens || ctx > kMaxTokens) throw bad("lengths and contexts are at most 2^40 tokens");
    if (n > kMaxSeqs - id) throw bad("a batch has at most 2^20 sequences");
    for (int64_t i = 0; i < n; ++i, ++id)
      b.seqs.push_back({id, len, ctx, static_cast<int>(id % std::max(attn_dp, 1)), true});
  }
  return b;
}

}  // namespace parasol::plan

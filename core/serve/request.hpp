// Request and RequestRecord: what enters a serving system and what it reports about each request when it leaves.
// A Request is produced by a RequestSource (workload.hpp), routed (router.hpp) and served by a Scheduler
// (scheduler.hpp); every Request that arrives yields exactly one RequestRecord with an Outcome, which the
// MetricsCollector (metrics.hpp) consumes. Times are seconds on the caller's clock (simulated or wall), never read
// from the system clock here.
// Thread behaviour: plain values.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace parasol::serve {

// Tokens covered by one prefix hash (Mooncake's hash_ids: 512-token blocks; equal ids = reusable prefix KV cache).
inline constexpr int64_t kPrefixHashTokens = 512;

struct Request {
  int64_t id = 0;         // unique within a run, assigned in arrival order by the source (0, 1, 2, ...)
  double arrival_s = 0;   // on the run's clock; sources start at 0
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;  // tokens to generate; 0 means the request ends with its prefill (no token is counted)
  // Prefix block hashes, one per kPrefixHashTokens tokens of the prompt (the last may cover a partial block); empty
  // when the source has none. The hash of block k identifies the prompt's first (k+1) blocks, as in Mooncake traces.
  std::vector<uint64_t> prefix_hashes;
  // The conversation (or client session) the request belongs to, for session-affinity routing; -1: none.
  int64_t session = -1;
  // 0: its first try; n: sent again for the n-th time after the replica serving it failed (serving_loop.hpp).
  int32_t attempt = 0;
};

enum class Outcome { kCompleted, kRejected, kFailed };
const char* to_string(Outcome o);

inline constexpr double kNoTime = std::numeric_limits<double>::quiet_NaN();

// Everything reported about one request. Fields that never happened are kNoTime (NaN) or 0.
struct RequestRecord {
  int64_t id = 0;
  double arrival_s = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;     // as requested
  int64_t generated_tokens = 0;  // produced (== output_tokens when completed)

  double first_scheduled_s = kNoTime;  // start of the first iteration that included it
  double first_token_s = kNoTime;      // end of the iteration that completed its prefill
  double finish_s = kNoTime;           // end of the iteration that produced its last token (or when it was
                                       // rejected / failed)

  // Inter-token latencies (gaps between consecutive output tokens): count, sum and max. TPOT is the mean:
  // (finish_s - first_token_s) / (generated_tokens - 1). The distribution over all tokens goes to the metrics as
  // individual samples (StepEvents::itl_s), not kept here.
  int64_t itl_count = 0;
  double itl_sum_s = 0;
  double itl_max_s = 0;

  int32_t preemptions = 0;
  int32_t retries = 0;           // times it was sent again after its replica failed (Request::attempt)
  int32_t replica = -1;          // the replica that produced its last token (decode replica when disaggregated)
  int32_t prefill_replica = -1;  // disaggregated serving: the prefill replica; otherwise == replica
  int64_t prefix_hit_tokens = 0; // prompt tokens served from the prefix cache (summed over re-prefills)
  Outcome outcome = Outcome::kCompleted;
  std::string reason;            // why rejected / failed; empty when completed

  double ttft_s() const { return first_token_s - arrival_s; }
  double e2e_s() const { return finish_s - arrival_s; }
  double queueing_s() const { return first_scheduled_s - arrival_s; }
  // Mean time per output token after the first; NaN when fewer than two tokens were generated.
  double tpot_s() const {
    return generated_tokens > 1 ? (finish_s - first_token_s) / double(generated_tokens - 1) : kNoTime;
  }
};

// Inter-token gaps, run-length encoded: `count` consecutive tokens (in production order) that each came `gap_s` after
// their sequence's previous token. In a decode iteration every sequence that also ran the previous one has the same
// gap, so an iteration is usually one run, whatever its batch size.
struct ItlRun {
  double gap_s = 0;
  int64_t count = 0;
};

// A record for a request that ends without being served.
RequestRecord make_rejected(const Request& r, double now_s, std::string reason, Outcome o = Outcome::kRejected);

}  // namespace parasol::serve

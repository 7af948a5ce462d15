// Scheduler: the iteration-level scheduler of one replica (one Plan instance, all its attention-DP groups).
// It decides which sequences run in the next iteration and how many tokens each, owns the replica's paged KV cache
// (BlockManager) and reports what each finished request went through. Policies:
//   - kPrefillFirst (vLLM v0-like continuous batching): when waiting prompts fit, an iteration runs prefills only
//     (whole prompts, up to max_batch_tokens; a lone prompt larger than the budget runs alone); otherwise it decodes
//     every running sequence.
//   - kChunked (Sarathi-Serve / vLLM v1-like chunked prefill): an iteration first decodes every running sequence (one
//     token each), then spends the remaining token budget on prefill chunks: unfinished prefills first (admission
//     order), then new prompts from the waiting queue (FCFS).
// Both respect max_batch_seqs. KV: a sequence holds blocks for every token in its KV; when a running sequence needs a
// block and none is free, the most recently admitted running sequence (not in flight) is preempted — by recompute
// (its blocks are freed and it re-prefills prompt + generated tokens, vLLM's default) or by swap (its blocks move to a
// CPU swap space of swap_blocks; the driver is told how many blocks move so it can charge the transfer). A request
// whose whole life cannot fit (blocks for input + output - 1 tokens > KV capacity) is rejected at add() with a reason,
// so a lone request always completes and no deadlock is possible.
//
// Driving it (the caller owns the clock; core/serve/serving_loop.hpp is the loop that does):
//   add(request, now)             -> rejected record, or nullopt when queued
//   schedule(now)                 -> the next Iteration, or nullopt when nothing can run now
//   runner.run(replica, it.batch) -> time; advance the clock
//   complete(it, now, events)     -> tokens produced: finished records, ITL samples, handoffs
// Pipeline parallelism: up to pp Iterations may be in flight at once (schedule() again before complete()), one per
// micro-batch (SchedulerConfig::micro_batches): each running sequence belongs to one micro-batch, so micro-batches hold
// disjoint sequences and each gets its share. complete() must be called
// in the order the iterations were scheduled (FIFO, as a pipeline drains). A driver starts micro-batch i+1 when
// stage 0 finished micro-batch i (StepTiming::stage_s[0]); the bubble is the time stages wait on each other.
// Disaggregation: role kPrefill releases a sequence once its prefill is done and hands it off (StepEvents::handoffs)
// with its first token; role kDecode accepts it through add_prefilled() and only decodes (first_token_at_decode:
// the first token's time becomes the start of its first decode iteration).
// Attention-DP (attn_dp > 1): one KV pool, FCFS queue and preemption order per group (see SchedulerConfig::attn_dp).
// Cost: schedule() and complete() are O(sequences in the batch + running sequences) — never O(all requests).
// Thread behaviour: one Scheduler per replica, used by one thread / SimGrid actor; not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "core/common/yaml_node.hpp"
#include "core/plan/plan.hpp"
#include "core/plan/step.hpp"
#include "core/spec/scenario.hpp"
#include "core/serve/block_manager.hpp"
#include "core/serve/request.hpp"

namespace parasol::serve {

enum class BatchPolicy { kPrefillFirst, kChunked };
enum class PreemptionMode { kRecompute, kSwap };
enum class SchedulerRole { kMixed, kPrefill, kDecode };
const char* to_string(BatchPolicy p);
const char* to_string(PreemptionMode m);
const char* to_string(SchedulerRole r);

struct SchedulerConfig {
  BatchPolicy policy = BatchPolicy::kChunked;
  SchedulerRole role = SchedulerRole::kMixed;
  // Batch limits, as the planner reads them (plan::PlanOptions): per iteration (one micro-batch) and per
  // attention-DP group.
  int64_t max_batch_tokens = 8192;  // token budget of one iteration in each attention-DP group
  int64_t max_batch_seqs = 256;     // sequences of one iteration (and running in one micro-batch) per group
  int64_t kv_block_tokens = 16;
  int64_t kv_blocks = 0;            // KV capacity in blocks of each attention-DP group (from the Plan's
                                    // MemoryBudget::kv_tokens, which is per group); the replica holds attn_dp x this
  bool prefix_caching = false;      // needs kPrefixHashTokens % kv_block_tokens == 0
  PreemptionMode preemption = PreemptionMode::kRecompute;
  int64_t swap_blocks = 0;          // CPU swap capacity (kSwap); when full, preemption falls back to recompute
  // Attention-DP groups of the instance (SGLang / vLLM DP attention): each group has its own KV pool of kv_blocks
  // (and prefix cache), its own FCFS queue, and preempts only its own sequences; a request joins one group when it
  // arrives (least outstanding tokens, lowest index on ties) for its whole life, and build_step sees each group's
  // own sequences (SeqWork::attn_group). Each group has its own token budget and max_batch_seqs in an iteration.
  int attn_dp = 1;
  // Pipeline micro-batches (the pool's pp; vLLM's virtual engines, SGLang's and TensorRT-LLM's PP micro-batches): a
  // sequence joins the micro-batch whose iteration admitted it and runs only in that micro-batch's iterations, so
  // the pp micro-batches in flight each hold their share of the running sequences. schedule() forms the next
  // micro-batch not in flight (round robin); max_batch_seqs bounds the running sequences of each micro-batch. With 1,
  // iterations in flight simply hold disjoint sequences.
  int micro_batches = 1;
  // Decode role (P/D disaggregation): true: a sequence's first token reaches the client from the decode instance
  // when its first decode iteration starts (KV arrived and admitted: TTFT includes the KV transfer and decode-side
  // queueing; SGLang PD / vLLM's disaggregated proxy / Dynamo); false: at the end of its prefill (DistServe-style).
  bool first_token_at_decode = true;
  // The model's context window (tokens; 0: none): a request whose prompt and answer need more is rejected when it
  // arrives, as engines refuse a prompt past max_model_len, with the reason.
  int64_t max_context = 0;
  // Chunked policy: a prompt prefills at most this many tokens per iteration (vLLM's long_prefill_token_threshold);
  // 0: no cap beyond the token budget.
  int64_t long_prefill_tokens = 0;
  // Sliding-window attention (the model's sliding_window; 0: none): a sequence keeps KV blocks for its last
  // `sliding_window` tokens plus one block (the blocks that fall out of the window are freed, as vLLM's sliding-window
  // KV manager does). Prefix caching is not combined with it.
  int64_t sliding_window = 0;

  // max_batch_tokens / max_batch_seqs / kv_block_tokens / kv_blocks from a Plan pool.
  static SchedulerConfig from_pool(const plan::Pool& pool);
};

// The scheduler of pool `pool` of `plan` under a scenario's serving knobs (spec::effective_serving: the scenario's
// `serving:` over its engine's defaults). Batch limits, KV block size and KV capacity are the plan's (what it was made
// with) unless the scenario's own `serving:` sets them (gpu_memory_utilization rescales the pool's KV bytes); chunked
// prefill, the long-prefill threshold, prefix caching, preemption (swap_space per GPU of the instance) and
// max_model_len (at most the model's context window) come from the effective knobs. Bad combinations (prefix caching
// with a block size not dividing the prefix-hash unit, a memory fraction that leaves no KV) are ConfigErrors.
SchedulerConfig scheduler_config(const plan::Plan& plan, int pool, const spec::Scenario& scenario);
// The knobs in words: "chunked prefill, max_num_seqs 256, max_num_batched_tokens 8192, block 16, prefix caching on,
// preemption recompute, max_model_len 131072".
std::string describe(const SchedulerConfig& c);

// One iteration chosen by schedule().
struct Iteration {
  plan::Batch batch;              // seq_id = Request::id; prefill chunks first (admission order), then decodes
  double start_s = 0;
  uint64_t serial = 0;            // 0, 1, 2, ... per scheduler; complete() checks FIFO order with it
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;      // == decode sequences
  int32_t preempted = 0;          // sequences preempted while forming it
  int64_t swap_out_blocks = 0;    // kSwap: blocks moved GPU -> CPU before this iteration
  int64_t swap_in_blocks = 0;     // kSwap: blocks moved CPU -> GPU before this iteration
  int64_t kv_used_blocks = 0;     // after this iteration's allocations
  int32_t lane = 0;               // the pipeline micro-batch (SchedulerConfig::micro_batches) it belongs to
  std::vector<int32_t> slots;     // the scheduler's own handles, parallel to batch.seqs (do not modify)
};

// A sequence whose prefill finished on a prefill replica, to be decoded elsewhere.
struct Handoff {
  Request request;
  RequestRecord record;   // so far: arrival, first scheduled, first token, prefill_replica, prefix hits
  int64_t kv_tokens = 0;  // tokens of KV to transfer (the prompt)
};

// What one completed iteration produced. Reused across calls by the driver (clear() keeps capacity).
struct StepEvents {
  std::vector<RequestRecord> finished;  // completed requests (outcome kCompleted)
  std::vector<ItlRun> itl_s;            // the gap of every non-first token produced, in order, run-length encoded
  int64_t itl_tokens() const;           // tokens in `itl_s` (sum of counts)
  std::vector<Handoff> handoffs;        // role kPrefill only
  int64_t output_tokens = 0;            // tokens produced (first tokens included)
  int64_t first_tokens = 0;
  void clear();
};

struct SchedulerStats {
  int64_t added = 0, rejected = 0, completed = 0, failed = 0, handed_off = 0;
  int64_t iterations = 0;
  int64_t preemptions = 0;
  int64_t swapped_out_blocks = 0, swapped_in_blocks = 0;
  int64_t prefix_lookup_tokens = 0;  // prompt tokens of admissions with prefix hashes (full units only)
  int64_t prefix_hit_tokens = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, int replica);

  const SchedulerConfig& config() const { return config_; }
  int replica() const { return replica_; }

  // Queues a request (FCFS). Returns its record (outcome kRejected, with the reason) when it can never be served.
  std::optional<RequestRecord> add(Request request, double now_s);
  // Decode role: a sequence prefilled elsewhere, whose KV just arrived. Rejected when it can never fit.
  std::optional<RequestRecord> add_prefilled(Handoff handoff, double now_s);

  // The next iteration, or nullopt when nothing can run (no work, or everything runnable is in flight).
  std::optional<Iteration> schedule(double now_s);
  // Same, into `out` (its vectors' capacity is reused: no allocation in steady state). False when nothing can run.
  bool schedule(double now_s, Iteration& out);
  // The iteration ended at now_s: tokens are produced, finished sequences leave and free their KV.
  void complete(const Iteration& it, double now_s, StepEvents& events);

  // Fails every request on this replica (a failed GPU / replica): records with outcome kFailed and `reason`.
  // Iterations in flight are void; the scheduler is empty afterwards.
  void fail_all(double now_s, const std::string& reason, std::vector<RequestRecord>& out);
  // The same, but hands every request back as it arrived (to be sent elsewhere), with its record so far and the
  // prompt tokens it had prefilled here (computed, not from the prefix cache: the work lost).
  struct Evicted {
    Request request;
    RequestRecord record;
    int64_t prefilled = 0;
  };
  void evict_all(double now_s, std::vector<Evicted>& out);

  bool idle() const { return live_ == 0; }            // nothing queued, running or in flight
  int64_t in_flight() const { return int64_t(in_flight_serials_.size()); }
  int64_t outstanding_requests() const { return live_; }
  // Remaining work: prompt tokens still to prefill + output tokens still to generate, over all its requests.
  int64_t outstanding_tokens() const { return outstanding_tokens_; }
  int64_t outstanding_tokens(int group) const { return group_tokens_[size_t(group)]; }
  int64_t waiting() const;
  int64_t running() const { return int64_t(running_.size()); }
  int groups() const { return config_.attn_dp; }
  const BlockManager& kv(int group = 0) const { return kv_[size_t(group)]; }  // one attention-DP group's pool
  int64_t kv_used_blocks() const;   // over all groups
  int64_t kv_total_blocks() const;  // over all groups (attn_dp x kv_blocks)
  double kv_utilization() const;    // kv_used_blocks / kv_total_blocks
  const SchedulerStats& stats() const { return stats_; }

 private:
  enum class State : uint8_t { kWaiting, kRunning, kSwapped, kFree };
  // The fields every iteration reads and writes come first (one or two cache lines): a fleet's replicas each keep
  // hundreds of sequences, and the per-iteration loops are memory-bound on them.
  struct Seq {
    State state = State::kFree;
    bool in_flight = false;      // part of a scheduled iteration not yet completed
    bool swap_counted = false;   // kSwapped: its blocks sit in the CPU swap space (false: a decode-side handoff)
    int64_t prompt_tokens = 0;   // tokens to prefill: input (+ generated when recomputing after preemption)
    int64_t context = 0;         // tokens whose KV exists (prefix-cache hits included)
    int64_t generated = 0;
    int64_t owned_blocks = 0;    // private blocks (pinned prefix units are counted by the BlockManager)
    std::vector<int32_t> units;  // pinned prefix units, in prompt order
    uint64_t unit_key = 0;       // chain key of the last pinned unit
    double last_token_s = 0;
    uint64_t order = 0;          // arrival order at this scheduler (FCFS across attention-DP groups)
    int32_t group = 0;           // attention-DP group
    int32_t lane = 0;            // pipeline micro-batch (running sequences only)
    bool first_token_pending = false;  // decode role, first_token_at_decode: set when first put in an iteration
    Request req;
    RequestRecord rec;
  };
  enum class Admission : uint8_t { kAdmitted, kGroupFull, kStop };

  // Prefetches the lines of q that an iteration's scheduling touches (and, `completing`, those its completion does).
  static void prefetch_seq(const Seq& q, bool completing) {
    __builtin_prefetch(&q.state);
    __builtin_prefetch(&q.last_token_s);
    if (completing) {
      __builtin_prefetch(&q.req.output_tokens);
      __builtin_prefetch(&q.rec.first_token_s);
      __builtin_prefetch(&q.rec.itl_max_s);
    }
  }
  int32_t new_slot();
  void free_slot(int32_t s);
  int64_t work_left(const Seq& q) const;
  int64_t private_tokens(const Seq& q, int64_t kv_tokens) const;
  int64_t tokens_needed_at_end(const Request& r) const;
  bool exceeds_context(const Request& r) const;  // prompt + answer past config_.max_context
  std::string context_reason(const Request& r) const;
  void put(int32_t s, int64_t new_tokens, double now_s, Iteration& it);
  void admit(bool whole_prompts, double now_s, Iteration& it);
  Admission admit_head(int group, bool whole_prompts, double now_s, Iteration& it);
  bool group_open(int g) const {
    return budget_[size_t(g)] > 0 && batch_seqs_[size_t(g)] < config_.max_batch_seqs;
  }
  int64_t& cell(int lane, int group) { return cell_running_[size_t(lane * config_.attn_dp + group)]; }
  bool any_waiting() const;
  int pick_group() const;
  void add_outstanding(const Seq& q, int64_t delta);  // outstanding tokens of the replica and of q's group
  void schedule_running(bool decode_phase, double now_s, Iteration& it);
  bool grow(int32_t s, int64_t new_tokens, Iteration& it);  // blocks for new tokens, preempting later sequences
  bool grow_without_preemption(int32_t s, int64_t new_tokens);
  bool preempt_last(int32_t keep, Iteration& it);
  void release_kv(Seq& q);
  void insert_prefix_units(Seq& q);
  void finish(int32_t s, double now_s, StepEvents& events);

  SchedulerConfig config_;
  int replica_;
  std::vector<BlockManager> kv_;   // per attention-DP group
  std::vector<Seq> seqs_;
  std::vector<int32_t> free_slots_;
  std::vector<std::deque<int32_t>> waiting_;  // per group, FCFS; preempted sequences go to the front
  std::vector<int64_t> group_tokens_;         // outstanding tokens per group
  std::vector<char> blocked_;                 // admit() scratch: groups that admit no more this iteration
  // The iteration being formed: its micro-batch, and per group the tokens left and the sequences put.
  int lane_ = 0;
  int next_lane_ = 0;
  std::vector<int64_t> budget_;
  std::vector<int64_t> batch_seqs_;
  std::vector<int64_t> cell_running_;  // running sequences per (micro-batch, group)
  std::vector<char> lane_busy_;        // micro-batches in flight
  uint64_t next_order_ = 0;
  std::vector<int32_t> running_;   // admission order
  std::deque<uint64_t> in_flight_serials_;
  uint64_t next_serial_ = 0;
  uint64_t voided_before_ = 0;     // iterations with a smaller serial were voided by fail_all
  int64_t live_ = 0;
  int64_t outstanding_tokens_ = 0;
  int64_t running_prefills_ = 0;   // sequences in running_ with context < prompt_tokens (a pass over them is skipped
                                   // when there are none)
  int64_t swap_used_ = 0;
  SchedulerStats stats_;
};

}  // namespace parasol::serve

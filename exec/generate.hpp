// Greedy generation over a ModelRunner, and a harness that runs an instance's ranks as threads. Used by the layout
// tests (sharded logits == unsharded logits), the decode-vs-recompute test, `parasol exec --model ... --layout ...`
// (also under mpirun) and the benchmarks.
//
// generate(): every rank of the instance calls it with the same spec. Sequence i is served by attention group
// i % attn_dp. Step 0 prefills every prompt (in chunks of `prefill_chunk` tokens when > 0), then `decode_steps`
// decode steps feed back the greedy tokens. The results (tokens and logits) are gathered onto every rank.
// Thread behaviour: generate() runs on the rank's thread; run_local() starts and joins one thread per rank.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "exec/model_runner.hpp"

namespace parasol::exec {

struct GenerateSpec {
  std::vector<std::vector<int32_t>> prompts;
  int decode_steps = 0;
  int64_t prefill_chunk = 0;    // 0: whole prompts in one step
  bool prompt_logits = false;   // also return the logits of every prompt position (needs RunnerOptions::all_logits)
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;      // generated tokens per sequence (1 + decode_steps each)
  std::vector<std::vector<float>> last_logits;   // per sequence: logits [vocab] of the last step
  std::vector<std::vector<float>> prompt_logits; // per sequence: [prompt_len x vocab] when asked
  std::vector<OpRecord> ops;                     // this rank's ops of every step, in order
  int steps = 0;
};

GenerateResult generate(ModelRunner& runner, Communicator& instance, const GenerateSpec& spec, int64_t vocab);

// Runs fn(rank, communicator) on `ranks` threads with a local world; rethrows the first failure (by rank order)
// after all threads ended.
void run_local(int ranks, double timeout_s, const std::function<void(int, Communicator&)>& fn);

// Deterministic pseudo-random prompts (token ids in [0, vocab)).
std::vector<std::vector<int32_t>> synthetic_prompts(int count, int64_t min_len, int64_t max_len, int64_t vocab,
                                                    uint64_t seed);

}  // namespace parasol::exec

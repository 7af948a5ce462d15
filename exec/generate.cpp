#include "exec/generate.hpp"

#include <algorithm>
#include <exception>
#include <random>
#include <thread>

#include "core/common/error.hpp"

namespace parasol::exec {

GenerateResult generate(ModelRunner& runner, Communicator& instance, const GenerateSpec& spec, int64_t vocab) {
  const int n = static_cast<int>(spec.prompts.size());
  const int adp = runner.layout().config.attn_dp;
  const int64_t V = vocab;
  GenerateResult res;
  res.tokens.resize(n);
  res.last_logits.resize(n);
  if (spec.prompt_logits) res.prompt_logits.resize(n);
  for (int i = 0; i < n; ++i)
    if (spec.prompts[i].empty()) throw ConfigError("prompt " + std::to_string(i) + " is empty");

  auto take = [&](const StepRequest& req, const StepResult& r) {
    for (size_t row = 0; row < r.logit_rows.size(); ++row) {
      auto [si, j] = r.logit_rows[row];
      const SeqInput& s = req.seqs[si];
      const float* lg = r.logits.data() + row * V;
      int64_t pos = s.context + j;
      if (spec.prompt_logits && pos < static_cast<int64_t>(spec.prompts[s.seq_id].size())) {
        auto& pl = res.prompt_logits[s.seq_id];
        pl.resize(spec.prompts[s.seq_id].size() * V);
        std::copy(lg, lg + V, pl.begin() + pos * V);
      }
      if (s.sample && j == static_cast<int64_t>(s.tokens.size()) - 1) res.last_logits[s.seq_id].assign(lg, lg + V);
    }
    for (size_t si = 0; si < req.seqs.size(); ++si)
      if (r.next_tokens[si] >= 0) res.tokens[req.seqs[si].seq_id].push_back(r.next_tokens[si]);
    res.ops.insert(res.ops.end(), r.ops.begin(), r.ops.end());
    ++res.steps;
  };

  std::vector<int64_t> done(n, 0);
  for (;;) {
    StepRequest req;
    for (int i = 0; i < n; ++i) {
      int64_t len = static_cast<int64_t>(spec.prompts[i].size());
      if (done[i] >= len) continue;
      int64_t c = spec.prefill_chunk > 0 ? std::min(spec.prefill_chunk, len - done[i]) : len - done[i];
      SeqInput s;
      s.seq_id = i;
      s.tokens.assign(spec.prompts[i].begin() + done[i], spec.prompts[i].begin() + done[i] + c);
      s.context = done[i];
      s.attn_group = i % adp;
      s.sample = done[i] + c == len;
      done[i] += c;
      req.seqs.push_back(std::move(s));
    }
    if (req.seqs.empty()) break;
    take(req, runner.step(req));
  }
  for (int d = 0; d < spec.decode_steps; ++d) {
    StepRequest req;
    for (int i = 0; i < n; ++i) {
      SeqInput s;
      s.seq_id = i;
      s.tokens = {res.tokens[i].back()};
      s.context = static_cast<int64_t>(spec.prompts[i].size()) + d;
      s.attn_group = i % adp;
      req.seqs.push_back(std::move(s));
    }
    take(req, runner.step(req));
  }

  // Logits live on the last stage's tp-0 ranks of each group: gather them onto every rank.
  const RankLayout& l = runner.layout();
  std::vector<float> mine;
  if (l.last_stage() && l.tp_index == 0)
    for (int i = 0; i < n; ++i) {
      if (i % adp != l.attn_group) continue;
      mine.push_back(static_cast<float>(i));
      mine.insert(mine.end(), res.last_logits[i].begin(), res.last_logits[i].end());
      if (spec.prompt_logits) mine.insert(mine.end(), res.prompt_logits[i].begin(), res.prompt_logits[i].end());
    }
  int32_t count = static_cast<int32_t>(mine.size());
  std::vector<int32_t> counts32(instance.size());
  instance.all_gather(&count, counts32.data(), 1, ElemType::kI32, "generate.logits");
  std::vector<int64_t> counts(counts32.begin(), counts32.end());
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  std::vector<float> all(static_cast<size_t>(total));
  instance.all_gather_v(mine.data(), all.data(), counts, ElemType::kF32, "generate.logits");
  for (int64_t p = 0; p < total;) {
    int i = static_cast<int>(all[p++]);
    res.last_logits[i].assign(all.begin() + p, all.begin() + p + V);
    p += V;
    if (spec.prompt_logits) {
      int64_t len = static_cast<int64_t>(spec.prompts[i].size()) * V;
      res.prompt_logits[i].assign(all.begin() + p, all.begin() + p + len);
      p += len;
    }
  }
  return res;
}

void run_local(int ranks, double timeout_s, const std::function<void(int, Communicator&)>& fn) {
  auto world = make_local_world(ranks, timeout_s);
  std::vector<std::exception_ptr> errors(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r, *world[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

std::vector<std::vector<int32_t>> synthetic_prompts(int count, int64_t min_len, int64_t max_len, int64_t vocab,
                                                    uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> out(count);
  for (auto& p : out) {
    int64_t len = min_len + static_cast<int64_t>(rng() % static_cast<uint64_t>(max_len - min_len + 1));
    for (int64_t i = 0; i < len; ++i) p.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
  }
  return out;
}

}  // namespace parasol::exec

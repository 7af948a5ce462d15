#include "core/serve/request.hpp"

#include "core/serve/step_runner.hpp"

namespace parasol::serve {

const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::kCompleted: return "completed";
    case Outcome::kRejected: return "rejected";
    case Outcome::kFailed: return "failed";
  }
  return "?";
}

RequestRecord make_rejected(const Request& r, double now_s, std::string reason, Outcome o) {
  RequestRecord rec;
  rec.id = r.id;
  rec.arrival_s = r.arrival_s;
  rec.input_tokens = r.input_tokens;
  rec.output_tokens = r.output_tokens;
  rec.finish_s = now_s;
  rec.outcome = o;
  rec.reason = std::move(reason);
  return rec;
}

StepTiming LinearStepRunner::run(int /*replica*/, const plan::Batch& batch) {
  StepTiming t;
  int64_t prefill_tokens = 0, decode_seqs = 0;
  for (const auto& s : batch.seqs) {
    if (s.is_decode()) ++decode_seqs;
    else prefill_tokens += s.new_tokens;
  }
  t.total_s = base_s_ + prefill_token_s_ * double(prefill_tokens) + decode_seq_s_ * double(decode_seqs);
  return t;
}

}  // namespace parasol::serve

// The local communicator: ranks are threads of one process sharing a Group object. A collective publishes each rank's
// (staged) send buffer, meets at a barrier, lets every rank read what it needs straight from the others' staging, and
// meets again before anyone may reuse its staging. Barriers wait with a deadline: a rank that does not arrive in
// time is named in a CommError, and the group is marked broken so every other waiter fails promptly too.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <sstream>

#include "exec/communicator.hpp"

namespace parasol::exec {
namespace {

using Clock = std::chrono::steady_clock;

struct Slot {
  std::vector<char> staging;            // copy of the send buffer (so in-place calls are safe)
  const std::vector<int64_t>* counts = nullptr;
  int color = 0, key = 0;
  std::shared_ptr<struct Group> split_result;
  uint64_t stamp = UINT64_MAX;          // barrier generation this rank last arrived at
};

struct Group {
  explicit Group(std::vector<int> world) : world_ranks(std::move(world)), slots(world_ranks.size()) {}
  std::vector<int> world_ranks;
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  uint64_t gen = 0;
  bool broken = false;
  std::string broken_reason;
  std::vector<int> broken_missing;
  std::vector<Slot> slots;
  std::map<std::pair<int, int>, std::deque<std::vector<char>>> mail;  // (src, dst) -> messages
};

std::string format_s(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

std::string join_ranks(const std::vector<int>& r) {
  std::string s;
  for (int x : r) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s;
}

class LocalCommunicator : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<Group> g, int rank, double timeout_s) : g_(std::move(g)), rank_(rank) {
    timeout_s_ = timeout_s;
  }
  std::string name() const override { return "local"; }
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(g_->world_ranks.size()); }
  int world_rank() const override { return g_->world_ranks[rank_]; }
  int world_rank_of(int r) const override { return g_->world_ranks.at(r); }

  void all_reduce(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    require_f32(type, "all_reduce", label);
    publish(send, count * 4);
    meet("all_reduce", label);
    float* out = static_cast<float*>(recv);
    sum_blocks(out, 0, count);
    meet("all_reduce", label);
  }

  void all_gather(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    std::vector<int64_t> counts(size(), count);
    all_gather_v(send, recv, counts, type, label);
  }

  void all_gather_v(const void* send, void* recv, const std::vector<int64_t>& counts, ElemType type,
                    const std::string& label) override {
    size_t eb = element_bytes(type);
    publish(send, counts.at(rank_) * eb);
    meet("all_gather", label);
    char* out = static_cast<char*>(recv);
    for (int r = 0; r < size(); ++r) {
      const auto& st = g_->slots[r].staging;
      check(st.size() == counts[r] * eb, "all_gather", label, r);
      std::memcpy(out, st.data(), st.size());
      out += st.size();
    }
    meet("all_gather", label);
  }

  void reduce_scatter(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    require_f32(type, "reduce_scatter", label);
    publish(send, count * size() * 4);
    meet("reduce_scatter", label);
    sum_blocks(static_cast<float*>(recv), rank_ * count, count);
    meet("reduce_scatter", label);
  }

  void all_to_all(const void* send, void* recv, int64_t count, ElemType type, const std::string& label) override {
    std::vector<int64_t> counts(size(), count);
    all_to_all_v(send, counts, recv, counts, type, label);
  }

  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, ElemType type, const std::string& label) override {
    size_t eb = element_bytes(type);
    int64_t total = 0;
    for (int64_t c : send_counts) total += c;
    publish(send, total * eb);
    g_->slots[rank_].counts = &send_counts;
    meet("all_to_all", label);
    char* out = static_cast<char*>(recv);
    for (int j = 0; j < size(); ++j) {
      const auto& sc = *g_->slots[j].counts;
      int64_t off = 0;
      for (int i = 0; i < rank_; ++i) off += sc[i];
      check(sc[rank_] == recv_counts[j], "all_to_all", label, j);
      std::memcpy(out, g_->slots[j].staging.data() + off * eb, recv_counts[j] * eb);
      out += recv_counts[j] * eb;
    }
    meet("all_to_all", label);
  }

  void send(const void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    std::vector<char> msg(static_cast<const char*>(buf), static_cast<const char*>(buf) + count * element_bytes(type));
    std::lock_guard<std::mutex> lk(g_->mu);
    g_->mail[{rank_, peer}].push_back(std::move(msg));
    g_->cv.notify_all();
  }

  void recv(void* buf, int64_t count, ElemType type, int peer, const std::string& label) override {
    std::unique_lock<std::mutex> lk(g_->mu);
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    auto& q = g_->mail[{peer, rank_}];
    while (q.empty()) {
      if (g_->broken) throw broken_error("recv", label, lk);
      if (Clock::now() >= deadline) {
        std::vector<int> missing{world_rank_of(peer)};
        throw CommError(prefix("recv", label) + "rank " + std::to_string(missing[0]) + " did not send within " +
                            format_s(timeout_s_) + " s",
                        "recv", missing);
      }
      g_->cv.wait_until(lk, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
    }
    std::vector<char> msg = std::move(q.front());
    q.pop_front();
    if (msg.size() != count * element_bytes(type))
      throw CommError(prefix("recv", label) + "message of " + std::to_string(msg.size()) + " bytes from rank " +
                          std::to_string(world_rank_of(peer)) + ", expected " +
                          std::to_string(count * element_bytes(type)),
                      "recv", {});
    std::memcpy(buf, msg.data(), msg.size());
  }

  void barrier(const std::string& label) override { meet("barrier", label); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    g_->slots[rank_].color = color;
    g_->slots[rank_].key = key;
    meet("split", "");
    std::vector<std::pair<int, int>> members;  // (key, rank)
    for (int r = 0; r < size(); ++r)
      if (g_->slots[r].color == color) members.push_back({g_->slots[r].key, r});
    std::sort(members.begin(), members.end());
    int leader = members.front().second;
    int my_index = 0;
    for (size_t i = 0; i < members.size(); ++i)
      if (members[i].second == rank_) my_index = static_cast<int>(i);
    if (color >= 0 && leader == rank_) {
      std::vector<int> world;
      for (auto& m : members) world.push_back(world_rank_of(m.second));
      g_->slots[rank_].split_result = std::make_shared<Group>(world);
    }
    meet("split", "");
    if (color < 0) return nullptr;
    return std::make_unique<LocalCommunicator>(g_->slots[leader].split_result, my_index, timeout_s_);
  }

 private:
  void require_f32(ElemType t, const char* op, const std::string& label) {
    if (t != ElemType::kF32) throw Error(prefix(op, label) + "sums are defined on fp32 only");
  }

  std::string prefix(const char* op, const std::string& label) const {
    return std::string("local: ") + op + (label.empty() ? "" : " '" + label + "'") + " on rank " +
           std::to_string(world_rank()) + ": ";
  }

  void check(bool ok, const char* op, const std::string& label, int peer) {
    if (!ok)
      throw CommError(prefix(op, label) + "sizes disagree with rank " + std::to_string(world_rank_of(peer)), op, {});
  }

  void publish(const void* send, int64_t bytes) {
    auto& st = g_->slots[rank_].staging;
    st.resize(static_cast<size_t>(bytes));
    if (bytes) std::memcpy(st.data(), send, static_cast<size_t>(bytes));
  }

  // Rank-order sum of float blocks [offset, offset + count) of every rank's staging.
  void sum_blocks(float* out, int64_t offset, int64_t count) {
    std::vector<float> acc(static_cast<size_t>(count), 0.0f);
    for (int r = 0; r < size(); ++r) {
      const float* s = reinterpret_cast<const float*>(g_->slots[r].staging.data()) + offset;
      for (int64_t i = 0; i < count; ++i) acc[i] += s[i];
    }
    std::memcpy(out, acc.data(), acc.size() * 4);
  }

  CommError broken_error(const char* op, const std::string& label, std::unique_lock<std::mutex>&) {
    return CommError(prefix(op, label) + "group failed earlier: " + g_->broken_reason, op, g_->broken_missing);
  }

  // A reusable barrier with a deadline.
  void meet(const char* op, const std::string& label) {
    std::unique_lock<std::mutex> lk(g_->mu);
    if (g_->broken) throw broken_error(op, label, lk);
    uint64_t gen = g_->gen;
    g_->slots[rank_].stamp = gen;
    if (++g_->count == size()) {
      g_->count = 0;
      ++g_->gen;
      g_->cv.notify_all();
      return;
    }
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
    while (g_->gen == gen) {
      if (g_->broken) throw broken_error(op, label, lk);
      if (Clock::now() >= deadline) {
        std::vector<int> missing;
        for (int r = 0; r < size(); ++r)
          if (g_->slots[r].stamp != gen) missing.push_back(world_rank_of(r));
        std::string msg = prefix(op, label) + "rank" + (missing.size() > 1 ? "s " : " ") + join_ranks(missing) +
                          " did not join within " + format_s(timeout_s_) + " s";
        g_->broken = true;
        g_->broken_reason = msg;
        g_->broken_missing = missing;
        g_->cv.notify_all();
        throw CommError(msg, op, missing);
      }
      g_->cv.wait_until(lk, deadline);
    }
  }

  std::shared_ptr<Group> g_;
  int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_local_world(int n, double timeout_s) {
  std::vector<int> world(n);
  for (int i = 0; i < n; ++i) world[i] = i;
  auto g = std::make_shared<Group>(world);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::make_unique<LocalCommunicator>(g, i, timeout_s));
  return out;
}

}  // namespace parasol::exec

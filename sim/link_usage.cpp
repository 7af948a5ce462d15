#include "sim/link_usage.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "core/common/error.hpp"
#include "sim/platform.hpp"

namespace parasol::sim {

LinkUsage::LinkUsage(size_t link_count, Options o) : o_(o), bucket_s_(o.bucket_s), series_(link_count) {
  if (!(o_.bucket_s > 0) || o_.max_buckets < 2) throw ConfigError("link usage: bucket width > 0 and >= 2 buckets");
}

void LinkUsage::grow_to(size_t bucket) {
  // Double the width (merge neighbours) until `bucket` fits.
  while (bucket >= o_.max_buckets) {
    for (auto& s : series_) {
      for (size_t k = 0; 2 * k < s.size(); ++k) s[k] = s[2 * k] + (2 * k + 1 < s.size() ? s[2 * k + 1] : 0.0);
      s.resize((s.size() + 1) / 2);
    }
    bucket_s_ *= 2;
    buckets_ = (buckets_ + 1) / 2;
    bucket /= 2;
  }
}

void LinkUsage::add(size_t link, double t0, double t1, double bytes) {
  if (!(bytes > 0) || link >= series_.size()) return;
  t0 = std::max(0.0, t0);
  t1 = std::max(t0, t1);
  grow_to(static_cast<size_t>(t1 / bucket_s_));
  const double w = bucket_s_;
  const size_t k0 = static_cast<size_t>(t0 / w), k1 = std::min(static_cast<size_t>(t1 / w), o_.max_buckets - 1);
  auto& s = series_[link];
  if (s.size() <= k1) s.resize(k1 + 1, 0.0);
  buckets_ = std::max(buckets_, k1 + 1);
  if (k0 >= k1 || t1 <= t0) {
    s[std::min(k0, k1)] += bytes;
    return;
  }
  const double rate = bytes / (t1 - t0);
  for (size_t k = k0; k <= k1; ++k) {
    const double a = std::max(t0, static_cast<double>(k) * w), b = k == k1 ? t1 : std::min(t1, (k + 1) * w);
    s[k] += rate * std::max(0.0, b - a);
  }
}

double LinkUsage::total_bytes(size_t link) const {
  double t = 0;
  for (double b : series_[link]) t += b;
  return t;
}

int LinkUsage::open_group(const std::string& label, double now_s) {
  if (groups_.size() >= o_.max_groups) {
    ++dropped_groups_;
    return -1;
  }
  Group g;
  g.label = label;
  g.start_s = g.end_s = now_s;
  groups_.push_back(std::move(g));
  return static_cast<int>(groups_.size()) - 1;
}

void LinkUsage::group_flow_started(int group, int src, int dst, double now_s, double bytes) {
  if (group < 0) return;
  Group& g = groups_[static_cast<size_t>(group)];
  ++g.flows;
  ++g.open;
  g.bytes += bytes;
  if (g.records.size() < o_.max_flows_per_group) g.records.push_back({src, dst, now_s, -1, bytes});
}

void LinkUsage::group_flow_done(int group, int src, int dst, double start_s, double end_s) {
  if (group < 0) return;
  Group& g = groups_[static_cast<size_t>(group)];
  --g.open;
  g.end_s = std::max(g.end_s, end_s);
  for (auto& r : g.records)
    if (r.src == src && r.dst == dst && r.start_s == start_s && r.end_s < 0) {
      r.end_s = end_s;
      break;
    }
}

namespace {

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::string link_usage_csv(const Platform& p) {
  const LinkUsage& u = *p.usage();
  std::string out = "link,bw_Bps,t_start_s,t_end_s,bytes,utilization\n";
  const double w = u.bucket_s();
  for (int e = 0; e < p.routes().edge_count(); ++e)
    for (int d = 0; d < 2; ++d) {
      const auto& s = u.series(2 * static_cast<size_t>(e) + d);
      const double bw = p.routes().edge(e).link.bw_Bps;
      const std::string name = p.link_name(e, d == 0);
      for (size_t k = 0; k < s.size(); ++k) {
        if (!(s[k] > 0)) continue;
        out += name + "," + num(bw) + "," + num(k * w) + "," + num((k + 1) * w) + "," + num(s[k]) + "," +
               num(s[k] / (bw * w)) + "\n";
      }
    }
  return out;
}

std::string flow_trace_events(const Platform& p, int pid) {
  const LinkUsage& u = *p.usage();
  const auto& g = p.cluster().graph;
  std::string out;
  auto emit = [&](const std::string& ev) {
    if (!out.empty()) out += ",\n";
    out += ev;
  };
  std::set<int64_t> named;
  const std::string spid = std::to_string(pid);
  emit("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + spid + ",\"args\":{\"name\":\"network\"}}");
  // Times in whole nanoseconds, written as microseconds with three decimals: a slice's ts + dur and the next one's
  // ts compare exactly as written.
  auto to_ns = [](double t) { return static_cast<int64_t>(std::llround(t * 1e9)); };
  auto us = [](int64_t ns) {
    char b[32];
    std::snprintf(b, sizeof b, "%lld.%03lld", static_cast<long long>(ns / 1000), static_cast<long long>(ns % 1000));
    return std::string(b);
  };
  // A vertex's groups overlap in time when collectives share it: each takes the first lane (thread kLanes v + k) free
  // at its start, so no two slices of one track overlap.
  constexpr int64_t kLanes = 1000;
  std::map<int, std::vector<int64_t>> lane_end;  // vertex -> per lane, the end of its last slice
  int64_t flow_id = 0;
  for (const auto& grp : u.groups()) {
    // One slice per vertex the group touches, spanning that vertex's flows.
    std::map<int, std::pair<int64_t, int64_t>> span;
    for (const auto& r : grp.records) {
      const int64_t start = to_ns(r.start_s), end = std::max(start, to_ns(r.end_s >= 0 ? r.end_s : grp.end_s));
      for (int v : {r.src, r.dst}) {
        auto [it, fresh] = span.try_emplace(v, start, end);
        if (!fresh) it->second = {std::min(it->second.first, start), std::max(it->second.second, end)};
      }
    }
    std::map<int, int64_t> tid_of;
    for (const auto& [v, se] : span) {
      auto& lanes = lane_end[v];
      size_t lane = 0;
      while (lane < lanes.size() && lanes[lane] > se.first) ++lane;
      if (lane == lanes.size()) lanes.push_back(0);
      lanes[lane] = se.second;
      const int64_t tid = kLanes * v + static_cast<int64_t>(std::min<size_t>(lane, kLanes - 1));
      tid_of[v] = tid;
      if (named.insert(tid).second)
        emit("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" + spid + ",\"tid\":" + std::to_string(tid) +
             ",\"args\":{\"name\":\"" + json_escape(g[static_cast<spec::VertexId>(v)].name) +
             (lane ? " #" + std::to_string(lane + 1) : std::string()) + "\"}}");
      emit("{\"name\":\"" + json_escape(grp.label) + "\",\"cat\":\"collective\",\"ph\":\"X\",\"pid\":" + spid +
           ",\"tid\":" + std::to_string(tid) + ",\"ts\":" + us(se.first) + ",\"dur\":" + us(se.second - se.first) +
           ",\"args\":{\"flows\":" + std::to_string(grp.flows) + ",\"bytes\":" + num(grp.bytes) + "}}");
    }
    for (const auto& r : grp.records) {
      const int64_t start = to_ns(r.start_s), end = std::max(start, to_ns(r.end_s >= 0 ? r.end_s : grp.end_s));
      const std::string id = std::to_string(++flow_id);
      emit("{\"name\":\"flow\",\"cat\":\"flow\",\"ph\":\"s\",\"id\":" + id + ",\"pid\":" + spid +
           ",\"tid\":" + std::to_string(tid_of[r.src]) + ",\"ts\":" + us(start) + "}");
      emit("{\"name\":\"flow\",\"cat\":\"flow\",\"ph\":\"f\",\"bp\":\"e\",\"id\":" + id + ",\"pid\":" + spid +
           ",\"tid\":" + std::to_string(tid_of[r.dst]) + ",\"ts\":" + us(end) + ",\"args\":{\"bytes\":" +
           num(r.bytes) + "}}");
    }
  }
  if (u.dropped_groups() > 0)
    emit("{\"name\":\"network trace truncated: " + std::to_string(u.dropped_groups()) +
         " flow groups not shown\",\"ph\":\"i\",\"s\":\"g\",\"pid\":" + spid + ",\"tid\":0,\"ts\":0}");
  return out;
}

}  // namespace parasol::sim

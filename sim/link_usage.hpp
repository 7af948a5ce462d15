// LinkUsage: what the network carried over time, for a run's outputs: per link direction, bytes per time
// bucket (link_usage.csv), and the flows grouped by collective for the Chrome trace (flow events).
//
// Cost stays low: nothing samples the links. The Platform tells LinkUsage when a flow starts (Platform::account) and
// when it completes (SimGrid's Activity::on_completion signal); at completion the flow's bytes are spread uniformly
// over [start, end] on every link of its route, so a flow costs hops x buckets-it-spans additions, once. A flow whose
// rate changed under contention is recorded at its mean rate (the bucket totals and the run's totals stay exact).
// The bucket width starts at `bucket_s` and doubles (merging neighbours) whenever the run outgrows `max_buckets`, so
// memory is links x max_buckets doubles whatever the simulated duration.
//
// Flow groups: the flows of one collective (one FlowSet started at one instant). run_flows opens a group with its
// algorithm as label (Platform::begin_flow_group); flows accounted without one are grouped by start instant and by
// the actor that started them. The first `max_groups` groups are kept for the trace.
//
// Output writers (sim/serving, tools) call link_usage_csv / flow_trace_events. Thread behaviour: SimGrid's event loop
// (single-threaded).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace parasol::sim {

class LinkUsage {
 public:
  struct Options {
    double bucket_s = 1e-4;     // initial bucket width
    size_t max_buckets = 1024;  // doubles the width beyond this (rows <= links x 1024)
    size_t max_groups = 5000;   // flow groups kept for the trace
    size_t max_flows_per_group = 64;
  };
  LinkUsage(size_t link_count, Options o);

  // Adds `bytes` carried on link `link` (a link direction index) uniformly over [t0_s, t1_s].
  void add(size_t link, double t0_s, double t1_s, double bytes);
  double bucket_s() const { return bucket_s_; }
  size_t link_count() const { return series_.size(); }
  // Bytes per bucket of one link direction (bucket k covers [k w, (k+1) w)); empty when it never carried traffic.
  const std::vector<double>& series(size_t link) const { return series_[link]; }
  double total_bytes(size_t link) const;

  struct FlowRecord {
    int src = 0, dst = 0;  // vertices
    double start_s = 0, end_s = -1, bytes = 0;
  };
  struct Group {
    std::string label;
    double start_s = 0, end_s = 0;
    int64_t flows = 0, open = 0;
    double bytes = 0;
    std::vector<FlowRecord> records;  // the first max_flows_per_group flows
  };
  // Flow group bookkeeping (Platform calls these).
  int open_group(const std::string& label, double now_s);  // -1 when max_groups is reached
  void group_flow_started(int group, int src, int dst, double now_s, double bytes);
  void group_flow_done(int group, int src, int dst, double start_s, double end_s);
  const std::vector<Group>& groups() const { return groups_; }
  int64_t dropped_groups() const { return dropped_groups_; }

 private:
  void grow_to(size_t bucket);

  Options o_;
  double bucket_s_;
  size_t buckets_ = 0;  // buckets in use (max over links)
  std::vector<std::vector<double>> series_;
  std::vector<Group> groups_;
  int64_t dropped_groups_ = 0;
};

class Platform;

// link_usage.csv: `link,bw_Bps,t_start_s,t_end_s,bytes,utilization`, one row per link direction and non-empty bucket,
// links in edge order, buckets in time order. Utilization = bytes / (bw x bucket width).
std::string link_usage_csv(const Platform& p);
// Chrome trace events (comma-separated JSON objects, no brackets) for the flow groups: per group one slice on the
// track of every vertex it touches (process "network", pid `pid`, one thread per vertex), and for each recorded flow
// a flow arrow ("ph":"s" at its source when it starts, "ph":"f" at its destination when it ends).
std::string flow_trace_events(const Platform& p, int pid = 100000);

}  // namespace parasol::sim

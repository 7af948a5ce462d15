// `parasol validate`: the cost model against a real run. Reads an executor profile (`parasol exec --profile`,
// core/cost/profile_samples.hpp) — or makes one, running `parasol exec --plan P --workload W --backend B` as a child
// process (the same code path as the command itself) — and compares every op with the cost model's time for that op
// on a device (op_time, core/cost/op_cost.hpp; the Step's op as the profile states it), and every iteration with the
// sum of its ops' predicted times (communication ops, which the device file does not model, count at their measured
// time). Prints per op kind (count, measured and predicted totals, median and p90 of |pred - meas| / meas, signed
// bias), per family over distinct shapes (the Samples `parasol calibrate --profile` fits: median of repeats), per
// iteration, and the worst shapes; --svg draws predicted against measured per op (log-log, by kind) and the
// iterations. --held-out keeps only the shapes the calibration split held out of the fit (fitting.hpp), so that
// `calibrate --profile P --write` then `validate --profile P --held-out` measures the fitted model on data it never
// saw.
// Thread behaviour: single-threaded command.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <tuple>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "core/cost/fitting.hpp"
#include "core/cost/op_cost.hpp"
#include "core/cost/profile_samples.hpp"
#include "core/plan/plan_io.hpp"
#include "core/spec/gpu.hpp"
#include "tools/cli.hpp"

extern char** environ;

namespace parasol::tools {
namespace {

namespace fs = std::filesystem;

struct ValidateArgs {
  std::string profile, plan, workload, backend = "cpu", device, gpu, svg;
  int64_t requests = -1;
  bool held_out = false;
  int worst = 10;
  double max_median = 0;  // 0: no check
};

// |pred - meas| / meas statistics, with fitting.cpp's linear-interpolation quantiles.
struct Stats {
  size_t n = 0;
  double median = 0, p90 = 0, bias = 0;
};

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double f = pos - static_cast<double>(lo);
  return v[lo] * (1 - f) + v[hi] * f;
}

class StatsBuilder {
 public:
  void add(double measured_s, double predicted_s) {
    const double e = (predicted_s - measured_s) / measured_s;
    err_.push_back(e);
    abs_.push_back(std::fabs(e));
    measured_s_ += measured_s;
    predicted_s_ += predicted_s;
  }
  Stats stats() const { return {err_.size(), quantile(abs_, 0.5), quantile(abs_, 0.9), quantile(err_, 0.5)}; }
  double measured_s() const { return measured_s_; }
  double predicted_s() const { return predicted_s_; }

 private:
  std::vector<double> err_, abs_;
  double measured_s_ = 0, predicted_s_ = 0;
};

struct KindRow {
  std::string kind;
  size_t count = 0;
  double measured_s = 0, predicted_s = 0;
  Stats stats;
};

struct FamilyRow {
  std::string family;
  Stats stats;
};

struct IterationRow {
  int64_t iteration = 0;
  double wall_s = 0;       // measured wall time of the iteration (rank 0); 0: the profile has none
  double ops_s = 0;        // max over ranks of the measured op times
  double predicted_s = 0;  // max over ranks of the predicted op times (communication: measured)
};

struct WorstRow {
  std::string name, family, key, where;
  size_t repeats = 0;
  double measured_s = 0, predicted_s = 0;
  double error() const { return (predicted_s - measured_s) / measured_s; }
};

struct Point {
  double measured_s, predicted_s;
  size_t kind;  // index into Report::kinds
};

struct Report {
  std::string profile, device, device_file;
  bool held_out = false;
  size_t rows = 0, compared = 0, communication = 0, no_lengths = 0, ranks = 0;
  std::vector<KindRow> kinds;
  std::vector<FamilyRow> families;
  Stats overall;  // over distinct shapes (all families)
  std::vector<IterationRow> iterations;
  Stats iter_wall, iter_ops;
  double overhead_median_s = 0;  // wall - measured ops, median over iterations
  std::vector<WorstRow> worst;
  std::vector<Point> points;
  std::vector<std::string> profile_gpus;  // the rows' gpu column values, sorted
};

Report compare(const std::vector<cost::ProfileRow>& rows, const spec::Gpu& gpu, const ValidateArgs& a,
               uint64_t split_seed) {
  Report rep;
  rep.rows = rows.size();
  rep.held_out = a.held_out;
  // Distinct shapes: their median time, their prediction, whether the split holds them out.
  const std::vector<cost::Sample> samples = cost::profile_samples(rows);
  std::map<std::tuple<std::string, std::string, std::string>, size_t> index;
  std::vector<double> predicted(samples.size());
  std::vector<bool> keep(samples.size());
  std::vector<size_t> repeats(samples.size(), 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    const cost::Sample& s = samples[i];
    index[{s.family, s.gpu, s.key}] = i;
    double p = 0;
    for (const auto& op : s.ops) p += cost::op_time(op, gpu).time_s;
    predicted[i] = p;
    keep[i] = !a.held_out || cost::held_out(s, split_seed);
  }

  std::map<std::string, StatsBuilder> by_kind;
  std::map<std::string, size_t> kind_count;
  std::vector<std::string> kind_order;
  struct Iter {
    double wall_s = 0;
    std::map<int, std::pair<double, double>> ranks;  // rank -> (measured, predicted)
  };
  std::map<int64_t, Iter> iters;
  std::map<int, bool> ranks_seen;
  std::vector<std::pair<size_t, double>> row_points;  // (sample, measured) of compared rows
  for (const cost::ProfileRow& r : rows) {
    ranks_seen[r.rank] = true;
    if (std::find(rep.profile_gpus.begin(), rep.profile_gpus.end(), r.gpu) == rep.profile_gpus.end())
      rep.profile_gpus.push_back(r.gpu);
    const std::string family = cost::profile_family(r.op);
    double pred = r.time_s;  // communication and unmodelled rows count at their measured time in iterations
    if (family.empty()) {
      (plan::is_communication(r.op.kind) ? rep.communication : rep.no_lengths) += 1;
    } else {
      const size_t si = index.at({family, r.gpu, cost::profile_key(r.op)});
      pred = predicted[si];
      ++repeats[si];
      if (keep[si]) {
        const std::string kind = plan::to_string(r.op.kind);
        if (!by_kind.count(kind)) kind_order.push_back(kind);
        by_kind[kind].add(r.time_s, pred);
        ++kind_count[kind];
        ++rep.compared;
        row_points.emplace_back(si, r.time_s);
      }
    }
    if (r.iteration >= 0) {
      Iter& it = iters[r.iteration];
      it.wall_s = std::max(it.wall_s, r.step_s);
      auto& rk = it.ranks[r.rank];
      rk.first += r.time_s;
      rk.second += pred;
    }
  }
  rep.ranks = ranks_seen.size();
  std::sort(rep.profile_gpus.begin(), rep.profile_gpus.end());
  std::sort(kind_order.begin(), kind_order.end());
  std::map<std::string, size_t> kind_index;
  for (const auto& k : kind_order) {
    kind_index[k] = rep.kinds.size();
    const StatsBuilder& b = by_kind[k];
    rep.kinds.push_back({k, kind_count[k], b.measured_s(), b.predicted_s(), b.stats()});
  }
  for (const auto& [si, meas] : row_points) {
    const std::string kind = plan::to_string(samples[si].ops[0].kind);
    rep.points.push_back({meas, predicted[si], kind_index[kind]});
  }

  // Families over distinct shapes, the view `calibrate` fits and reports.
  std::map<std::string, StatsBuilder> by_family;
  StatsBuilder all;
  std::vector<WorstRow> worst;
  for (size_t i = 0; i < samples.size(); ++i) {
    if (!keep[i]) continue;
    by_family[samples[i].family].add(samples[i].time_s, predicted[i]);
    all.add(samples[i].time_s, predicted[i]);
    worst.push_back({samples[i].ops[0].name, samples[i].family, samples[i].key, samples[i].where, repeats[i],
                     samples[i].time_s, predicted[i]});
  }
  for (const auto& [f, b] : by_family) rep.families.push_back({f, b.stats()});
  rep.overall = all.stats();
  std::stable_sort(worst.begin(), worst.end(),
                   [](const WorstRow& x, const WorstRow& y) { return std::fabs(x.error()) > std::fabs(y.error()); });
  if (worst.size() > static_cast<size_t>(std::max(0, a.worst))) worst.resize(static_cast<size_t>(std::max(0, a.worst)));
  rep.worst = std::move(worst);

  // Iterations: the slowest rank's sums (ranks of one iteration run concurrently).
  StatsBuilder wall, ops;
  std::vector<double> overhead;
  for (const auto& [i, it] : iters) {
    IterationRow row;
    row.iteration = i;
    row.wall_s = it.wall_s;
    for (const auto& [rank, mp] : it.ranks) {
      row.ops_s = std::max(row.ops_s, mp.first);
      row.predicted_s = std::max(row.predicted_s, mp.second);
    }
    if (row.ops_s > 0) ops.add(row.ops_s, row.predicted_s);
    if (row.wall_s > 0) {
      wall.add(row.wall_s, row.predicted_s);
      overhead.push_back(row.wall_s - row.ops_s);
    }
    rep.iterations.push_back(row);
  }
  rep.iter_wall = wall.stats();
  rep.iter_ops = ops.stats();
  rep.overhead_median_s = quantile(overhead, 0.5);
  return rep;
}

std::string pct(double f) { return format_number("%.1f%%", 100 * f); }
std::string signed_pct(double f) { return format_number("%+.1f%%", 100 * f); }

nlohmann::json stats_json(const Stats& s) {
  return {{"n", s.n}, {"median", s.median}, {"p90", s.p90}, {"bias", s.bias}};
}

nlohmann::json report_json(const Report& r) {
  nlohmann::json j;
  j["profile"] = r.profile;
  j["device"] = r.device;
  j["device_file"] = r.device_file;
  j["held_out"] = r.held_out;
  j["rows"] = r.rows;
  j["compared"] = r.compared;
  j["ranks"] = r.ranks;
  j["profile_gpus"] = r.profile_gpus;
  j["skipped"] = {{"communication", r.communication}, {"attention_without_lengths", r.no_lengths}};
  j["kinds"] = nlohmann::json::array();
  for (const auto& k : r.kinds) {
    nlohmann::json e = stats_json(k.stats);
    e["kind"] = k.kind;
    e["count"] = k.count;
    e["measured_s"] = k.measured_s;
    e["predicted_s"] = k.predicted_s;
    j["kinds"].push_back(e);
  }
  j["families"] = nlohmann::json::array();
  for (const auto& f : r.families) {
    nlohmann::json e = stats_json(f.stats);
    e["family"] = f.family;
    j["families"].push_back(e);
  }
  j["overall"] = stats_json(r.overall);
  nlohmann::json it = nlohmann::json::array();
  for (const auto& i : r.iterations)
    it.push_back(
        {{"iteration", i.iteration}, {"wall_s", i.wall_s}, {"ops_s", i.ops_s}, {"predicted_s", i.predicted_s}});
  j["iterations"] = {{"n", r.iterations.size()},
                     {"vs_wall", stats_json(r.iter_wall)},
                     {"vs_ops", stats_json(r.iter_ops)},
                     {"overhead_median_s", r.overhead_median_s},
                     {"rows", it}};
  j["worst"] = nlohmann::json::array();
  for (const auto& w : r.worst)
    j["worst"].push_back({{"name", w.name},
                          {"family", w.family},
                          {"key", w.key},
                          {"where", w.where},
                          {"repeats", w.repeats},
                          {"measured_s", w.measured_s},
                          {"predicted_s", w.predicted_s},
                          {"error", w.error()}});
  return j;
}

std::string report_text(const Report& r, int verbosity) {
  std::ostringstream s;
  s << "validate: " << r.profile << " (" << r.rows << " rows, " << r.ranks << " rank(s), " << r.iterations.size()
    << " iterations) against " << r.device << " (" << r.device_file << ")";
  if (r.held_out) s << ", held-out shapes only";
  s << "\n";
  for (const auto& g : r.profile_gpus)
    if (g != r.device)
      s << "note: rows measured on '" << g << "' are predicted on '" << r.device
        << "' (calibrate fits a device from the rows that name it: exec --profile-gpu)\n";
  if (r.communication + r.no_lengths > 0)
    s << "not predicted: " << r.communication << " communication op(s) (not in the device file), " << r.no_lengths
      << " attention op(s) without per-sequence lengths (an older profile)\n";
  auto line = [&](const std::string& name, const std::string& count, const std::string& meas, const std::string& pred,
                  const Stats& st) {
    s << std::left << std::setw(24) << name << std::right << std::setw(8) << count << std::setw(12) << meas
      << std::setw(12) << pred << std::setw(10) << pct(st.median) << std::setw(10) << pct(st.p90) << std::setw(10)
      << signed_pct(st.bias) << "\n";
  };
  s << "\n"
    << std::left << std::setw(24) << "op kind (rows)" << std::right << std::setw(8) << "count" << std::setw(12)
    << "measured" << std::setw(12) << "predicted" << std::setw(10) << "median" << std::setw(10) << "p90"
    << std::setw(10) << "bias" << "\n";
  for (const auto& k : r.kinds)
    line(k.kind, std::to_string(k.count), format_time(k.measured_s), format_time(k.predicted_s), k.stats);
  s << "\n"
    << std::left << std::setw(24) << "family (shapes)" << std::right << std::setw(8) << "n" << std::setw(12) << ""
    << std::setw(12) << "" << std::setw(10) << "median" << std::setw(10) << "p90" << std::setw(10) << "bias" << "\n";
  for (const auto& f : r.families) line(f.family, std::to_string(f.stats.n), "", "", f.stats);
  line("all", std::to_string(r.overall.n), "", "", r.overall);
  if (!r.iterations.empty()) {
    s << "\niterations: " << r.iterations.size() << "; predicted vs measured wall time: median "
      << pct(r.iter_wall.median) << ", p90 " << pct(r.iter_wall.p90) << ", bias " << signed_pct(r.iter_wall.bias)
      << "; vs the sum of measured ops: median " << pct(r.iter_ops.median) << ", bias " << signed_pct(r.iter_ops.bias)
      << "\n";
    if (r.iter_wall.n > 0)
      s << "time outside the Step's ops (host scheduling, control messages): median "
        << format_time(r.overhead_median_s)
        << " per iteration\n";
    if (verbosity > 1)
      for (const auto& i : r.iterations)
        s << "  iteration " << i.iteration << ": wall " << (i.wall_s > 0 ? format_time(i.wall_s) : "-") << ", ops "
          << format_time(i.ops_s) << ", predicted " << format_time(i.predicted_s) << "\n";
  }
  if (!r.worst.empty()) {
    s << "\nworst shapes (|error|, median of repeats):\n";
    for (const auto& w : r.worst)
      s << "  " << std::left << std::setw(9) << signed_pct(w.error()) << std::setw(22) << w.name << " measured "
        << std::setw(10) << format_time(w.measured_s) << " predicted " << std::setw(10) << format_time(w.predicted_s)
        << " x" << w.repeats << "  " << w.key << "  (" << w.where << ")\n";
  }
  return s.str();
}

std::string xml_escape(const std::string& t) {
  std::string o;
  for (char c : t) {
    if (c == '&') o += "&amp;";
    else if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string n1(double v) { return format_number("%.1f", v); }

// Predicted against measured per op (log-log, by kind, with y = x and the +-15% band), and the iterations.
std::string report_svg(const Report& r) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  const bool iter_panel = !r.iterations.empty();
  const double W = 900, L = 80, R = 230, top = 40, H1 = 420;
  const double pw = W - L - R, ph = H1 - 70;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << (iter_panel ? 910 : 470)
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << L << "\" y=\"24\" font-size=\"15\">" << xml_escape(r.device)
    << ": predicted vs measured per op ("
    << xml_escape(fs::path(r.profile).filename().string()) << (r.held_out ? ", held-out shapes" : "") << ")</text>\n";
  // Panel 1: log10(us) on both axes, one range for both so y = x is the diagonal.
  double lo = 1e300, hi = -1e300;
  for (const auto& p : r.points)
    for (double v : {p.measured_s, p.predicted_s}) {
      const double x = std::log10(std::max(v, 1e-9) * 1e6);
      lo = std::min(lo, x), hi = std::max(hi, x);
    }
  if (r.points.empty()) lo = 0, hi = 1;
  lo = std::floor(lo), hi = std::max(lo + 1, std::ceil(hi));
  const double T = top + 10;
  auto px = [&](double v) { return L + (std::log10(std::max(v, 1e-9) * 1e6) - lo) / (hi - lo) * pw; };
  auto py = [&](double v) { return T + ph - (std::log10(std::max(v, 1e-9) * 1e6) - lo) / (hi - lo) * ph; };
  for (int d = static_cast<int>(lo); d <= static_cast<int>(hi); ++d) {
    const double v = std::pow(10.0, d) * 1e-6;
    const std::string label = format_time(v);
    s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << n1(py(v)) << "\" y2=\"" << n1(py(v))
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << n1(py(v) + 4) << "\" text-anchor=\"end\">"
      << label << "</text>\n";
    s << "<line x1=\"" << n1(px(v)) << "\" x2=\"" << n1(px(v)) << "\" y1=\"" << T << "\" y2=\"" << T + ph
      << "\" stroke=\"#eee\"/>\n<text x=\"" << n1(px(v)) << "\" y=\"" << T + ph + 18 << "\" text-anchor=\"middle\">"
      << label << "</text>\n";
  }
  const double a = std::pow(10.0, lo) * 1e-6, b = std::pow(10.0, hi) * 1e-6;
  s << "<line x1=\"" << n1(px(a)) << "\" y1=\"" << n1(py(a)) << "\" x2=\"" << n1(px(b)) << "\" y2=\"" << n1(py(b))
    << "\" stroke=\"black\"/>\n";
  for (double f : {1.15, 1 / 1.15})
    s << "<line x1=\"" << n1(px(a)) << "\" y1=\"" << n1(py(a * f)) << "\" x2=\"" << n1(px(b)) << "\" y2=\""
      << n1(py(b * f)) << "\" stroke=\"black\" stroke-dasharray=\"3 3\"/>\n";
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n<text x=\"" << L + pw / 2 << "\" y=\"" << T + ph + 38
    << "\" text-anchor=\"middle\">measured op time (log scale)</text>\n<text transform=\"translate(14," << T + ph / 2
    << ") rotate(-90)\" text-anchor=\"middle\">predicted (log scale); dashed: +-15%</text>\n";
  for (const auto& p : r.points)
    s << "<circle cx=\"" << n1(px(p.measured_s)) << "\" cy=\"" << n1(py(p.predicted_s)) << "\" r=\"2.5\" fill=\""
      << kColors[p.kind % 10] << "\" fill-opacity=\"0.55\"/>\n";
  for (size_t k = 0; k < r.kinds.size(); ++k) {
    const double ly = T + 10 + 18 * static_cast<double>(k);
    s << "<circle cx=\"" << L + pw + 22 << "\" cy=\"" << ly << "\" r=\"4\" fill=\"" << kColors[k % 10]
      << "\"/>\n<text x=\"" << L + pw + 34 << "\" y=\"" << ly + 4 << "\">" << r.kinds[k].kind << " ("
      << r.kinds[k].count << ", median " << pct(r.kinds[k].stats.median) << ")</text>\n";
  }
  if (iter_panel) {
    // Panel 2: per iteration, measured wall, measured ops and predicted (linear time axis).
    const double T2 = H1 + 60, ph2 = ph;
    double ymax = 0;
    for (const auto& i : r.iterations) ymax = std::max({ymax, i.wall_s, i.ops_s, i.predicted_s});
    if (!(ymax > 0)) ymax = 1;
    // Round ticks: a 1, 2 or 5 step giving at most six intervals.
    double step = std::pow(10.0, std::floor(std::log10(ymax / 5)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
      if (ymax / (step * m) <= 6) {
        step *= m;
        break;
      }
    ymax = std::ceil(ymax / step) * step;
    const double first = static_cast<double>(r.iterations.front().iteration);
    const double last = std::max(first + 1, static_cast<double>(r.iterations.back().iteration));
    auto qx = [&](double i) { return L + (i - first) / (last - first) * pw; };
    auto qy = [&](double v) { return T2 + ph2 - v / ymax * ph2; };
    for (double v = 0; v <= ymax * (1 + 1e-9); v += step) {
      s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << n1(qy(v)) << "\" y2=\"" << n1(qy(v))
        << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << n1(qy(v) + 4) << "\" text-anchor=\"end\">"
        << format_time(v) << "</text>\n";
    }
    s << "<rect x=\"" << L << "\" y=\"" << T2 << "\" width=\"" << pw << "\" height=\"" << ph2
      << "\" fill=\"none\" stroke=\"black\"/>\n<text x=\"" << L + pw / 2 << "\" y=\"" << T2 + ph2 + 38
      << "\" text-anchor=\"middle\">iteration</text>\n<text x=\"" << L << "\" y=\"" << T2 + ph2 + 18 << "\">"
      << r.iterations.front().iteration << "</text>\n<text x=\"" << L + pw << "\" y=\"" << T2 + ph2 + 18
      << "\" text-anchor=\"end\">" << r.iterations.back().iteration << "</text>\n<text transform=\"translate(14,"
      << T2 + ph2 / 2 << ") rotate(-90)\" text-anchor=\"middle\">iteration time</text>\n";
    struct Line {
      const char* label;
      const char* color;
      const char* dash;  // the wall time is drawn last, dashed: it lies just above the sum of ops
      double IterationRow::*field;
    };
    const Line lines[] = {{"measured (sum of ops)", "#2ca02c", "", &IterationRow::ops_s},
                          {"predicted", "#d62728", "", &IterationRow::predicted_s},
                          {"measured (wall)", "#1f77b4", " stroke-dasharray=\"5 3\"", &IterationRow::wall_s}};
    for (size_t k = 0; k < 3; ++k) {
      s << "<polyline fill=\"none\" stroke=\"" << lines[k].color << "\" stroke-width=\"1.5\"" << lines[k].dash
        << " points=\"";
      for (const auto& i : r.iterations)
        if (i.*(lines[k].field) > 0)
          s << n1(qx(static_cast<double>(i.iteration))) << "," << n1(qy(i.*(lines[k].field))) << " ";
      s << "\"/>\n";
      const double ly = T2 + 10 + 18 * static_cast<double>(k);
      s << "<line x1=\"" << L + pw + 15 << "\" x2=\"" << L + pw + 40 << "\" y1=\"" << ly << "\" y2=\"" << ly
        << "\" stroke=\"" << lines[k].color << "\" stroke-width=\"2\"" << lines[k].dash
        << "/>\n<text x=\"" << L + pw + 46 << "\" y=\"" << ly + 4 << "\">" << lines[k].label << "</text>\n";
    }
  }
  s << "</svg>\n";
  return s.str();
}

// Runs `parasol exec --plan ... --profile OUT` as a child process (this binary), so validate measures exactly what
// `parasol exec` runs. Returns its exit code.
int run_exec(const ValidateArgs& a, const CommonOptions& common, const std::string& profile_out,
             const std::string& profile_gpu) {
  std::vector<std::string> args = {"parasol",  "exec",      "--plan",    a.plan,  "--workload", a.workload,
                                   "--backend", a.backend, "--profile", profile_out, "--profile-gpu", profile_gpu,
                                   "--seed",   std::to_string(common.seed), "-q"};
  if (a.requests >= 0) args.insert(args.end(), {"--requests", std::to_string(a.requests)});
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0)
    throw RuntimeFailure("validate: cannot start parasol exec");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw RuntimeFailure("validate: waiting for parasol exec failed");
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 1;
}

void write_text_file(const std::string& path, const std::string& text) {
  const fs::path p(path);
  write_file_atomic(p.has_parent_path() ? p.parent_path().string() : ".", p.filename().string(), text);
}

int run_validate(const ValidateArgs& a, const CommonOptions& common) {
  const bool run_mode = a.profile.empty();
  if (run_mode && (a.plan.empty() || a.workload.empty()))
    throw ConfigError("", 0, 0, "--profile", "an executor profile, or --plan and --workload to run one", "none");
  if (!a.device.empty() && !a.gpu.empty())
    throw ConfigError("", 0, 0, "--gpu", "either --device FILE or --gpu NAME", "both");
  if (a.worst < 0) throw ConfigError("", 0, 0, "--worst", "a non-negative count", std::to_string(a.worst));
  std::optional<plan::Plan> plan;
  if (!a.plan.empty()) plan = plan::load_plan_file(resolve_data_path(a.plan));

  // The device: --device FILE, --gpu NAME, else the shipped GPU the profile's rows name.
  std::string device_file;
  if (!a.device.empty()) device_file = a.device;
  else if (!a.gpu.empty()) device_file = resolve_data_path("topologies/gpus/" + a.gpu + ".yaml");
  std::optional<spec::Gpu> gpu;
  if (!device_file.empty()) gpu = spec::load_gpu_file(device_file);
  if (run_mode && !gpu)
    throw ConfigError("", 0, 0, "--device", "a device file to predict with (parasol measure-host --out host.yaml)",
                      "none");

  std::string profile = a.profile;
  std::unique_ptr<fs::path> scratch;
  if (run_mode) {
    if (!common.out_dir.empty()) {
      fs::create_directories(common.out_dir);
      profile = (fs::path(common.out_dir) / "ops.csv").string();
    } else {
      std::string tmpl = (fs::temp_directory_path() / "parasol-validate-XXXXXX").string();
      if (!::mkdtemp(tmpl.data())) throw RuntimeFailure("validate: cannot create a scratch directory");
      scratch = std::make_unique<fs::path>(tmpl);
      profile = (*scratch / "ops.csv").string();
    }
    const int rc = run_exec(a, common, profile, gpu->name);
    if (rc != 0) {
      if (scratch) fs::remove_all(*scratch);
      return rc;
    }
  }
  const cost::CsvTable table = cost::CsvTable::load(profile);
  const std::vector<cost::ProfileRow> rows = cost::read_profile(table);
  if (scratch) fs::remove_all(*scratch);
  if (rows.empty()) throw ConfigError(profile, 1, 0, "", "an executor profile with at least one row", "none");
  if (!gpu) {
    const std::string shipped = resolve_data_path("topologies/gpus/" + rows.front().gpu + ".yaml");
    if (!fs::exists(shipped))
      throw ConfigError(profile, table.line(0), 0, "gpu",
                        "a GPU in topologies/gpus, or --device FILE (parasol measure-host) / --gpu NAME",
                        "'" + rows.front().gpu + "'");
    device_file = shipped;
    gpu = spec::load_gpu_file(shipped);
  }

  Report rep = compare(rows, *gpu, a, common.seed == 1 ? cost::kSplitSeed : common.seed);
  rep.profile = run_mode && scratch ? "parasol exec --plan " + a.plan : profile;
  rep.device = gpu->name;
  rep.device_file = device_file;
  const std::string svg = report_svg(rep);
  if (!a.svg.empty()) write_text_file(a.svg, svg);
  nlohmann::json j = report_json(rep);
  if (plan) j["plan"] = {{"file", a.plan}, {"model", plan->model.name}, {"layout", plan->pools[0].config.label()}};
  if (!common.out_dir.empty()) {
    write_file_atomic(common.out_dir, "validate.json", j.dump(2) + "\n");
    write_file_atomic(common.out_dir, "validate.svg", svg);
    std::vector<std::string> inputs;
    for (const std::string* f : {&a.profile, &a.plan, &a.device, &a.workload})
      if (!f->empty()) inputs.push_back(*f);
    write_run_json(common.out_dir, "validate", inputs, common.seed);
  }
  if (common.json) {
    std::cout << j.dump(2) << "\n";
  } else if (common.verbosity > 0) {
    if (plan) std::cout << "plan: " << plan->model.name << " " << plan->pools[0].config.label() << "\n";
    std::cout << report_text(rep, common.verbosity);
    if (!a.svg.empty()) std::cout << "wrote " << a.svg << "\n";
    if (!common.out_dir.empty()) std::cout << "wrote " << common.out_dir << "/{validate.json,validate.svg}\n";
  }
  if (a.max_median > 0 && !(rep.overall.n > 0 && rep.overall.median <= a.max_median)) {
    std::cerr << "parasol: validate: median |error| " << pct(rep.overall.median) << " over " << rep.overall.n
              << " shapes exceeds --max-median " << pct(a.max_median) << "\n";
    return 1;
  }
  return 0;
}

PARASOL_COMMAND("validate", 65, [](CLI::App& app, CommonOptions& common) {
  auto a = std::make_shared<ValidateArgs>();
  CLI::App* sub = app.add_subcommand("validate", "Compare an executor profile, op by op, with the cost model");
  add_common_options(sub, common);
  sub->add_option("--profile", a->profile, "Executor profile CSV (parasol exec --profile)");
  sub->add_option("--plan", a->plan, "The plan it ran (without --profile: run it with --workload)");
  sub->add_option("--workload", a->workload, "Scenario YAML whose workload the plan serves (run mode)");
  sub->add_option("--backend", a->backend, "Run mode: the exec backend")->capture_default_str();
  sub->add_option("--requests", a->requests, "Run mode: serve at most this many requests")->check(non_negative_count());
  sub->add_option("--device", a->device, "Device YAML to predict with (e.g. parasol measure-host output)");
  sub->add_option("--gpu", a->gpu, "A shipped GPU to predict with (topologies/gpus/NAME.yaml)");
  sub->add_flag("--held-out", a->held_out, "Only the shapes the calibration split holds out of the fit");
  sub->add_option("--svg", a->svg, "Write the picture (predicted vs measured per op, iterations) to FILE");
  sub->add_option("--worst", a->worst, "How many of the worst shapes to list")->capture_default_str();
  sub->add_option("--max-median", a->max_median, "Exit 1 when the median |error| over shapes exceeds this fraction")
      ->check(at_least(0, "a fraction >= 0"));
  set_examples(sub, {"parasol validate --profile ops.csv --device host.yaml --svg validate.svg  # profile vs model",
                     "parasol validate --plan scenarios/exec/tiny-llama-tp2.plan.yaml --workload "
                     "scenarios/exec/tiny-llama-tp2.yaml --device host.yaml  # run it, then compare",
                     "parasol validate --profile ops.csv --device host.yaml --held-out --max-median 0.15  # CI check"});
  return [a, &common] { return run_validate(*a, common); };
});

}  // namespace
}  // namespace parasol::tools

#include "sim/netbench.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "core/common/error.hpp"
#include "core/common/units.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

namespace {

std::string num(double v, const char* fmt = "%.9g") { return format_number(fmt, v); }

}  // namespace

std::vector<NetbenchRow> run_netbench(const spec::Cluster& cluster, const NetbenchOptions& o) {
  std::vector<int> gpus = o.gpus;
  if (gpus.empty()) {
    if (cluster.nodes.empty() || cluster.nodes[0].empty()) throw ConfigError("netbench: the cluster has no GPUs");
    gpus = cluster.nodes[0];
  }
  if (gpus.size() < 2) throw ConfigError("netbench: a group needs at least 2 GPUs");
  if (!(o.min_bytes > 0) || o.max_bytes < o.min_bytes) throw ConfigError("netbench: need 0 < min size <= max size");
  auto engine = make_engine();
  Platform platform(cluster);
  std::vector<NetbenchRow> rows;
  const int n = static_cast<int>(gpus.size());
  sg4::Actor::create("netbench", platform.gpu_host(gpus[0]), [&] {
    for (CollKind kind : o.kinds) {
      std::vector<plan::CollectiveAlgo> algos = {plan::CollectiveAlgo::kAuto};
      if (o.every_algorithm)
        for (auto a : {plan::CollectiveAlgo::kRing, plan::CollectiveAlgo::kNvls, plan::CollectiveAlgo::kHierarchical,
                       plan::CollectiveAlgo::kTree, plan::CollectiveAlgo::kDirect}) {
          Collective probe;
          probe.kind = kind;
          probe.gpus = gpus;
          probe.bytes = o.min_bytes;
          if (applicable(probe, a, platform.routes())) algos.push_back(a);
        }
      // Only one explicit algorithm: the auto row says the same thing.
      if (algos.size() == 2) algos.erase(algos.begin() + 1);
      for (auto a : algos) {
        for (double S = o.min_bytes; S <= o.max_bytes * (1 + 1e-12); S *= 2) {
          Collective c;
          c.kind = kind;
          c.gpus = gpus;
          c.bytes = S;
          c.algo = a;
          c.efficiency = o.efficiency;
          const FlowSet fs = plan_collective(c, platform.routes());
          NetbenchRow r;
          r.kind = kind;
          r.algo = a == plan::CollectiveAlgo::kAuto ? "auto:" + algo_name(fs.algo) : algo_name(a);
          r.bytes = S;
          FlowStats st;
          r.time_s = run_flows(platform, fs, &st);
          r.flows = st.flows;
          r.algbw_Bps = r.time_s > 0 ? S / r.time_s : 0;
          r.busbw_Bps = r.algbw_Bps * bus_factor(kind, n);
          rows.push_back(r);
        }
      }
    }
  });
  engine->run();
  return rows;
}

std::string netbench_csv(const std::vector<NetbenchRow>& rows) {
  std::string out = "collective,algorithm,bytes,time_s,algbw_GBps,busbw_GBps,flows\n";
  for (const auto& r : rows)
    out += to_string(r.kind) + "," + r.algo + "," + num(r.bytes, "%.0f") + "," + num(r.time_s) + "," +
           num(r.algbw_Bps / 1e9) + "," + num(r.busbw_Bps / 1e9) + "," + std::to_string(r.flows) + "\n";
  return out;
}

namespace {

struct Series {
  std::string key;
  bool automatic = false;
  std::vector<NetbenchRow> rows;
};

// One chart panel: x = log2(size); y = busbw (linear, GB/s) or time (log10, us).
void panel(std::ostringstream& s, const std::vector<Series>& series, const std::vector<NetbenchReference>& refs,
           bool time_axis, double top, double xmin, double xmax) {
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  const double W = 900, H = 440, L = 70, R = 250, T = top + 20, B = 50;
  const double pw = W - L - R, ph = H - T + top - B;
  auto yval = [&](const NetbenchRow& r) {
    return time_axis ? std::log10(std::max(r.time_s, 1e-9) * 1e6) : r.busbw_Bps / 1e9;
  };
  double ymin = time_axis ? 1e300 : 0, ymax = time_axis ? -1e300 : 1;
  for (const auto& sr : series)
    for (const auto& r : sr.rows) {
      ymax = std::max(ymax, yval(r));
      if (time_axis) ymin = std::min(ymin, yval(r));
    }
  if (!time_axis)
    for (const auto& ref : refs) ymax = std::max(ymax, ref.busbw_Bps / 1e9);
  if (time_axis) {
    ymin = std::floor(ymin);
    ymax = std::max(ymin + 1, std::ceil(ymax));
  } else {
    const double step = std::pow(10.0, std::floor(std::log10(ymax)));
    ymax = std::ceil(ymax / step * 1.05) * step;
  }
  auto px = [&](double x) { return L + (x - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double y) { return T + ph - (y - ymin) / (ymax - ymin) * ph; };
  const int ticks = time_axis ? static_cast<int>(ymax - ymin) : 5;
  for (int i = 0; i <= ticks; ++i) {
    const double y = ymin + (ymax - ymin) * i / ticks;
    const std::string label = time_axis ? num(std::pow(10.0, y), "%g") : num(y, "%.0f");
    s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << num(py(y)) << "\" y2=\"" << num(py(y))
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << num(py(y) + 4) << "\" text-anchor=\"end\">"
      << label << "</text>\n";
  }
  for (int x = static_cast<int>(std::ceil(xmin)); x <= static_cast<int>(xmax); x += 3) {
    const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    const std::string label = std::to_string(1 << (x % 10)) + " " + unit[std::min(4, x / 10)];
    s << "<line x1=\"" << num(px(x)) << "\" x2=\"" << num(px(x)) << "\" y1=\"" << T << "\" y2=\"" << T + ph
      << "\" stroke=\"#eee\"/>\n<text x=\"" << num(px(x)) << "\" y=\"" << T + ph + 18 << "\" text-anchor=\"middle\">"
      << label << "</text>\n";
  }
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << L + pw / 2 << "\" y=\"" << T + ph + 38
    << "\" text-anchor=\"middle\">message size (nccl-tests S)</text>\n";
  s << "<text transform=\"translate(18," << T + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << (time_axis ? "time (us, log scale)" : "busbw (GB/s)") << "</text>\n";
  // Per-algorithm lines first, the automatic choice (dashed) on top; colours and legend follow the series order.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t k = 0; k < series.size(); ++k) {
      const Series& sr = series[k];
      if (sr.automatic != (pass == 1)) continue;
      const char* color = kColors[k % 10];
      const std::string dash = sr.automatic ? " stroke-dasharray=\"7 4\"" : "";
      const std::string width = sr.automatic ? "3" : "2";
      s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"" << width << "\"" << dash
        << " points=\"";
      for (const auto& r : sr.rows) s << num(px(std::log2(r.bytes)), "%.1f") << "," << num(py(yval(r)), "%.1f") << " ";
      s << "\"/>\n";
      const double ly = T + 10 + 18 * k;
      s << "<line x1=\"" << L + pw + 15 << "\" x2=\"" << L + pw + 40 << "\" y1=\"" << ly << "\" y2=\"" << ly
        << "\" stroke=\"" << color << "\" stroke-width=\"" << width << "\"" << dash << "/>\n<text x=\"" << L + pw + 46
        << "\" y=\"" << ly + 4 << "\">" << sr.key << "</text>\n";
    }
  }
  if (!time_axis)
    for (const auto& ref : refs) {
      const double y = py(ref.busbw_Bps / 1e9);
      s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << num(y) << "\" y2=\"" << num(y)
        << "\" stroke=\"black\" stroke-width=\"1\" stroke-dasharray=\"2 3\"/>\n<text x=\"" << L + 8 << "\" y=\""
        << num(y - 4) << "\" font-size=\"11\">" << ref.label << " (" << num(ref.busbw_Bps / 1e9, "%.0f")
        << " GB/s)</text>\n";
    }
}

}  // namespace

std::string netbench_svg(const std::vector<NetbenchRow>& rows, const std::string& title,
                         const std::vector<NetbenchReference>& refs) {
  // Series per (collective, algorithm); the automatic choice is dashed (it runs over the per-algorithm lines).
  std::vector<Series> series;
  std::map<std::string, size_t> index;
  double xmin = 1e300, xmax = -1e300;
  for (const auto& r : rows) {
    const bool automatic = r.algo.rfind("auto:", 0) == 0;
    const std::string key = to_string(r.kind) + " " + (automatic ? std::string("auto") : r.algo);
    auto it = index.find(key);
    if (it == index.end()) {
      it = index.emplace(key, series.size()).first;
      series.push_back({key, automatic, {}});
    }
    series[it->second].rows.push_back(r);
    xmin = std::min(xmin, std::log2(r.bytes));
    xmax = std::max(xmax, std::log2(r.bytes));
  }
  if (rows.empty()) xmin = 0, xmax = 1;
  if (xmax <= xmin) xmax = xmin + 1;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"910\" font-family=\"sans-serif\" "
       "font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"70\" y=\"24\" font-size=\"15\">" << title << "</text>\n";
  panel(s, series, refs, false, 20, xmin, xmax);
  panel(s, series, refs, true, 460, xmin, xmax);
  s << "</svg>\n";
  return s.str();
}

}  // namespace parasol::sim

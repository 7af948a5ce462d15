#include "sim/netbench.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "core/common/error.hpp"
#include "sim/flows.hpp"
#include "sim/platform.hpp"

namespace sg4 = simgrid::s4u;

namespace parasol::sim {

namespace {

std::string num(double v, const char* fmt = "%.9g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

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

std::string netbench_svg(const std::vector<NetbenchRow>& rows, const std::string& title) {
  // One line per (collective, algorithm); x = log2(size), y = busbw in GB/s.
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  std::vector<std::string> order;
  double xmin = 1e300, xmax = -1e300, ymax = 1;
  for (const auto& r : rows) {
    std::string algo = r.algo.rfind("auto:", 0) == 0 ? "auto" : r.algo;
    const std::string key = to_string(r.kind) + " " + algo;
    if (!series.count(key)) order.push_back(key);
    const double x = std::log2(r.bytes), y = r.busbw_Bps / 1e9;
    series[key].emplace_back(x, y);
    xmin = std::min(xmin, x);
    xmax = std::max(xmax, x);
    ymax = std::max(ymax, y);
  }
  if (rows.empty()) xmin = 0, xmax = 1;
  if (xmax <= xmin) xmax = xmin + 1;
  const double step = std::pow(10.0, std::floor(std::log10(ymax)));
  ymax = std::ceil(ymax / step * 1.05) * step;
  const double W = 900, H = 560, L = 70, R = 230, T = 40, B = 60;
  const double pw = W - L - R, ph = H - T - B;
  auto px = [&](double x) { return L + (x - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double y) { return T + ph - y / ymax * ph; };
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << L << "\" y=\"24\" font-size=\"15\">" << title << "</text>\n";
  for (int i = 0; i <= 5; ++i) {
    const double y = ymax * i / 5;
    s << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << num(py(y)) << "\" y2=\"" << num(py(y))
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << L - 6 << "\" y=\"" << num(py(y) + 4) << "\" text-anchor=\"end\">"
      << num(y, "%.0f") << "</text>\n";
  }
  for (int x = static_cast<int>(std::ceil(xmin)); x <= static_cast<int>(xmax); x += 3) {
    const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    const std::string label = std::to_string(1 << (x % 10)) + " " + unit[std::min(4, x / 10)];
    s << "<line x1=\"" << num(px(x)) << "\" x2=\"" << num(px(x)) << "\" y1=\"" << T << "\" y2=\"" << T + ph
      << "\" stroke=\"#eee\"/>\n<text x=\"" << num(px(x)) << "\" y=\"" << T + ph + 18
      << "\" text-anchor=\"middle\">" << label << "</text>\n";
  }
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  s << "<text x=\"" << L + pw / 2 << "\" y=\"" << H - 15 << "\" text-anchor=\"middle\">message size (nccl-tests S)</text>\n";
  s << "<text transform=\"translate(18," << T + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">busbw (GB/s)</text>\n";
  int k = 0;
  for (const auto& key : order) {
    const char* color = kColors[k % 10];
    const char* dash = (k / 10) % 2 ? " stroke-dasharray=\"6 3\"" : "";
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\"" << dash << " points=\"";
    for (auto [x, y] : series[key]) s << num(px(x), "%.1f") << "," << num(py(y), "%.1f") << " ";
    s << "\"/>\n";
    const double ly = T + 10 + 18 * k;
    s << "<line x1=\"" << L + pw + 15 << "\" x2=\"" << L + pw + 40 << "\" y1=\"" << ly << "\" y2=\"" << ly
      << "\" stroke=\"" << color << "\" stroke-width=\"2\"" << dash << "/>\n<text x=\"" << L + pw + 46 << "\" y=\""
      << ly + 4 << "\">" << key << "</text>\n";
    ++k;
  }
  s << "</svg>\n";
  return s.str();
}

}  // namespace parasol::sim

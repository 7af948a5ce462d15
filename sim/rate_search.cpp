// The rate search (rate_search.hpp): bracketing, bisection, the curve as CSV and SVG.
#include "sim/rate_search.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/common/units.hpp"

namespace parasol::sim {

RateSearch search_max_rate(const spec::Scenario& s, const plan::Plan& plan, double base_rate_rps, uint64_t seed,
                           const RateSearchOptions& o) {
  RateSearch out;
  out.base_rate_rps = base_rate_rps;
  out.requests = o.requests;
  int runs = 0;
  // The verdict at a factor (nullopt: the simulation failed; its error is the note).
  auto meets = [&](double scale) -> std::optional<bool> {
    RatePoint p;
    p.rate_scale = scale;
    p.rate_rps = base_rate_rps * scale;
    p.sim = simulate_isolated(s, plan, o.requests, seed, scale, /*replace_cap=*/true);
    ++runs;
    out.curve.push_back(p);
    if (!p.sim.ok) {
      out.note = "the simulation at " + format_number("%.4g", p.rate_rps) + " req/s failed: " + p.sim.error;
      return std::nullopt;
    }
    return p.sim.meets_slo;
  };
  double lo = 0, hi = 0;  // factors: lo met the SLOs, hi missed them (0: not found yet)
  auto first = meets(1.0);
  if (first) {
    if (*first) {
      lo = 1;
      for (double f = 2; f <= o.max_scale && runs < o.max_simulations; f *= 2) {
        const auto m = meets(f);
        if (!m) break;
        if (!*m) {
          hi = f;
          break;
        }
        lo = f;
      }
      if (hi == 0 && out.note.empty())
        out.note = "met the SLOs up to " + format_number("%.4g", base_rate_rps * lo) + " req/s, the highest rate tried";
    } else {
      hi = 1;
      for (double f = 0.5; f >= o.min_scale && runs < o.max_simulations; f /= 2) {
        const auto m = meets(f);
        if (!m) break;
        if (*m) {
          lo = f;
          break;
        }
        hi = f;
      }
      if (lo == 0 && out.note.empty())
        out.note = "missed the SLOs down to " + format_number("%.4g", base_rate_rps * hi) + " req/s, the lowest rate tried";
    }
  }
  while (lo > 0 && hi > 0 && hi > lo * (1 + o.tolerance) && runs < o.max_simulations) {
    const double mid = std::sqrt(lo * hi);
    const auto m = meets(mid);
    if (!m) break;
    (*m ? lo : hi) = mid;
  }
  if (lo > 0 && hi > 0 && hi > lo * (1 + o.tolerance) && out.note.empty())
    out.note = "stopped after " + std::to_string(runs) + " simulations";
  out.sustained_rps = base_rate_rps * lo;
  out.missed_rps = base_rate_rps * hi;
  std::sort(out.curve.begin(), out.curve.end(),
            [](const RatePoint& a, const RatePoint& b) { return a.rate_scale < b.rate_scale; });
  return out;
}

std::string rate_curve_csv(const RateSearch& r) {
  std::ostringstream s;
  s << "rate_rps,rate_scale,requests,slo_fraction,goodput_rps,ttft_p99_s,tpot_p99_s,meets_slo\n";
  for (const RatePoint& p : r.curve) {
    s << format_number("%.6g", p.rate_rps) << ',' << format_number("%.6g", p.rate_scale) << ',' << p.sim.requests
      << ',' << format_number("%.6g", p.sim.slo_fraction) << ',' << format_number("%.6g", p.sim.goodput_rps) << ','
      << format_number("%.6g", p.sim.ttft_p99_s) << ',' << format_number("%.6g", p.sim.tpot_p99_s) << ','
      << (p.sim.ok ? (p.sim.meets_slo ? "true" : "false") : "failed") << '\n';
  }
  return s.str();
}

namespace {

// One panel: a p99 latency (log scale) against the rate (linear), its SLO dashed, the sustained rate marked.
void panel(std::ostringstream& s, const RateSearch& r, bool ttft, const std::optional<double>& slo, double top,
           double xmax) {
  const double left = 80, width = 760, height = 330;
  std::vector<std::pair<double, double>> pts;  // (rate, latency s)
  double ymin = 1e300, ymax = 0;
  for (const RatePoint& p : r.curve) {
    if (!p.sim.ok) continue;
    const double y = ttft ? p.sim.ttft_p99_s : p.sim.tpot_p99_s;
    if (!(y > 0)) continue;
    pts.emplace_back(p.rate_rps, y);
    ymin = std::min(ymin, y), ymax = std::max(ymax, y);
  }
  if (slo) ymin = std::min(ymin, *slo), ymax = std::max(ymax, *slo);
  if (!(ymax > 0)) ymin = 1e-3, ymax = 1;
  const double l0 = std::floor(std::log10(ymin)), l1 = std::max(l0 + 1, std::ceil(std::log10(ymax)));
  auto X = [&](double x) { return left + width * x / xmax; };
  auto Y = [&](double y) { return top + height * (1 - (std::log10(y) - l0) / (l1 - l0)); };
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << width << "\" height=\"" << height
    << "\" fill=\"none\" stroke=\"#999\"/>\n";
  s << "<text x=\"" << left << "\" y=\"" << top - 8 << "\">" << (ttft ? "TTFT" : "TPOT")
    << " p99 (log scale) against the arrival rate</text>\n";
  for (double e = l0; e <= l1; ++e) {
    const double y = std::pow(10.0, e);
    s << "<line x1=\"" << left << "\" x2=\"" << left + width << "\" y1=\"" << Y(y) << "\" y2=\"" << Y(y)
      << "\" stroke=\"#eee\"/><text x=\"" << left - 6 << "\" y=\"" << Y(y) + 4 << "\" text-anchor=\"end\">"
      << format_time(y) << "</text>\n";
  }
  for (int k = 0; k <= 5; ++k) {
    const double x = xmax * k / 5;
    s << "<text x=\"" << X(x) << "\" y=\"" << top + height + 16 << "\" text-anchor=\"middle\">"
      << format_number("%.3g", x) << "</text>\n";
  }
  s << "<text x=\"" << left + width / 2 << "\" y=\"" << top + height + 34
    << "\" text-anchor=\"middle\">arrival rate (req/s)</text>\n";
  if (slo)
    s << "<line x1=\"" << left << "\" x2=\"" << left + width << "\" y1=\"" << Y(*slo) << "\" y2=\"" << Y(*slo)
      << "\" stroke=\"#c33\" stroke-dasharray=\"6 4\"/><text x=\"" << left + width - 4 << "\" y=\"" << Y(*slo) - 5
      << "\" text-anchor=\"end\" fill=\"#c33\">SLO " << format_time(*slo) << "</text>\n";
  if (r.sustained_rps > 0)
    s << "<line x1=\"" << X(r.sustained_rps) << "\" x2=\"" << X(r.sustained_rps) << "\" y1=\"" << top << "\" y2=\""
      << top + height << "\" stroke=\"#393\" stroke-dasharray=\"3 3\"/>\n";
  s << "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"";
  for (const auto& [x, y] : pts) s << X(x) << ',' << Y(y) << ' ';
  s << "\"/>\n";
  for (const RatePoint& p : r.curve) {
    const double y = ttft ? p.sim.ttft_p99_s : p.sim.tpot_p99_s;
    if (!p.sim.ok || !(y > 0)) continue;
    s << "<circle cx=\"" << X(p.rate_rps) << "\" cy=\"" << Y(y) << "\" r=\"3.5\" fill=\""
      << (p.sim.meets_slo ? "#393" : "#c33") << "\"><title>" << format_number("%.4g", p.rate_rps) << " req/s: "
      << format_time(y) << "</title></circle>\n";
  }
}

}  // namespace

std::string rate_curve_svg(const RateSearch& r, const spec::Slo& slo, const std::string& title) {
  double xmax = 0;
  for (const RatePoint& p : r.curve) xmax = std::max(xmax, p.rate_rps);
  xmax = xmax > 0 ? 1.05 * xmax : 1;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"860\" font-family=\"sans-serif\" "
       "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"80\" y=\"24\" font-size=\"15\">" << title << "</text>\n";
  s << "<text x=\"80\" y=\"44\">sustained within the SLOs: " << format_number("%.4g", r.sustained_rps)
    << " req/s (green: met, red: missed; " << r.requests << " requests per simulated rate)</text>\n";
  panel(s, r, true, slo.ttft_p99_s, 80, xmax);
  panel(s, r, false, slo.tpot_p99_s, 480, xmax);
  s << "</svg>\n";
  return s.str();
}

}  // namespace parasol::sim

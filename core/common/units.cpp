#include "core/common/units.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace parasol {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "1.5e3 GB/s" into 1500 and "GB/s". Returns false when there is no leading number.
bool split_number(std::string_view text, double& value, std::string_view& unit) {
  text = trim(text);
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.' || text[i] == '+' ||
                             text[i] == '-' || text[i] == 'e' || text[i] == 'E')) {
    // Stop at an 'e'/'E' that does not start an exponent (e.g. "5 EB" is fine; "5e" is not a number).
    if ((text[i] == 'e' || text[i] == 'E') &&
        !(i + 1 < text.size() && (std::isdigit(static_cast<unsigned char>(text[i + 1])) || text[i + 1] == '-' ||
                                  text[i + 1] == '+')))
      break;
    ++i;
  }
  if (i == 0) return false;
  auto num = text.substr(0, i);
  auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), value);
  if (ec != std::errc() || ptr != num.data() + num.size() || !std::isfinite(value)) return false;
  unit = trim(text.substr(i));
  return true;
}

// Returns the multiplier of an SI/binary prefix at the start of `unit` and strips it. Longest match first.
double take_prefix(std::string_view& unit) {
  static constexpr std::array<std::pair<std::string_view, double>, 12> kPrefixes{{
      {"Ki", 1024.0},
      {"Mi", 1048576.0},
      {"Gi", 1073741824.0},
      {"Ti", 1099511627776.0},
      {"Pi", 1125899906842624.0},
      {"k", 1e3},
      {"K", 1e3},
      {"M", 1e6},
      {"G", 1e9},
      {"T", 1e12},
      {"P", 1e15},
      {"E", 1e18},
  }};
  for (const auto& [p, m] : kPrefixes) {
    if (unit.size() > p.size() && unit.substr(0, p.size()) == p) {
      unit.remove_prefix(p.size());
      return m;
    }
  }
  return 1.0;
}

std::optional<double> parse_with(std::string_view unit, Dimension d) {
  // Time units have their own small-prefix table.
  if (d == Dimension::kTime) {
    static constexpr std::array<std::pair<std::string_view, double>, 9> kTime{{{"s", 1.0},
                                                                              {"ms", 1e-3},
                                                                              {"us", 1e-6},
                                                                              {"µs", 1e-6},
                                                                              {"ns", 1e-9},
                                                                              {"min", 60.0},
                                                                              {"h", 3600.0},
                                                                              {"sec", 1.0},
                                                                              {"ps", 1e-12}}};
    for (const auto& [u, m] : kTime)
      if (unit == u) return m;
    return std::nullopt;
  }
  if (d == Dimension::kCount) {
    if (unit.empty()) return 1.0;
    std::string_view u = unit;
    double m = take_prefix(u);
    if (u.empty() || (m != 1.0 && u == "")) return m;
    return std::nullopt;
  }
  std::string_view u = unit;
  double m = take_prefix(u);
  switch (d) {
    case Dimension::kBytes:
      if (u == "B") return m;
      if (u == "b" || u == "bit") return m / 8.0;
      return std::nullopt;
    case Dimension::kBandwidth:
      if (u == "B/s" || u == "Bps") return m;
      if (u == "b/s" || u == "bps" || u == "bit/s") return m / 8.0;
      return std::nullopt;
    case Dimension::kFlopRate:
      if (u == "FLOP/s" || u == "FLOPS" || u == "flop/s" || u == "OP/s" || u == "OPS") return m;
      return std::nullopt;
    case Dimension::kPower:
      if (u == "W") return m;
      return std::nullopt;
    case Dimension::kFrequency:
      if (u == "Hz") return m;
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

std::string fmt(double v, const char* unit) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g %s", v, unit);
  return buf;
}

std::string scaled(double v, const char* const* units, int n, double base) {
  int i = 0;
  while (i + 1 < n && std::fabs(v) >= base) {
    v /= base;
    ++i;
  }
  return fmt(v, units[i]);
}

}  // namespace

std::string dimension_example(Dimension d) {
  switch (d) {
    case Dimension::kBytes:
      return "a size like '80 GiB' or '512 MB'";
    case Dimension::kBandwidth:
      return "a bandwidth like '450 GB/s' or '400 Gb/s'";
    case Dimension::kTime:
      return "a time like '1.5 us' or '2 ms'";
    case Dimension::kFlopRate:
      return "a rate like '989 TFLOP/s'";
    case Dimension::kPower:
      return "a power like '700 W'";
    case Dimension::kCount:
      return "a count like '8' or '1.5 M'";
    case Dimension::kFrequency:
      return "a frequency like '1.98 GHz'";
  }
  return "a quantity";
}

std::optional<double> parse_quantity(std::string_view text, Dimension d) {
  double value = 0;
  std::string_view unit;
  if (!split_number(text, value, unit)) return std::nullopt;
  if (unit.empty() && d != Dimension::kCount) return std::nullopt;  // a unit is required
  auto m = parse_with(unit, d);
  if (!m) return std::nullopt;
  return value * *m;
}

std::string format_bytes(double bytes) {
  static const char* const kU[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled(bytes, kU, 6, 1024.0);
}
std::string format_bandwidth(double bps) {
  static const char* const kU[] = {"B/s", "kB/s", "MB/s", "GB/s", "TB/s", "PB/s"};
  return scaled(bps, kU, 6, 1000.0);
}
std::string format_flop_rate(double f) {
  static const char* const kU[] = {"FLOP/s", "kFLOP/s", "MFLOP/s", "GFLOP/s", "TFLOP/s", "PFLOP/s", "EFLOP/s"};
  return scaled(f, kU, 7, 1000.0);
}
std::string format_count(double n) {
  static const char* const kU[] = {"", "k", "M", "B", "T"};
  return scaled(n, kU, 5, 1000.0);
}
std::string format_number(const char* printf_format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, printf_format, v);
  return buf;
}
std::string format_time(double s) {
  if (s == 0) return "0 s";
  double a = std::fabs(s);
  if (a >= 1.0) return fmt(s, "s");
  if (a >= 1e-3) return fmt(s * 1e3, "ms");
  if (a >= 1e-6) return fmt(s * 1e6, "us");
  return fmt(s * 1e9, "ns");
}

}  // namespace parasol

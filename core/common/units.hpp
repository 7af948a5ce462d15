// Physical quantities written as strings in our YAML ("450 GB/s", "80 GiB", "1.5 us", "989 TFLOP/s", "700 W") parsed
// once into SI doubles: bytes, bytes/s, seconds, FLOP/s, watts. Decimal prefixes (k, M, G, T, P) are powers of 1000,
// binary ones (Ki, Mi, Gi, Ti) powers of 1024; "b" (bits) is an eighth of "B" (bytes), e.g. "400 Gb/s" = 50e9 B/s.
// A bare number where a unit is required is an error. Pure functions, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace parasol {

enum class Dimension { kBytes, kBandwidth, kTime, kFlopRate, kPower, kCount, kFrequency };

// Human name of a dimension with example units, for error messages ("a bandwidth like '450 GB/s'").
std::string dimension_example(Dimension d);

// Parses `text` as a quantity of dimension `d`. Returns nullopt (never throws) when the text is not such a quantity.
std::optional<double> parse_quantity(std::string_view text, Dimension d);

// Formats an SI value with a readable unit: format_bytes(80*2^30) = "80 GiB", format_bandwidth(4.5e11) = "450 GB/s".
std::string format_bytes(double bytes);
std::string format_bandwidth(double bytes_per_s);
std::string format_time(double seconds);
std::string format_flop_rate(double flops_per_s);
std::string format_count(double n);  // 8.03e9 -> "8.03 B"
// One number through a printf format with one double conversion, e.g. format_number("%.4g", v); locale-independent
// for the "C" locale the process runs in.
std::string format_number(const char* printf_format, double v);

}  // namespace parasol

// Fitting the cost model to measured tables (fitting.hpp): the AIConfigurator folder mapping, the seeded held-out
// split, error statistics and the NLopt fit of one family's parameters.
#include "core/cost/fitting.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlopt.hpp>
#include <optional>

#include "core/common/units.hpp"

#include "core/common/error.hpp"

namespace parasol::cost {
namespace {

namespace fs = std::filesystem;

// FNV-1a over the bytes, then a splitmix64 finaliser so that nearby keys spread over the whole range.
uint64_t hash_text(uint64_t h, const std::string& s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  h ^= 0xff;  // separator: ("ab","c") and ("a","bc") differ
  h *= 1099511628211ull;
  return h;
}

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t sample_hash(const Sample& s, uint64_t seed) {
  uint64_t h = 14695981039346656037ull ^ mix(seed);
  h = hash_text(h, s.family);
  h = hash_text(h, s.gpu);
  h = hash_text(h, s.key);
  return mix(h);
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  const double f = pos - static_cast<double>(lo);
  return v[lo] * (1 - f) + v[hi] * f;
}

// Where a table of `src` lives: the framework folder, else an nccl-*/ folder next to it (collectives).
std::string table_path(const AicSource& src, const std::string& table) {
  fs::path p = fs::path(src.dir) / src.framework / table;
  if (fs::exists(p)) return p.string();
  std::error_code ec;
  std::vector<fs::path> nccl;
  for (const auto& e : fs::directory_iterator(src.dir, ec))
    if (e.is_directory() && e.path().filename().string().rfind("nccl-", 0) == 0) nccl.push_back(e.path());
  std::sort(nccl.begin(), nccl.end());
  for (auto it = nccl.rbegin(); it != nccl.rend(); ++it)  // newest NCCL first
    if (fs::exists(*it / table)) return (*it / table).string();
  return "";
}

// The fit's coordinates: log of the value for positive ranges wider than 4x (scale parameters: a time, a
// half-saturation size), the value itself otherwise (fractions).
struct Coord {
  bool log = false;
  double lo = 0, hi = 1;
  double to_x(double v) const { return log ? std::log(v) : v; }
  double to_value(double x) const { return log ? std::exp(x) : x; }
};

}  // namespace

bool held_out(const Sample& s, uint64_t seed, double fraction) {
  const double u = static_cast<double>(sample_hash(s, seed) >> 11) * 0x1.0p-53;
  return u < fraction;
}

std::vector<AicSource> aic_sources(const std::string& root) {
  struct Map {
    const char* dir;
    const char* gpu;
    const char* framework;
  };
  // The framework whose kernel tables calibrate each GPU (../shared/calibration/README.md); H100 also has
  // trtllm-1.3.0rc20, not the default.
  static const Map kMap[] = {{"a100_sxm", "a100-sxm-80gb", "vllm-0.14.0"},
                             {"h100_sxm", "h100-sxm", "vllm-0.24.0"},
                             {"h200_sxm", "h200-sxm", "vllm-0.24.0"},
                             {"b200_sxm", "b200", "vllm-0.24.0"},
                             {"gb200", "gb200", "vllm-0.24.0"}};
  std::vector<AicSource> out;
  for (const auto& m : kMap) {
    fs::path d = fs::path(root) / m.dir;
    if (fs::is_directory(d)) out.push_back({d.string(), m.gpu, m.framework});
  }
  return out;
}

std::vector<Sample> load_samples(const AicSource& src, const Family& family) {
  std::vector<Sample> out;
  if (!family.read) return out;
  for (const auto& t : family.tables) {
    const std::string path = table_path(src, t);
    if (path.empty()) continue;
    family.read(CsvTable::load(path), src.gpu, out);
  }
  for (auto& s : out)
    if (s.family.empty()) s.family = family.name;
  return out;
}

ErrorStats error_stats(const Family& family, const std::vector<Sample>& samples, const spec::Gpu& gpu) {
  std::vector<double> abs_err, err;
  abs_err.reserve(samples.size());
  err.reserve(samples.size());
  for (const auto& s : samples) {
    if (!(s.time_s > 0)) continue;
    double p = family.predict(s, gpu);
    if (!std::isfinite(p)) p = std::numeric_limits<double>::max();
    const double e = (p - s.time_s) / s.time_s;
    err.push_back(e);
    abs_err.push_back(std::fabs(e));
  }
  ErrorStats st;
  st.n = err.size();
  st.median = quantile(abs_err, 0.5);
  st.p90 = quantile(abs_err, 0.9);
  st.bias = quantile(err, 0.5);
  return st;
}

std::pair<std::vector<Sample>, std::vector<Sample>> split(const std::vector<Sample>& samples, uint64_t seed) {
  std::pair<std::vector<Sample>, std::vector<Sample>> out;
  for (const auto& s : samples) (held_out(s, seed) ? out.second : out.first).push_back(s);
  return out;
}

void copy_params(const Family& family, const spec::Gpu& from, spec::Gpu& to) {
  spec::Gpu src = from;  // FitParam::field takes a mutable Gpu
  for (const auto& p : family.params) p.field(to) = p.field(src);
  if (family.copy_structure) family.copy_structure(from, to);
}

std::vector<Sample> subsample(const std::vector<Sample>& samples, size_t max_n, uint64_t seed) {
  if (samples.size() <= max_n) return samples;
  std::vector<std::pair<uint64_t, size_t>> order;
  order.reserve(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) order.emplace_back(sample_hash(samples[i], seed ^ 0x5eed5eedull), i);
  std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(max_n), order.end());
  order.resize(max_n);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  std::vector<Sample> out;
  out.reserve(max_n);
  for (const auto& [h, i] : order) out.push_back(samples[i]);
  return out;
}

FitResult fit_family(const Family& family, const std::vector<Sample>& samples, const spec::Gpu& start, uint64_t seed) {
  auto [train, test] = split(samples, seed);
  FitResult r;
  r.gpu = start;
  if (family.params.empty() || train.empty()) {
    r.train = error_stats(family, train, r.gpu);
    r.held_out = error_stats(family, test, r.gpu);
    for (const auto& p : family.params) r.values.emplace_back(p.name, p.field(r.gpu));
    r.fitted.assign(family.params.size(), false);
    return r;
  }
  const std::vector<Sample> fit_set = subsample(train, kFitMaxSamples, seed);

  const size_t dim = family.params.size();
  std::vector<Coord> coords(dim);
  std::vector<double> x(dim), lo(dim), hi(dim);
  for (size_t i = 0; i < dim; ++i) {
    const FitParam& p = family.params[i];
    Coord& c = coords[i];
    c.log = p.lo > 0 && p.hi > 4 * p.lo;
    c.lo = p.lo, c.hi = p.hi;
    const double v = std::clamp(p.field(r.gpu), p.lo, p.hi);
    x[i] = c.to_x(v);
    lo[i] = c.to_x(p.lo);
    hi[i] = c.to_x(p.hi);
  }

  // A parameter that moves no prediction of the fit set between its bounds is not the data's to set.
  std::vector<bool> depends(dim, false);
  {
    spec::Gpu g = r.gpu;
    std::vector<double> base(fit_set.size());
    for (size_t s = 0; s < fit_set.size(); ++s) base[s] = family.predict(fit_set[s], g);
    for (size_t i = 0; i < dim; ++i) {
      const FitParam& p = family.params[i];
      const double v0 = p.field(g);
      for (double v : {p.lo, p.hi}) {
        p.field(g) = v;
        for (size_t s = 0; s < fit_set.size() && !depends[i]; ++s)
          depends[i] = family.predict(fit_set[s], g) != base[s];
      }
      p.field(g) = v0;
    }
  }

  struct Ctx {
    const Family* family;
    const std::vector<Sample>* set;
    const std::vector<Coord>* coords;
    spec::Gpu gpu;
    int evals = 0;
  } ctx{&family, &fit_set, &coords, r.gpu, 0};

  auto objective = [](unsigned n, const double* xv, double* grad, void* data) -> double {
    (void)grad;  // derivative-free
    auto* c = static_cast<Ctx*>(data);
    for (unsigned i = 0; i < n; ++i) {
      const Coord& co = (*c->coords)[i];
      c->family->params[i].field(c->gpu) = std::clamp(co.to_value(xv[i]), co.lo, co.hi);
    }
    ++c->evals;
    double sum = 0;
    for (const auto& s : *c->set) {
      const double p = c->family->predict(s, c->gpu);
      // A non-positive or non-finite prediction is a model failure at these parameters: a large, finite penalty
      // keeps the simplex moving away from it.
      sum += (p > 0 && std::isfinite(p)) ? std::fabs(std::log(p / s.time_s)) : 50.0;
    }
    return sum / static_cast<double>(c->set->size());
  };

  // Two rounds of the subplex search: the second restarts the simplex at the first's optimum, which recovers from
  // the early collapse simplex methods show on the non-smooth mean |log| objective. Subplex is deterministic.
  double best = std::numeric_limits<double>::infinity();
  std::vector<double> best_x = x;
  nlopt::srand(seed);  // the local searches draw nothing, but pin NLopt's generator all the same
  for (int round = 0; round < 2; ++round) {
    nlopt::opt opt(nlopt::LN_SBPLX, static_cast<unsigned>(dim));
    opt.set_lower_bounds(lo);
    opt.set_upper_bounds(hi);
    opt.set_min_objective(objective, &ctx);
    opt.set_xtol_rel(1e-5);
    opt.set_ftol_abs(1e-7);
    opt.set_maxeval(static_cast<int>(400 * dim));
    std::vector<double> step(dim);
    for (size_t i = 0; i < dim; ++i) step[i] = std::max((hi[i] - lo[i]) * (round == 0 ? 0.1 : 0.02), 1e-9);
    opt.set_initial_step(step);
    std::vector<double> xr = best_x;
    double f = 0;
    try {
      opt.optimize(xr, f);
    } catch (const nlopt::roundoff_limited&) {
      f = objective(static_cast<unsigned>(dim), xr.data(), nullptr, &ctx);
    } catch (const std::runtime_error&) {
      // NLopt's generic failure: keep the best point so far.
      f = objective(static_cast<unsigned>(dim), xr.data(), nullptr, &ctx);
    }
    if (f < best) best = f, best_x = xr;
  }

  for (size_t i = 0; i < dim; ++i) {
    const FitParam& p = family.params[i];
    const double v = depends[i] ? std::clamp(coords[i].to_value(best_x[i]), p.lo, p.hi) : p.field(r.gpu);
    p.field(r.gpu) = v;
    r.values.emplace_back(p.name, v);
  }
  r.fitted = depends;
  r.evaluations = ctx.evals;
  r.train = error_stats(family, train, r.gpu);
  r.held_out = error_stats(family, test, r.gpu);
  return r;
}

}  // namespace parasol::cost

// ---------------------------------------------------------------------------------------------------------------------
// The accuracy report.

namespace parasol::cost {

std::vector<AccuracyRow> accuracy_report(const std::string& aic_root,
                                         const std::function<spec::Gpu(const std::string&)>& gpu_of,
                                         const ReportOptions& options) {
  auto wanted = [](const std::vector<std::string>& list, const std::string& x) {
    return list.empty() || std::find(list.begin(), list.end(), x) != list.end();
  };
  std::vector<AccuracyRow> rows, cross;
  std::optional<spec::Gpu> cross_source;
  for (const AicSource& src : aic_sources(aic_root)) {
    if (!wanted(options.gpus, src.gpu)) continue;
    const spec::Gpu gpu = gpu_of(src.gpu);
    const bool is_target =
        options.cross && std::find(kCrossTargetGpus.begin(), kCrossTargetGpus.end(), src.gpu) != kCrossTargetGpus.end();
    if (is_target && !cross_source) cross_source = gpu_of(kCrossSourceGpu);
    for (const Family& family : families()) {
      if (!wanted(options.families, family.name)) continue;
      std::vector<Sample> held = split(load_samples(src, family)).second;
      if (options.max_samples > 0) held = subsample(held, options.max_samples);
      rows.push_back({src.gpu, family.name, "", error_stats(family, held, gpu)});
      if (is_target) {
        spec::Gpu g = gpu;
        copy_params(family, *cross_source, g);
        cross.push_back({src.gpu, family.name, kCrossSourceGpu, error_stats(family, held, g)});
      }
    }
  }
  rows.insert(rows.end(), cross.begin(), cross.end());
  return rows;
}

std::string format_report(const std::vector<AccuracyRow>& rows, bool markdown) {
  auto pct = [](double f) { return format_number("%.1f%%", 100 * f); };
  auto signed_pct = [](double f) { return format_number("%+.1f%%", 100 * f); };
  std::vector<std::vector<std::string>> cells;
  cells.push_back({"gpu", "family", "params", "n", "median", "p90", "bias", "verdict"});
  for (const auto& r : rows) {
    std::string verdict;
    if (r.stats.n == 0) {
      verdict = "no data";
    } else if (r.pass()) {
      verdict = "ok";
    } else {
      verdict = "FAIL";
      if (!r.median_ok()) verdict += " median";
      if (!r.p90_ok()) verdict += " p90";
    }
    cells.push_back({r.gpu, r.family, r.params_from.empty() ? "own" : r.params_from, std::to_string(r.stats.n),
                     r.stats.n ? pct(r.stats.median) : "-", r.stats.n ? pct(r.stats.p90) : "-",
                     r.stats.n ? signed_pct(r.stats.bias) : "-", verdict});
  }
  std::vector<size_t> width(cells[0].size(), 0);
  for (const auto& row : cells)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto& row = cells[i];
    for (size_t c = 0; c < row.size(); ++c) {
      const bool right = c >= 3 && c <= 6;
      std::string cell = row[c];
      const std::string pad(width[c] - cell.size(), ' ');
      if (markdown) {
        out += (c == 0 ? "| " : " | ") + (right ? pad + cell : cell + pad);
      } else {
        out += (c == 0 ? "" : "  ") + (right ? pad + cell : cell + (c + 1 < row.size() ? pad : ""));
      }
    }
    out += markdown ? " |\n" : "\n";
    if (markdown && i == 0) {
      for (size_t c = 0; c < row.size(); ++c) {
        const bool right = c >= 3 && c <= 6;
        out += (c == 0 ? "| " : " | ") + std::string(width[c] - (right ? 1 : 0), '-') + (right ? ":" : "");
      }
      out += " |\n";
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing fitted values into a GPU YAML: a line editor, so that comments and layout survive (a YAML emitter would
// drop them).

std::string yaml_value(const FitParam& p, double value) {
  if (!p.time) return format_number("%.6g", value);
  const double a = std::fabs(value);
  if (a == 0) return "\"0 us\"";
  if (a < 1e-6) return "\"" + format_number("%.4g", value * 1e9) + " ns\"";
  if (a < 1e-3) return "\"" + format_number("%.4g", value * 1e6) + " us\"";
  if (a < 1) return "\"" + format_number("%.4g", value * 1e3) + " ms\"";
  return "\"" + format_number("%.4g", value) + " s\"";
}

namespace {

struct YamlLine {
  int indent = 0;     // leading spaces
  bool content = false;  // not blank, not a comment
  std::string key;    // "key" of "key: ..." (content lines)
  std::string rest;   // after the colon, trimmed, comment included
};

YamlLine classify(const std::string& line) {
  YamlLine y;
  size_t i = 0;
  while (i < line.size() && line[i] == ' ') ++i;
  y.indent = static_cast<int>(i);
  if (i >= line.size() || line[i] == '#' || line[i] == '\r') return y;
  y.content = true;
  size_t colon = line.find(':', i);
  if (colon == std::string::npos) return y;
  std::string key = line.substr(i, colon - i);
  while (!key.empty() && key.back() == ' ') key.pop_back();
  if (key.size() >= 2 && (key.front() == '"' || key.front() == '\'') && key.back() == key.front())
    key = key.substr(1, key.size() - 2);
  y.key = key;
  size_t r = line.find_first_not_of(' ', colon + 1);
  y.rest = r == std::string::npos ? "" : line.substr(r);
  return y;
}

// The block of a mapping key at line `at` (indent `indent`): lines (at, end) whose content is indented deeper.
size_t block_end(const std::vector<std::string>& lines, size_t at, int indent) {
  size_t end = at + 1, last_content = at;
  for (; end < lines.size(); ++end) {
    YamlLine y = classify(lines[end]);
    if (!y.content) continue;
    if (y.indent <= indent) break;
    last_content = end;
  }
  return last_content + 1;  // comments and blanks after the last child belong to what follows
}

}  // namespace

std::string update_yaml(const std::string& text, const std::vector<std::pair<std::string, std::string>>& values,
                        const std::string& comment, const std::string& file) {
  std::vector<std::string> lines;
  {
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) {
        if (pos < text.size()) lines.push_back(text.substr(pos));
        break;
      }
      lines.push_back(text.substr(pos, nl - pos));
      pos = nl + 1;
    }
  }
  const std::string tail_comment = comment.empty() ? "" : "  # " + comment;
  for (const auto& [path, value] : values) {
    std::vector<std::string> parts;
    for (size_t b = 0;;) {
      size_t dot = path.find('.', b);
      parts.push_back(path.substr(b, dot == std::string::npos ? std::string::npos : dot - b));
      if (dot == std::string::npos) break;
      b = dot + 1;
    }
    // The range [begin, end) of the current mapping and its parent's indent (-1: the document).
    size_t begin = 0, end = lines.size();
    int parent_indent = -1;
    for (size_t d = 0; d < parts.size(); ++d) {
      const bool leaf = d + 1 == parts.size();
      int child_indent = -1;
      size_t found = std::string::npos, last_content = std::string::npos;
      for (size_t i = begin; i < end; ++i) {
        YamlLine y = classify(lines[i]);
        if (!y.content || y.indent <= parent_indent) continue;
        if (child_indent < 0) child_indent = y.indent;
        if (y.indent != child_indent) continue;
        last_content = block_end(lines, i, y.indent) - 1;
        if (y.key == parts[d]) {
          found = i;
          break;
        }
      }
      const int indent = child_indent >= 0 ? child_indent : parent_indent + 2;
      const std::string pad(static_cast<size_t>(std::max(indent, 0)), ' ');
      if (found != std::string::npos) {
        YamlLine y = classify(lines[found]);
        if (leaf) {
          lines[found] = pad + parts[d] + ": " + value + tail_comment;
        } else {
          if (!y.rest.empty() && y.rest[0] != '#')
            throw ConfigError(file, static_cast<int>(found) + 1, y.indent + 1, parts[d],
                              "a block mapping (one key per line) to write into", "'" + y.rest + "'");
          begin = found + 1;
          end = block_end(lines, found, y.indent);
          parent_indent = y.indent;
        }
        continue;
      }
      // Absent: add it after the mapping's last child (or right after its parent's line).
      size_t at = last_content != std::string::npos ? last_content + 1 : begin;
      if (parent_indent < 0 && last_content == std::string::npos) at = lines.size();
      if (parent_indent < 0 && at < lines.size() && last_content != std::string::npos) at = lines.size();
      if (leaf) {
        lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(at), pad + parts[d] + ": " + value + tail_comment);
      } else {
        lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(at), pad + parts[d] + ":");
        begin = at + 1;
        end = at + 1;
        parent_indent = indent;
      }
    }
  }
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) out += lines[i] + "\n";
  if (!text.empty() && text.back() != '\n' && !out.empty()) out.pop_back();
  return out;
}

}  // namespace parasol::cost

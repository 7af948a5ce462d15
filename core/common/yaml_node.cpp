#include "core/common/yaml_node.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/common/error.hpp"

namespace parasol::yaml {
namespace {

std::string quote(const std::string& s) {
  std::string t = s.size() > 60 ? s.substr(0, 57) + "..." : s;
  return "'" + t + "'";
}

std::string join_choices(std::initializer_list<std::string_view> choices) {
  std::string s;
  for (auto c : choices) {
    if (!s.empty()) s += ", ";
    s += std::string(c);
  }
  return s;
}

}  // namespace

Node::Node(YAML::Node node, std::shared_ptr<const std::string> file, std::string path, YAML::Mark mark)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)), mark_(mark) {
  if (mark_.line < 0) mark_ = YAML::Mark();
}

Node Node::child(std::string key_text, const YAML::Node& value, const YAML::Mark& mark, bool is_index) const {
  std::string p = path_;
  if (is_index)
    p += "[" + key_text + "]";
  else
    p += (p.empty() ? "" : ".") + key_text;
  YAML::Mark m = mark;
  if (value.IsDefined() && !value.IsNull() && value.Mark().line >= 0) m = value.Mark();
  return Node(value, file_, std::move(p), m);
}

std::string Node::describe() const {
  if (!node_.IsDefined() || node_.IsNull()) return "nothing";
  if (node_.IsMap()) return "a map";
  if (node_.IsSequence()) return "a list of " + std::to_string(node_.size());
  return quote(node_.Scalar());
}

void Node::fail(const std::string& expected, const std::string& found) const {
  throw ConfigError(*file_, line(), column(), path_, expected, found.empty() ? describe() : found);
}

bool Node::has(std::string_view key) const {
  if (!node_.IsMap()) return false;
  for (const auto& kv : node_)
    if (kv.first.IsScalar() && kv.first.Scalar() == key) return true;
  return false;
}

std::optional<Node> Node::get(std::string_view key) const {
  if (!node_.IsMap()) {
    if (node_.IsDefined() && !node_.IsNull()) fail("a map");
    return std::nullopt;
  }
  for (const auto& kv : node_) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) {
      if (!kv.second.IsDefined() || kv.second.IsNull()) return std::nullopt;
      return child(std::string(key), kv.second, kv.first.Mark(), false);
    }
  }
  return std::nullopt;
}

Node Node::at(std::string_view key) const {
  if (!node_.IsMap()) fail("a map with key '" + std::string(key) + "'");
  for (const auto& kv : node_) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) {
      Node c = child(std::string(key), kv.second, kv.first.Mark(), false);
      if (!kv.second.IsDefined() || kv.second.IsNull()) c.fail("a value");
      return c;
    }
  }
  std::string p = path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  throw ConfigError(*file_, line(), column(), p, "key '" + std::string(key) + "' (required)", "it missing");
}

std::vector<std::pair<std::string, Node>> Node::entries() const {
  if (!node_.IsMap()) fail("a map");
  std::vector<std::pair<std::string, Node>> out;
  for (const auto& kv : node_) {
    if (!kv.first.IsScalar()) Node(kv.first, file_, path_, kv.first.Mark()).fail("a scalar key");
    out.emplace_back(kv.first.Scalar(), child(kv.first.Scalar(), kv.second, kv.first.Mark(), false));
  }
  return out;
}

void Node::allow_keys(std::initializer_list<std::string_view> allowed) const {
  allow_keys(std::vector<std::string>(allowed.begin(), allowed.end()));
}

void Node::allow_keys(const std::vector<std::string>& allowed) const {
  if (!node_.IsMap()) fail("a map");
  for (const auto& kv : node_) {
    const std::string k = kv.first.IsScalar() ? kv.first.Scalar() : std::string("<non-scalar>");
    if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
    std::string expected = "one of the known keys";
    std::string suggestion = closest(k, allowed);
    if (!suggestion.empty()) expected += " (did you mean '" + suggestion + "'?)";
    Node(kv.first, file_, path_.empty() ? k : path_ + "." + k, kv.first.Mark()).fail(expected, "unknown key " + quote(k));
  }
}

std::vector<Node> Node::items() const {
  if (!node_.IsSequence()) fail("a list");
  std::vector<Node> out;
  out.reserve(node_.size());
  size_t i = 0;
  for (const auto& v : node_) {
    out.push_back(child(std::to_string(i), v, v.Mark(), true));
    ++i;
  }
  return out;
}

std::string Node::as_string() const {
  if (!node_.IsScalar()) fail("a string");
  return node_.Scalar();
}

int64_t Node::as_int(int64_t min, int64_t max) const {
  if (!node_.IsScalar()) fail("an integer");
  const std::string& s = node_.Scalar();
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) {
    // Accept integral floats written like 1e6 or 4096.0.
    double d = 0;
    auto [p2, e2] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (e2 != std::errc() || p2 != s.data() + s.size() || d != std::floor(d) || std::fabs(d) > 9e18) fail("an integer");
    v = static_cast<int64_t>(d);
  }
  if (v < min || v > max) {
    std::string range = "an integer";
    if (min != INT64_MIN && max != INT64_MAX)
      range += " in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    else if (min != INT64_MIN)
      range += " >= " + std::to_string(min);
    else
      range += " <= " + std::to_string(max);
    fail(range);
  }
  return v;
}

double Node::as_double(double min, double max) const {
  if (!node_.IsScalar()) fail("a number");
  const std::string& s = node_.Scalar();
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v)) fail("a number");
  if (v < min || v > max) {
    std::ostringstream os;
    os << "a number in [" << min << ", " << max << "]";
    fail(os.str());
  }
  return v;
}

bool Node::as_bool() const {
  if (!node_.IsScalar()) fail("true or false");
  const std::string& s = node_.Scalar();
  if (s == "true" || s == "True" || s == "yes") return true;
  if (s == "false" || s == "False" || s == "no") return false;
  fail("true or false");
}

double Node::as_quantity(Dimension d, double min, double max) const {
  if (!node_.IsScalar()) fail(dimension_example(d));
  auto v = parse_quantity(node_.Scalar(), d);
  if (!v) fail(dimension_example(d));
  if (*v < min || *v > max) {
    std::ostringstream os;
    os << dimension_example(d) << " in [" << min << ", " << max << "] (SI units)";
    fail(os.str());
  }
  return *v;
}

std::string Node::as_enum(std::initializer_list<std::string_view> choices) const {
  if (!node_.IsScalar()) fail("one of: " + join_choices(choices));
  const std::string& s = node_.Scalar();
  for (auto c : choices)
    if (s == c) return s;
  std::vector<std::string> cs(choices.begin(), choices.end());
  std::string expected = "one of: " + join_choices(choices);
  std::string sug = closest(s, cs);
  if (!sug.empty()) expected += " (did you mean '" + sug + "'?)";
  fail(expected);
}

std::string Node::str_or(std::string_view key, std::string def) const {
  auto c = get(key);
  return c ? c->as_string() : def;
}
int64_t Node::integer_or(std::string_view key, int64_t def, int64_t min, int64_t max) const {
  auto c = get(key);
  return c ? c->as_int(min, max) : def;
}
double Node::number_or(std::string_view key, double def, double min, double max) const {
  auto c = get(key);
  return c ? c->as_double(min, max) : def;
}
bool Node::bool_or(std::string_view key, bool def) const {
  auto c = get(key);
  return c ? c->as_bool() : def;
}
double Node::quantity_or(std::string_view key, Dimension d, double def, double min, double max) const {
  auto c = get(key);
  return c ? c->as_quantity(d, min, max) : def;
}

Node load_string(const std::string& text, const std::string& name) {
  auto file = std::make_shared<const std::string>(name);
  try {
    YAML::Node root = YAML::Load(text);
    return Node(root, file, "", root.Mark());
  } catch (const YAML::Exception& e) {
    throw ConfigError(name, e.mark.line + 1, e.mark.column + 1, "", "valid YAML/JSON syntax", e.msg);
  }
}

Node load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, 0, "", "a readable file", "none at that path");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  // yaml-cpp does not accept tabs as indentation, which JSON writers sometimes use.
  if (text.find('\t') != std::string::npos && (path.ends_with(".json") || path.ends_with(".JSON")))
    std::replace(text.begin(), text.end(), '\t', ' ');
  return load_string(text, path);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_d <= limit ? best : std::string();
}

}  // namespace parasol::yaml

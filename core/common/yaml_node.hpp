// A checked view of a YAML (or JSON: yaml-cpp reads it too, with line numbers) document. Every accessor either returns
// a value of the expected type or throws ConfigError naming the file, line, column, key path, what was expected and
// what was found. Unknown keys are reported with a "did you mean" suggestion. All our loaders read through this class,
// so every bad-input message has the same shape.
// Thread behaviour: a Node is an immutable value; distinct Nodes may be used from distinct threads.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/common/units.hpp"

namespace parasol::yaml {

class Node {
 public:
  Node(YAML::Node node, std::shared_ptr<const std::string> file, std::string path, YAML::Mark mark);

  // The dotted key path from the document root ("cluster.nodes[2].gpu"), empty at the root.
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }
  int line() const { return mark_.line + 1; }
  int column() const { return mark_.column + 1; }
  const YAML::Node& raw() const { return node_; }

  bool is_map() const { return node_.IsMap(); }
  bool is_seq() const { return node_.IsSequence(); }
  bool is_scalar() const { return node_.IsScalar(); }
  bool is_null() const { return !node_.IsDefined() || node_.IsNull(); }

  // Maps.
  bool has(std::string_view key) const;
  Node at(std::string_view key) const;                        // missing key -> ConfigError
  std::optional<Node> get(std::string_view key) const;        // absent or null -> nullopt
  std::vector<std::pair<std::string, Node>> entries() const;  // in document order
  // Throws on the first key not in `allowed`, suggesting the closest allowed key.
  void allow_keys(std::initializer_list<std::string_view> allowed) const;
  void allow_keys(const std::vector<std::string>& allowed) const;

  // Sequences.
  std::vector<Node> items() const;

  // Scalars (type-checked; e.g. "12.5" is not an integer, "yes" is not a number).
  std::string as_string() const;
  int64_t as_int(int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  double as_double(double min = -1e308, double max = 1e308) const;
  bool as_bool() const;
  double as_quantity(Dimension d, double min = 0.0, double max = 1e308) const;
  // One of `choices`; the error lists them.
  std::string as_enum(std::initializer_list<std::string_view> choices) const;

  // Shorthands: required key then conversion.
  std::string str(std::string_view key) const { return at(key).as_string(); }
  int64_t integer(std::string_view key, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const {
    return at(key).as_int(min, max);
  }
  double number(std::string_view key, double min = -1e308, double max = 1e308) const {
    return at(key).as_double(min, max);
  }
  double quantity(std::string_view key, Dimension d, double min = 0.0, double max = 1e308) const {
    return at(key).as_quantity(d, min, max);
  }
  // Optional variants returning `def` when the key is absent.
  std::string str_or(std::string_view key, std::string def) const;
  int64_t integer_or(std::string_view key, int64_t def, int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  double number_or(std::string_view key, double def, double min = -1e308, double max = 1e308) const;
  bool bool_or(std::string_view key, bool def) const;
  double quantity_or(std::string_view key, Dimension d, double def, double min = 0.0, double max = 1e308) const;

  // Throws ConfigError at this node: "expected <expected>, found <found>". When `found` is empty, the node's own text.
  [[noreturn]] void fail(const std::string& expected, const std::string& found = {}) const;
  // The node's text as an error would quote it: "'abc'", "a map", "a list of 3", "nothing".
  std::string describe() const;

 private:
  Node child(std::string key_text, const YAML::Node& value, const YAML::Mark& mark, bool is_index) const;

  YAML::Node node_;
  std::shared_ptr<const std::string> file_;
  std::string path_;
  YAML::Mark mark_;
};

// Loads a file (YAML or JSON). A missing file or a syntax error is a ConfigError with the location.
Node load_file(const std::string& path);
// Parses text; `name` stands for the file in messages.
Node load_string(const std::string& text, const std::string& name);

// Levenshtein distance, for "did you mean".
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `word`, or empty when none is close enough to suggest.
std::string closest(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace parasol::yaml

#include "core/common/error.hpp"

namespace parasol {
namespace {
std::string format_config_error(const std::string& file, int line, int column, const std::string& key_path,
                                const std::string& expected, const std::string& found) {
  std::string s = file.empty() ? std::string("<input>") : file;
  if (line > 0) s += ":" + std::to_string(line) + ":" + std::to_string(column);
  s += ": ";
  if (!key_path.empty()) s += "key '" + key_path + "': ";
  s += "expected " + expected + ", found " + found;
  return s;
}
}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key_path, std::string expected,
                         std::string found)
    : Error(format_config_error(file, line, column, key_path, expected, found)),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_path_(std::move(key_path)),
      expected_(std::move(expected)),
      found_(std::move(found)) {}

ConfigError::ConfigError(const std::string& message) : Error(message) {}

}  // namespace parasol

// Errors of parasol. Every exception we throw derives from parasol::Error. Bad input (a config file, a CLI value)
// is a ConfigError carrying the file, line, column and key path, and what was expected vs found; the CLI maps it to
// exit code 2. Expected outcomes (an infeasible plan, a failed request) are values, never exceptions.
// Thread behaviour: plain value types, safe to copy across threads.
#pragma once

#include <stdexcept>
#include <string>

namespace parasol {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input. `what()` is one line: "file:line:col: key 'a.b': expected X, found Y".
class ConfigError : public Error {
 public:
  ConfigError(std::string file, int line, int column, std::string key_path, std::string expected, std::string found);
  // An input error with no location in a file (e.g. a CLI flag value).
  explicit ConfigError(const std::string& message);

  const std::string& file() const { return file_; }
  int line() const { return line_; }
  int column() const { return column_; }
  const std::string& key_path() const { return key_path_; }
  const std::string& expected() const { return expected_; }
  const std::string& found() const { return found_; }

 private:
  std::string file_;
  int line_ = 0;
  int column_ = 0;
  std::string key_path_;
  std::string expected_;
  std::string found_;
};

// Something in the environment is broken (a missing library, a device error, a peer that died).
class RuntimeFailure : public Error {
 public:
  using Error::Error;
};

}  // namespace parasol

// SIGINT / SIGTERM handling (signals.hpp).
#include "tools/signals.hpp"

#include <unistd.h>

#include <array>
#include <csignal>
#include <cstring>

namespace parasol::tools {
namespace {

constexpr size_t kSlots = 64;
constexpr size_t kPathMax = 4096;
std::array<std::array<char, kPathMax>, kSlots> g_paths{};
std::array<std::atomic<bool>, kSlots> g_used{};
std::atomic<int> g_stop{0};
std::atomic<int> g_graceful{0};

void say(const char* text) {
  const ssize_t r = ::write(2, text, std::strlen(text));
  (void)r;
}

extern "C" void on_signal(int sig) {
  if (g_graceful.load() > 0 && g_stop.load() == 0) {
    g_stop.store(sig);
    say(sig == SIGINT ? "\nparasol: SIGINT: no more arrivals; finishing the requests in flight, then the partial summary "
                        "(again to stop at once)\n"
                      : "\nparasol: SIGTERM: no more arrivals; finishing the requests in flight, then the partial "
                        "summary (again to stop at once)\n");
    return;
  }
  for (size_t i = 0; i < kSlots; ++i)
    if (g_used[i].load()) ::unlink(g_paths[i].data());
  say(sig == SIGINT ? "\nparasol: interrupted (SIGINT): stopped, nothing written\n"
                    : "\nparasol: terminated (SIGTERM): stopped, nothing written\n");
  ::_exit(128 + sig);
}

}  // namespace

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM}) sigaction(sig, &sa, nullptr);
}

const std::atomic<int>& stop_flag() { return g_stop; }

GracefulSection::GracefulSection() { g_graceful.fetch_add(1); }
GracefulSection::~GracefulSection() { g_graceful.fetch_sub(1); }

void register_temp_file(const std::string& path) {
  if (path.size() >= kPathMax) return;
  for (size_t i = 0; i < kSlots; ++i) {
    if (g_used[i].load()) continue;
    std::memcpy(g_paths[i].data(), path.c_str(), path.size() + 1);
    g_used[i].store(true);
    return;
  }
}

void unregister_temp_file(const std::string& path) {
  for (size_t i = 0; i < kSlots; ++i)
    if (g_used[i].load() && path == g_paths[i].data()) {
      g_used[i].store(false);
      return;
    }
}

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

}  // namespace parasol::tools

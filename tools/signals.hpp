// SIGINT and SIGTERM for the CLI. Outside a graceful section the process stops at once: the registered temporary
// files (StagedFile's *.tmp.PID) are unlinked and it exits 128 + the signal (130, 143), so an interrupted command
// leaves nothing half-written. Inside one (the simulation), the first signal only sets stop_flag(): the simulation
// stops admitting arrivals, finishes what is in flight and the command writes its summary marked partial; a second
// signal stops at once as above. Everything the handler touches is async-signal-safe (a flag, unlink, write, _exit).
#pragma once

#include <atomic>
#include <string>

namespace parasol::tools {

void install_signal_handlers();

// The signal received inside a graceful section (0: none). The simulation polls it.
const std::atomic<int>& stop_flag();

// While one lives, the first SIGINT/SIGTERM sets stop_flag() instead of exiting.
class GracefulSection {
 public:
  GracefulSection();
  ~GracefulSection();
  GracefulSection(const GracefulSection&) = delete;
  GracefulSection& operator=(const GracefulSection&) = delete;
};

// Temporary files the handler removes before exiting (at most 64 at a time, paths up to 4095 bytes; more are not
// tracked, and then stay behind only if a signal comes).
void register_temp_file(const std::string& path);
void unregister_temp_file(const std::string& path);

// "SIGINT", "SIGTERM", else "signal N".
std::string signal_name(int sig);

}  // namespace parasol::tools

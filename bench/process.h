// Child server processes for the bench, and /proc figures about processes.

#ifndef PYEXEC_BENCH_PROCESS_H_
#define PYEXEC_BENCH_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pyexec {
namespace bench {

// A server started as a child process. Its stdout is read until it prints
// "listening on HOST:PORT", then drained in the background; its stderr goes
// to a log file. The child gets SIGKILL if this process dies
// (PR_SET_PDEATHSIG). Stopped (SIGTERM, then SIGKILL) on destruction.
// Not thread-safe.
class ServerProcess {
 public:
  // Starts `argv[0]` with `argv` and waits up to `timeout` for its listening
  // line. `log_path` receives its stderr ("" inherits ours). UNAVAILABLE if
  // it exits or stays silent; NOT_FOUND if argv[0] is not executable.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path,
      absl::Duration timeout);

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess();

  // The process id.
  pid_t pid() const { return pid_; }

  // HOST:PORT from its listening line.
  const std::string& address() const { return address_; }

  // Sends SIGTERM, waits up to `grace`, then SIGKILLs. Returns the wait
  // status description, e.g. "exit 0" or "signal 9". Idempotent.
  std::string Stop(absl::Duration grace = absl::Seconds(10));

 private:
  ServerProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  pid_t pid_;
  int stdout_fd_;
  std::string address_;
  std::thread drain_;
  std::string exit_description_;
};

// Busy CPU time of the whole machine since boot, from /proc/stat (all
// cores: user, nice, system, irq, softirq, steal).
absl::StatusOr<absl::Duration> MachineBusyTime();

// CPU time of `pid` (user + system), and of its children it has reaped.
absl::StatusOr<absl::Duration> ProcessTreeCpuTime(int pid);

// CPU time and context switches (voluntary and not, over all threads) of a
// process and its live descendants, from /proc. Descendants that exit are
// not counted any more.
struct ProcessTreeCounters {
  absl::Duration cpu;
  int64_t context_switches = 0;
};
ProcessTreeCounters ReadProcessTreeCounters(pid_t pid);


// VmRSS of `pid` in KiB, from /proc/<pid>/status; -1 if unreadable.
int64_t RssKb(pid_t pid);

// Number of open file descriptors of `pid` (entries of /proc/<pid>/fd);
// -1 if unreadable.
int64_t FdCount(pid_t pid);

// Parses a "listening on HOST:PORT" line; returns HOST:PORT, or "" if `line`
// is not one.
std::string ParseListeningLine(absl::string_view line);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_PROCESS_H_

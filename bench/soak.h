// Soak mode: mixed load on a pyexecd while injecting faults, then a report
// of what was answered, what failed and whether the server leaked.

#ifndef PYEXEC_BENCH_SOAK_H_
#define PYEXEC_BENCH_SOAK_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "bench/latency.h"

namespace pyexec {
namespace bench {

// Settings of a soak run.
struct SoakOptions {
  // How long load and faults run.
  absl::Duration duration = absl::Seconds(300);
  // Threads that each hold a bound session (rebinding when it is lost).
  int bound_threads = 3;
  // Threads making stateless Eval/Exec/Call calls.
  int stateless_threads = 3;
  // Time between SIGKILLs of a random worker; zero disables kills. Needs
  // `server_pid`.
  absl::Duration kill_interval = absl::Seconds(1);
  // Per call: chance of a runaway `while True: pass` with `runaway_timeout`.
  double runaway_probability = 0.01;
  absl::Duration runaway_timeout = absl::Milliseconds(300);
  // Per bound-session call: chance of `os._exit(7)`.
  double exit_probability = 0.005;
  // Deadline of ordinary calls.
  absl::Duration call_timeout = absl::Seconds(10);
  // A call is a hang if it takes longer than its deadline plus this.
  absl::Duration hang_margin = absl::Seconds(5);
  // Bound sessions are unbound and rebound after this many calls.
  int calls_per_session = 200;
  // pyexecd's pid, for kills and /proc figures; 0 if unknown.
  pid_t server_pid = 0;
  // Pool size to wait for at the end (pyexecd --workers); 0 skips waiting.
  int expected_workers = 0;
  // Seed of the random choices.
  uint64_t seed = 1;
};

// Server-side figures at one moment.
struct ServerSnapshot {
  int64_t rss_kb = -1;
  int64_t fds = -1;
  int64_t worker_processes = -1;
  // GetStats num_workers / available_workers; -1 if GetStats failed.
  int64_t num_workers = -1;
  int64_t available_workers = -1;
  // Health check result ("SERVING", "NOT_SERVING", or an error).
  std::string health;
};

// What a soak run saw.
struct SoakReport {
  // Calls that returned (any outcome).
  int64_t answered = 0;
  // Calls that succeeded with the right result.
  int64_t ok = 0;
  // Failures that the injected faults explain, by kind and code, e.g.
  // "runaway DEADLINE_EXCEEDED".
  std::map<std::string, int64_t> expected;
  // Everything else, by kind and code; wrong results count here too.
  std::map<std::string, int64_t> unexpected;
  // The first few unexpected failures with their messages.
  std::vector<std::string> unexpected_examples;
  // Calls that took longer than their deadline plus the hang margin.
  int64_t hangs = 0;
  // Latency of successful ordinary calls.
  LatencySummary latency;
  // Faults injected.
  int64_t kills = 0;
  int64_t runaways = 0;
  int64_t exits = 0;
  ServerSnapshot start;
  ServerSnapshot end;
  absl::Duration elapsed;

  // Total of `unexpected`.
  int64_t unexpected_total() const;
};

// Records which worker processes were SIGKILLed and when, so that failures
// can be attributed to them. This class is thread-safe.
class KillLog {
 public:
  // Notes that `pid` is being killed now.
  void Record(pid_t pid, absl::Time when);

  // Whether `pid` was ever killed.
  bool WasKilled(pid_t pid) const;

  // Whether any kill happened in [from, to].
  bool AnyBetween(absl::Time from, absl::Time to) const;

  // Number of kills recorded.
  int64_t count() const;

 private:
  mutable absl::Mutex mu_;
  std::map<pid_t, absl::Time> by_pid_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> times_ ABSL_GUARDED_BY(mu_);
};

// Why a failed call may be acceptable.
struct FailureContext {
  // The call was a deliberate runaway.
  bool runaway = false;
  // The call ran os._exit on purpose.
  bool exit = false;
  // The call's session was known to be lost (its worker killed, exited).
  bool session_lost = false;
  // A worker was killed around the call (stateless calls cannot tell
  // which worker they ran on).
  bool kill_nearby = false;
};

// Whether a failed call with `status` is explained by the injected faults:
// DEADLINE_EXCEEDED for runaways; ABORTED for os._exit and for kills that
// could have hit the call; NOT_FOUND on a lost session. REQUIRES: !status.ok().
bool IsExpectedFailure(const absl::Status& status, const FailureContext& context);

// Runs the soak against the pyexecd at `address`.
SoakReport RunSoak(const std::string& address, const SoakOptions& options);

// The report as printable lines.
std::string FormatSoakReport(const SoakReport& report);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_SOAK_H_

#ifndef PYEXEC_BENCH_SESSIONS_H_
#define PYEXEC_BENCH_SESSIONS_H_

// Session start-up figures: churn (Bind -> Eval -> Unbind per iteration) and
// density (N sessions bound at once, their memory from /proc).

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/time/time.h"
#include "bench/latency.h"

namespace pyexec {
namespace bench {

// Settings of a churn run.
struct ChurnOptions {
  // Client threads, each with its own channel, looping Bind/Eval/Unbind.
  int threads = 4;
  // Iterations started before this are not counted.
  absl::Duration warmup = absl::Seconds(1);
  // Measured time.
  absl::Duration duration = absl::Seconds(5);
  // Deadline of each RPC.
  absl::Duration call_timeout = absl::Seconds(30);
  // pyexecd's pid, to account the CPU time of pyexecd, its zygote and its
  // workers during the measured time; 0 skips it.
  int server_pid = 0;
};

// Figures of a churn run.
struct ChurnResult {
  // Completed Bind -> Eval -> Unbind iterations per second.
  double rate = 0;
  // Latency of the measured Binds.
  LatencySummary bind;
  // Completed measured iterations.
  int64_t ok = 0;
  // Failed iterations by status code name.
  std::map<std::string, int64_t> errors;
  // CPU time per completed iteration during the measured time: of pyexecd,
  // its zygote and its (reaped) workers; and of the whole machine, this
  // benchmark's clients included. Zero when not measured.
  absl::Duration server_cpu_per_session;
  absl::Duration machine_cpu_per_session;
};

// Loops Bind -> Eval("1+1") -> Unbind against `address`.
ChurnResult RunChurn(const std::string& address, const ChurnOptions& options);

// Settings of a density run.
struct DensityOptions {
  // Sessions to bind and hold at once.
  int sessions = 1000;
  // Client threads binding them.
  int threads = 4;
  // Deadline of each RPC.
  absl::Duration call_timeout = absl::Seconds(120);
};

// Figures of a density run.
struct DensityResult {
  // Sessions bound (fewer than asked when binds failed; see error).
  int bound = 0;
  // Time from the first Bind to the last one answered.
  absl::Duration bind_all;
  // Private memory (USS: Private_Clean + Private_Dirty) per session worker,
  // mean and largest, in MiB.
  double uss_mean_mib = 0;
  double uss_max_mib = 0;
  // Resident memory (VmRSS) per worker, mean, in MiB, for comparison.
  double rss_mean_mib = 0;
  // Sum of PSS over the workers and the zygote, in MiB.
  double pss_total_mib = 0;
  // The zygote's resident anonymous memory, in MiB (0 without a zygote):
  // what each fork copies the page tables of.
  double zygote_anonymous_mib = 0;
  // The first failure, if any.
  std::string error;
};

// Binds options.sessions sessions, asks each for its worker's pid, reads
// /proc/PID/smaps_rollup of each (and of the zygote among `server_pid`'s
// children), then unbinds them all.
DensityResult RunDensity(const std::string& address, pid_t server_pid,
                         const DensityOptions& options);

// Memory of one process from /proc/PID/smaps_rollup, in KiB.
struct SmapsRollup {
  int64_t rss_kb = 0;
  int64_t pss_kb = 0;
  int64_t private_kb = 0;  // Private_Clean + Private_Dirty (USS)
  int64_t anonymous_kb = 0;
};
// Parses the text of /proc/PID/smaps_rollup.
SmapsRollup ParseSmapsRollup(const std::string& text);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_SESSIONS_H_

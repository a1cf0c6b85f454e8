// Costs as sessions pile up on one replica: sessions are bound in steps up
// to 10,000, and at each step one more session is probed (Eval latency, Bind
// latency), pyexecd's descriptors are counted and its idle CPU measured. The
// costs should stay flat: anything that grows with the number of sessions
// per call, per Bind or per tick shows here.

#ifndef PYEXEC_BENCH_SCALE_H_
#define PYEXEC_BENCH_SCALE_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "bench/latency.h"

namespace pyexec {
namespace bench {

struct ScaleOptions {
  // Bound sessions at each step (ascending).
  std::vector<int> steps = {100, 1000, 2000, 4000, 10000};
  // Client threads that bind the sessions of a step.
  int bind_threads = 4;
  // Probe calls at each step: Evals on one session, and Bind+Unbind pairs.
  int probe_evals = 500;
  int probe_binds = 100;
  // How long pyexecd's idle CPU is measured at each step.
  absl::Duration idle_window = absl::Seconds(3);
  absl::Duration call_timeout = absl::Seconds(60);
};

struct ScaleStep {
  int sessions = 0;  // bound when the step was measured
  LatencySummary eval;
  LatencySummary bind;
  int64_t pyexecd_fds = 0;
  double idle_cpu_percent = 0;  // of one core, pyexecd alone
  double uss_mib = 0;           // mean USS of a sample of session workers
  std::string error;            // why the step stopped short, if it did
};

// Runs the steps against `address` (pyexecd's pid `server_pid`), then
// unbinds everything. Stops at the first step it cannot reach.
std::vector<ScaleStep> RunScale(const std::string& address, pid_t server_pid,
                                const ScaleOptions& options);

// The table, with each figure's ratio to the first step.
std::string FormatScaleTable(const std::vector<ScaleStep>& steps);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_SCALE_H_

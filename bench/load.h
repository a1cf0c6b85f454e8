// Closed-loop load: one caller measured for latency, N callers for throughput.

#ifndef PYEXEC_BENCH_LOAD_H_
#define PYEXEC_BENCH_LOAD_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "bench/latency.h"

namespace pyexec {
namespace bench {

// One blocking call; returns its outcome.
using CallFn = std::function<absl::Status()>;

// How long to run a phase.
struct PhaseOptions {
  // Calls made and discarded before measuring (connections, caches, JIT-less
  // Python warm-up).
  absl::Duration warmup = absl::Seconds(1);
  // Measured time.
  absl::Duration duration = absl::Seconds(5);
  // Run on the phase's own thread just before and just after the measured
  // window (e.g. to read a server's CPU counters); may be empty.
  std::function<void()> on_measure_begin;
  std::function<void()> on_measure_end;
};

// Outcome of a phase.
struct PhaseResult {
  // Latency of the successful measured calls.
  LatencySummary latency;
  // Successful measured calls per second, over all callers.
  double throughput = 0;
  // Successful measured calls.
  int64_t ok = 0;
  // Failed measured calls by status code name.
  std::map<std::string, int64_t> errors;
  // Wall time measured.
  absl::Duration elapsed;
};

// Runs `calls.size()` callers, each on its own thread calling its CallFn back
// to back: warmup first (all callers together), then `duration` measured. A
// single CallFn gives the sequential-latency phase.
PhaseResult RunPhase(const std::vector<CallFn>& calls,
                     const PhaseOptions& options);

// Runs the `variants` in rounds on one thread, one call after another, each
// variant once per round in a shuffled order, through the warmup and the
// measured window, and returns one result per variant, in order. Their calls come from the same moments, so a machine whose speed
// drifts (other work, frequency steps, a noisy VM neighbour) moves every
// variant alike and their latency ratios hold, where phases run one after
// another would compare different moments. A variant's `throughput` is the
// sequential rate it would have alone: its calls over the time they took.
std::vector<PhaseResult> RunInterleaved(const std::vector<CallFn>& variants,
                                        const PhaseOptions& options);

// Appends an "errors in NAME: CODE xN" line per failure code of each named
// phase, for the tables the bench modes print.
void AppendPhaseErrors(
    const std::vector<std::pair<const char*, const PhaseResult*>>& phases,
    std::string* out);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_LOAD_H_

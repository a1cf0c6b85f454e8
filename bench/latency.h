// Latency samples and their percentiles.

#ifndef PYEXEC_BENCH_LATENCY_H_
#define PYEXEC_BENCH_LATENCY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace pyexec {
namespace bench {

// Summary of a set of latency samples.
struct LatencySummary {
  int64_t count = 0;
  absl::Duration min;
  absl::Duration p50;
  absl::Duration p90;
  absl::Duration p99;
  absl::Duration max;
  absl::Duration mean;
};

// Returns the nearest-rank percentile `p` (0 < p <= 100) of `sorted`, which
// must be sorted ascending. Zero for an empty vector.
absl::Duration Percentile(const std::vector<absl::Duration>& sorted, double p);

// Summarizes `samples` (any order; sorted in place).
LatencySummary Summarize(std::vector<absl::Duration>& samples);

// Formats a duration in microseconds with one decimal, e.g. "123.4us".
std::string FormatMicros(absl::Duration d);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_LATENCY_H_

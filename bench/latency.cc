#include "bench/latency.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace pyexec {
namespace bench {

absl::Duration Percentile(const std::vector<absl::Duration>& sorted, double p) {
  if (sorted.empty()) return absl::ZeroDuration();
  // Nearest rank: the smallest sample with at least p% of samples <= it.
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(rank, 1.0)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

LatencySummary Summarize(std::vector<absl::Duration>& samples) {
  LatencySummary s;
  s.count = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  absl::Duration total;
  for (absl::Duration d : samples) total += d;
  s.min = samples.front();
  s.max = samples.back();
  s.p50 = Percentile(samples, 50);
  s.p90 = Percentile(samples, 90);
  s.p99 = Percentile(samples, 99);
  s.mean = total / s.count;
  return s;
}

std::string FormatMicros(absl::Duration d) {
  return absl::StrFormat("%.1fus", absl::ToDoubleMicroseconds(d));
}

}  // namespace bench
}  // namespace pyexec

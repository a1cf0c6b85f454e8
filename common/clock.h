#ifndef PYEXEC_COMMON_CLOCK_H_
#define PYEXEC_COMMON_CLOCK_H_

#include <stdint.h>
#include <time.h>

#include "absl/time/time.h"

namespace pyexec {

// CLOCK_MONOTONIC as an absl::Time with an arbitrary epoch. Timers and
// timeouts use it, so that setting the wall clock neither fires them early
// nor holds them back. Never compare it with absl::Now().
inline absl::Time MonotonicNow() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::UnixEpoch() + absl::DurationFromTimespec(ts);
}

// CLOCK_MONOTONIC in nanoseconds: the per-call trace's stamps, comparable
// across the processes of one host.
inline int64_t MonotonicNanos() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Turns a wall-clock deadline into a MonotonicNow() one, given the current
// wall time; infinite deadlines stay infinite.
inline absl::Time WallToMonotonic(absl::Time deadline, absl::Time wall_now) {
  if (deadline == absl::InfiniteFuture()) return absl::InfiniteFuture();
  if (deadline == absl::InfinitePast()) return absl::InfinitePast();
  return MonotonicNow() + (deadline - wall_now);
}

}  // namespace pyexec

#endif  // PYEXEC_COMMON_CLOCK_H_

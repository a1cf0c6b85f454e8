#ifndef PYEXEC_BENCH_PROCESS_FLOOR_H_
#define PYEXEC_BENCH_PROCESS_FLOOR_H_

// What a fresh process per session costs the kernel on this machine,
// whatever pyexec does around it: fork a process the size of the zygote,
// copy-on-write the pages a session dirties, exit and reap it. Measured in
// the same run as churn, it bounds the churn any process-per-session design
// can reach here: at most cores / floor sessions per second, before any
// Python or gRPC work.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pyexec {
namespace bench {

struct ProcessFloorOptions {
  // Anonymous memory the template process has resident (the zygote's
  // Anonymous: from smaps_rollup); each fork copies its page tables.
  int64_t resident_bytes = 8 << 20;
  // Pages each child writes before it exits (a session's private memory).
  int64_t dirtied_bytes = 1 << 20;
  int iterations = 300;
  // bench/process_floor_helper, which does the forking: a small process of
  // its own, so that this one's memory is not part of what each fork copies.
  std::string helper_binary;
};

// CPU time (user + system, parent and children) per fork + dirty + exit +
// reap, as measured by the helper.
absl::StatusOr<absl::Duration> MeasureProcessFloor(const ProcessFloorOptions& options);

// Median round trip of 64 bytes to another process over a Unix socket, both
// sides blocking in read(): the two wake-ups that every call to a worker
// process costs and that an in-process echo does not.
absl::StatusOr<absl::Duration> MeasureProcessHop(const std::string& helper_binary,
                                                 int iterations = 20000);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_PROCESS_FLOOR_H_

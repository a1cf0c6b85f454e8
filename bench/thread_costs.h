// What each thread of a server (and of its worker processes) spent while a
// phase ran: CPU time and voluntary/involuntary context switches per call,
// by process and thread name, from /proc/<pid>/task/*/{comm,schedstat,status}.
// A thread that sleeps and is woken once per call shows one voluntary switch
// per call: the hand-offs the per-call trace points at, counted.

#ifndef PYEXEC_BENCH_THREAD_COSTS_H_
#define PYEXEC_BENCH_THREAD_COSTS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/time/time.h"

namespace pyexec {
namespace bench {

struct ThreadCost {
  absl::Duration cpu;
  int64_t voluntary = 0;
  int64_t involuntary = 0;
};

// Keyed "process/thread" by their names; threads of the same name (gRPC's
// pollers, every worker's main thread) are summed. `pid` and its
// descendants.
using ThreadCosts = std::map<std::string, ThreadCost>;
ThreadCosts ReadThreadCosts(pid_t pid);

// The difference per call, one line per thread name that did anything,
// busiest first.
std::string FormatThreadCosts(const ThreadCosts& before, const ThreadCosts& after,
                              int64_t calls);

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_THREAD_COSTS_H_

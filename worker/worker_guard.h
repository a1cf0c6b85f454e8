#ifndef PYEXEC_WORKER_WORKER_GUARD_H_
#define PYEXEC_WORKER_WORKER_GUARD_H_

// The zygote's guard over the workers it forked: when pyexecd dies, even by
// SIGKILL, the zygote kills every one of them with its process group (the
// worker and what its user code started). Before, each worker ran a
// watchdog thread for this; a thread per worker cost about 13% of a
// session's CPU under churn (its creation, a second thread to stop at exit,
// and TLB shootdowns on the copy-on-write faults of a two-thread process).
//
// The guard holds no file descriptor per worker (a forked worker would
// inherit them all, and could signal its siblings through pidfds): it keeps
// each worker's pid and the window in which it started, and at the end
// kills only a pid whose /proc start time falls in that window, so a pid
// that the kernel has given to another process since is left alone.

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace pyexec {

class WorkerGuard {
 public:
  // Clock ticks since boot (CLOCK_BOOTTIME, the clock of /proc/PID/stat's
  // start time), rounded down.
  static uint64_t BootTicksNow();

  // Watches a worker forked between `started_after` and `started_before`
  // (BootTicksNow() read around the fork).
  void Add(pid_t pid, uint64_t started_after, uint64_t started_before);

  // Watches the live children of `parent` other than `self`: the workers of
  // a zygote that died, which this one takes over. Returns how many.
  int AdoptChildrenOf(pid_t parent, pid_t self);

  // Kills, with its process group, every watched worker that still holds
  // its pid (running, or a zombie). Returns how many.
  int KillAll();

  // Watched entries, exited workers included until the next prune.
  size_t size() const { return workers_.size(); }

 private:
  struct Watched {
    pid_t pid;
    uint64_t started_after;
    uint64_t started_before;
  };
  // Drops the entries of workers that have exited, once the list has
  // doubled since the last time: amortised O(1) per fork.
  void PruneIfGrown();

  std::vector<Watched> workers_;
  size_t pruned_size_ = 0;
};

// SIGKILLs every process of these process groups: with kill(-pgid), and,
// as a zygote under its workers' seccomp filter may not signal a group,
// member by member as found in /proc.
void KillProcessGroups(const std::vector<pid_t>& groups);

}  // namespace pyexec

#endif  // PYEXEC_WORKER_WORKER_GUARD_H_

#ifndef PYEXEC_CONTEXT_POOL_WORKER_CGROUPS_H_
#define PYEXEC_CONTEXT_POOL_WORKER_CGROUPS_H_

// A cgroup per worker, where pyexecd has one delegated to it, so that a
// session's cap on processes and threads (pids.max) is its own. RLIMIT_NPROC
// counts per uid, across the whole node when workers share a uid: one
// tenant's processes would then use up another's, even on another pod.
//
// Two set-ups are found at start:
//   - cgroup v2 with the pids controller available to pyexecd's cgroup and
//     that cgroup writable (systemd's Delegate=yes, a writable cgroup
//     namespace): pyexecd moves itself into a leaf "pyexecd" (a cgroup with
//     children may hold no process), enables pids for the children, and
//     makes one child per worker;
//   - cgroup v1's pids hierarchy, writable (pyexecd as root on a host with
//     the v1 controllers): one child "pyexecd-PID" with a child per worker.
// Where neither is there (a container's read-only cgroupfs), Create says
// so and the caller keeps RLIMIT_NPROC.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace pyexec {

class WorkerCgroups {
 public:
  // Finds and prepares a delegated cgroup for workers with at most
  // `max_processes` processes and threads each. FAILED_PRECONDITION saying
  // what is missing when there is none. Call before any other thread (in
  // v2 it moves this process).
  static absl::StatusOr<std::unique_ptr<WorkerCgroups>> Create(uint64_t max_processes);
  // Removes the cgroups it made.
  ~WorkerCgroups();

  // What it uses, for the start-up log ("cgroup v2 /sys/fs/cgroup/...").
  const std::string& description() const { return description_; }

  // Puts the new worker `pid` (before it runs user code) in a cgroup of its
  // own; returns that cgroup's path.
  absl::StatusOr<std::string> Place(pid_t pid);
  // The worker of `path` is gone: its cgroup is removed once empty (the
  // zombies of its processes may linger until reaped).
  void Remove(const std::string& path);
  // Retries the removals that found their cgroup still in use.
  void Sweep();

  size_t pending_removals() const;

 private:
  WorkerCgroups(std::string base, bool own_base, uint64_t max_processes,
                std::string description)
      : base_(std::move(base)),
        own_base_(own_base),
        max_processes_(max_processes),
        description_(std::move(description)) {}

  const std::string base_;     // the worker cgroups' parent
  const bool own_base_;        // made by us: removed at the end
  const uint64_t max_processes_;
  const std::string description_;
  mutable absl::Mutex mu_;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_WORKER_CGROUPS_H_

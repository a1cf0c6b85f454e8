#include "worker/worker_guard.h"

#include <errno.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "absl/strings/numbers.h"
#include "common/procfs.h"

namespace pyexec {
namespace {

// /proc/<pid>/stat's start time (field 22), and whether the process is a
// zombie. False if the process is gone.
bool StartTicks(pid_t pid, uint64_t* ticks, bool* zombie) {
  const std::vector<std::string> f = ProcStatFields(pid);
  // ProcStatFields starts at field 3 (state): field 22 is [19].
  if (f.size() < 20 || !absl::SimpleAtoi(f[19], ticks)) return false;
  *zombie = f[0] == "Z";
  return true;
}

}  // namespace

uint64_t WorkerGuard::BootTicksNow() {
  static const long hz = sysconf(_SC_CLK_TCK);
  timespec now{};
  clock_gettime(CLOCK_BOOTTIME, &now);
  return static_cast<uint64_t>(now.tv_sec) * hz +
         static_cast<uint64_t>(now.tv_nsec) * hz / 1000000000;
}

void WorkerGuard::Add(pid_t pid, uint64_t started_after, uint64_t started_before) {
  PruneIfGrown();
  workers_.push_back({pid, started_after, started_before});
}

int WorkerGuard::AdoptChildrenOf(pid_t parent, pid_t self) {
  int adopted = 0;
  for (pid_t pid : ChildPids(parent)) {
    uint64_t ticks;
    bool zombie;
    if (pid == self || !StartTicks(pid, &ticks, &zombie) || zombie) continue;
    workers_.push_back({pid, ticks, ticks});
    ++adopted;
  }
  pruned_size_ = workers_.size();
  return adopted;
}

int WorkerGuard::KillAll() {
  int killed = 0;
  for (const Watched& w : workers_) {
    uint64_t ticks;
    bool zombie;
    if (!StartTicks(w.pid, &ticks, &zombie)) {
      // Gone and reaped: once pyexecd is dead, init reaps a worker that left
      // on its own (its socket closed), maybe before this runs. Its user
      // code's processes may still run in its group. The kernel gives no
      // process the worker's pid while that group lives, so a group with
      // its id is the worker's.
      if (kill(-w.pid, SIGKILL) == 0) ++killed;
      continue;
    }
    if (ticks < w.started_after || ticks > w.started_before) continue;  // reused pid
    // A zombie leader still holds its group id, so its group (what its user
    // code left running) is still the worker's.
    kill(-w.pid, SIGKILL);
    if (!zombie) kill(w.pid, SIGKILL);
    ++killed;
  }
  return killed;
}

void WorkerGuard::PruneIfGrown() {
  if (workers_.size() < std::max<size_t>(64, 2 * pruned_size_)) return;
  workers_.erase(std::remove_if(workers_.begin(), workers_.end(),
                                [](const Watched& w) {
                                  // Neither the worker nor its group.
                                  return kill(w.pid, 0) != 0 && errno == ESRCH &&
                                         kill(-w.pid, 0) != 0 && errno == ESRCH;
                                }),
                 workers_.end());
  pruned_size_ = workers_.size();
}

}  // namespace pyexec

#include "worker/worker_guard.h"

#include <errno.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "absl/container/flat_hash_set.h"
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
  // The groups led by a watched worker that still holds its pid (running,
  // or a zombie, which keeps its group id). One that is gone and reaped
  // ended its own group as it left (KillOwnProcessGroup in worker_main.cc);
  // its pid, and so its group id, may be anyone's by now.
  std::vector<pid_t> groups;
  for (const Watched& w : workers_) {
    uint64_t ticks;
    bool zombie;
    if (!StartTicks(w.pid, &ticks, &zombie)) continue;
    if (ticks < w.started_after || ticks > w.started_before) continue;  // reused pid
    groups.push_back(w.pid);
  }
  KillProcessGroups(groups);
  return static_cast<int>(groups.size());
}

void KillProcessGroups(const std::vector<pid_t>& groups) {
  if (groups.empty()) return;
  for (pid_t group : groups) kill(-group, SIGKILL);
  // Under its workers' seccomp filter (which the zygote may put itself
  // under) a negative pid is refused: each member is found in /proc and
  // killed by its pid, the group's leader, the worker, among them. Passes
  // repeat until one finds nobody left, since a member may fork meanwhile.
  const absl::flat_hash_set<pid_t> wanted(groups.begin(), groups.end());
  for (int pass = 0; pass < 20; ++pass) {
    int found = 0;
    for (pid_t pid : AllPids()) {
      const std::vector<std::string> f = ProcStatFields(pid);
      pid_t pgid;
      // Fields from 3 (state): 5 (pgrp) is [2].
      if (f.size() < 3 || f[0] == "Z" || !absl::SimpleAtoi(f[2], &pgid)) continue;
      if (!wanted.contains(pgid)) continue;
      kill(pid, SIGKILL);
      ++found;
    }
    if (found == 0) return;
  }
}

void WorkerGuard::PruneIfGrown() {
  if (workers_.size() < std::max<size_t>(64, 2 * pruned_size_)) return;
  workers_.erase(std::remove_if(workers_.begin(), workers_.end(),
                                [](const Watched& w) {
                                  return kill(w.pid, 0) != 0 && errno == ESRCH;
                                }),
                 workers_.end());
  pruned_size_ = workers_.size();
}

}  // namespace pyexec

#include "context_pool/orphan_reaper.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "common/procfs.h"

namespace pyexec {
namespace {

// A zombie that is not a process group leader.
bool IsOrphanZombie(pid_t pid) {
  const std::vector<std::string> f = ProcStatFields(pid);
  pid_t pgrp = 0;
  return f.size() > 2 && f[0] == "Z" && absl::SimpleAtoi(f[2], &pgrp) && pgrp != pid;
}

std::atomic<bool> watching{false};
std::atomic<bool> child_exited{true};

void NoteChildExit(int) { child_exited.store(true, std::memory_order_relaxed); }

bool OrphansComeHere() {
  if (getpid() == 1) return true;
  int subreaper = 0;
  return prctl(PR_GET_CHILD_SUBREAPER, &subreaper) == 0 && subreaper != 0;
}

}  // namespace

void WatchChildExits() {
  struct sigaction action {};
  action.sa_handler = NoteChildExit;
  action.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGCHLD, &action, nullptr) == 0) watching.store(true);
}

int ReapOrphanedChildren() {
  if (!OrphansComeHere()) return 0;
  if (watching.load() && !child_exited.exchange(false)) return 0;
  int reaped = 0;
  for (pid_t pid : ChildPids(getpid())) {
    if (!IsOrphanZombie(pid)) continue;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) ++reaped;
  }
  return reaped;
}

}  // namespace pyexec

#include "context_pool/orphan_reaper.h"

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

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

}  // namespace

int ReapOrphanedChildren() {
  int reaped = 0;
  for (pid_t pid : ChildPids(getpid())) {
    if (!IsOrphanZombie(pid)) continue;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) ++reaped;
  }
  return reaped;
}

}  // namespace pyexec

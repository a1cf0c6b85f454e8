#include "context_pool/child_process.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "context_pool/private_dir.h"

namespace pyexec {

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    Kill();
    int status;
    waitpid(pid_, &status, 0);
  }
  const WorkerHoldings& h = holdings_;
  if (!h.private_dir.empty() && h.dirs != nullptr) h.dirs->Return(h.private_dir, pid_);
  if (h.uids != nullptr) h.uids->Return(h.uid, pid_);
  if (!h.cgroup.empty() && h.cgroups != nullptr) h.cgroups->Remove(h.cgroup);
}

PrivateDirGuard::~PrivateDirGuard() {
  if (!path_.empty() && dirs_ != nullptr) dirs_->Discard(path_);
}

void ChildProcess::Interrupt(uint64_t request_id) {
  if (reaped_) return;
  sigval value{};
  value.sival_ptr = reinterpret_cast<void*>(static_cast<uintptr_t>(request_id));
  sigqueue(pid_, SIGINT, value);
}

void ChildProcess::Kill() {
  if (reaped_) return;
  // The worker leads its own process group; killing the group also ends
  // the subprocesses user code started in it.
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
}

std::optional<WorkerExit> ChildProcess::TryReap() {
  if (reaped_) return exit_;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return std::nullopt;
  reaped_ = true;
  if (r == pid_) {
    exit_.description = DescribeWaitStatus(status);
    exit_.cause = WIFSIGNALED(status) ? DeathCause::kSignal : DeathCause::kExit;
  } else {
    exit_.description = absl::StrCat("lost (waitpid: ", strerror(errno), ")");
  }
  if (holdings_.dirs != nullptr) {
    if (std::optional<std::string> verdict = holdings_.dirs->TakeDiskCapVerdict(pid_)) {
      exit_.description = absl::StrCat(exit_.description, ": ", *verdict);
      exit_.cause = DeathCause::kDiskCap;
    }
  }
  // Whatever user code left in the group goes with it.
  kill(-pid_, SIGKILL);
  return exit_;
}

std::string SignalName(int signal) {
  const char* abbrev = sigabbrev_np(signal);
  if (abbrev == nullptr) return absl::StrCat("signal ", signal);
  return absl::StrCat("SIG", abbrev);
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) {
    return absl::StrCat("exited with code ", WEXITSTATUS(status));
  }
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", SignalName(WTERMSIG(status)),
                        WCOREDUMP(status) ? " (core dumped)" : "");
  }
  return absl::StrCat("ended with wait status ", status);
}

}  // namespace pyexec

#include "context_pool/zygote_worker_launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/zygote_protocol.h"
#include "context_pool/child_process.h"

namespace pyexec {

ZygoteWorkerLauncher::~ZygoteWorkerLauncher() {
  absl::MutexLock lock(&mu_);
  StopZygoteLocked();
}

absl::Status ZygoteWorkerLauncher::Start() {
  absl::MutexLock lock(&mu_);
  return StartZygoteLocked();
}

absl::Status ZygoteWorkerLauncher::StartZygoteLocked() {
  UniqueFd ours, theirs;
  if (absl::Status s = MakeSocketPair(&ours, &theirs); !s.ok()) return s;
  internal::WorkerSettings settings = worker_.settings;
  for (const std::string& module : zygote_.preload) settings.add_preload(module);
  settings.set_preload_file(zygote_.preload_file);
  // LD_BIND_NOW: the dynamic linker resolves every symbol of the zygote's
  // libraries (and of extension modules it loads) once, at start-up, instead
  // of lazily in each forked worker: a lazy lookup costs a symbol search and
  // a copy-on-write of the GOT page, per worker. The zygote removes it from
  // its environment, so that workers and the programs they run do not get it.
  absl::StatusOr<pid_t> pid =
      SpawnWorkerBinary(worker_, settings, theirs.get(), {"--zygote", "--control_fd=3"},
                        {"LD_BIND_NOW=1"});
  if (!pid.ok()) return pid.status();
  theirs.reset();
  control_ = std::move(ours);
  zygote_pid_ = *pid;
  absl::Status ready =
      ReadZygoteReady(control_.get(), MonotonicNow() + zygote_.start_timeout);
  if (!ready.ok()) {
    StopZygoteLocked();
    if (ready.code() == absl::StatusCode::kFailedPrecondition) {
      return absl::FailedPreconditionError(
          absl::StrCat("preload failed in the zygote:\n", ready.message()));
    }
    return ready;
  }
  LogInfo(absl::StrCat("zygote pid ", zygote_pid_, " ready",
                       zygote_.preload.empty()
                           ? ""
                           : absl::StrCat(" (preloaded ",
                                          absl::StrJoin(zygote_.preload, ","),
                                          ")")));
  return absl::OkStatus();
}

void ZygoteWorkerLauncher::StopZygoteLocked() {
  control_.reset();
  if (zygote_pid_ > 0) {
    kill(zygote_pid_, SIGKILL);
    int status;
    while (waitpid(zygote_pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  zygote_pid_ = 0;
}

absl::StatusOr<pid_t> ZygoteWorkerLauncher::ForkLocked(int worker_socket,
                                                       const WorkerIdentity& identity) {
  absl::Status sent = SendZygoteRequest(control_.get(), worker_socket,
                                        identity.private_dir(), identity.uid(),
                                        identity.gid());
  if (!sent.ok()) return sent;
  return ReadZygoteReply(control_.get(), MonotonicNow() + zygote_.fork_timeout);
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> ZygoteWorkerLauncher::Launch() {
  UniqueFd ours, theirs;
  absl::StatusOr<WorkerIdentity> identity =
      WorkerIdentity::Take(dirs_, uids_, worker_.cgroups);
  if (!identity.ok()) return identity.status();

  absl::StatusOr<pid_t> pid;
  {
    absl::MutexLock lock(&mu_);
    // Once with the zygote we have; if it is gone or stuck, once more with
    // a new one.
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!control_.valid()) {
        if (absl::Status s = StartZygoteLocked(); !s.ok()) return s;
      }
      // A new socket per attempt: a zygote that died after forking but
      // before answering may have left a worker on the previous one, which
      // then sees EOF (we close our end) and exits, instead of serving the
      // same socket as the retry's worker.
      if (absl::Status s = MakeSocketPair(&ours, &theirs); !s.ok()) return s;
      pid = ForkLocked(theirs.get(), *identity);
      if (pid.ok() || pid.status().code() != absl::StatusCode::kUnavailable) {
        break;
      }
      LogWarning(absl::StrCat("zygote pid ", zygote_pid_, " lost (",
                              pid.status().message(), "); starting a new one"));
      StopZygoteLocked();
      ++restarts_;
    }
  }
  if (!pid.ok()) return pid.status();
  theirs.reset();
  // A worker that cannot be supervised is killed and reaped here.
  auto abandon = [worker = *pid](const std::string& what, int error) {
    kill(-worker, SIGKILL);
    kill(worker, SIGKILL);
    int status;
    waitpid(worker, &status, 0);
    return absl::InternalError(error == 0 ? what : absl::StrCat(what, ": ", strerror(error)));
  };
  // The zygote forked it with CLONE_PARENT: it is our child, and it must
  // lead its own process group before the pool can kill(-pid) it. The
  // worker cannot do it itself under the seccomp filter it inherits from the
  // zygote (setpgid is refused); a parent may, until the child execs.
  if (setpgid(*pid, *pid) != 0 && errno != ESRCH) {
    const int error = errno;
    return abandon(absl::StrCat("setpgid(", *pid, ")"), error);
  }
  fcntl(ours.get(), F_SETFL, fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = identity->Adopt(*pid, std::move(ours));
  if (!child.ok()) return abandon(std::string(child.status().message()), 0);
  return std::unique_ptr<WorkerProcess>(*std::move(child));
}

void ZygoteWorkerLauncher::RestartIfDead() {
  absl::MutexLock lock(&mu_);
  if (zygote_pid_ <= 0) return;  // none yet, or a failed start: Launch retries
  int status;
  if (waitpid(zygote_pid_, &status, WNOHANG) != zygote_pid_) return;
  LogWarning(absl::StrCat("zygote pid ", zygote_pid_, " ", DescribeWaitStatus(status),
                          "; starting a new one"));
  zygote_pid_ = 0;  // reaped: its pid may be anyone's now
  control_.reset();
  ++restarts_;
  if (absl::Status s = StartZygoteLocked(); !s.ok()) {
    LogError(absl::StrCat("zygote restart failed: ", s.message()));
  }
}

pid_t ZygoteWorkerLauncher::zygote_pid() const {
  absl::MutexLock lock(&mu_);
  return zygote_pid_;
}

int ZygoteWorkerLauncher::restarts() const {
  absl::MutexLock lock(&mu_);
  return restarts_;
}

}  // namespace pyexec

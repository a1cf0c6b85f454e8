#include "context_pool/process_worker_launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/unique_fd.h"
#include "context_pool/private_dir.h"

extern char** environ;

namespace pyexec {
namespace {

class ChildProcess final : public WorkerProcess {
 public:
  ChildProcess(pid_t pid, UniqueFd socket, UniqueFd pidfd, std::string private_dir)
      : pid_(pid),
        socket_(std::move(socket)),
        pidfd_(std::move(pidfd)),
        private_dir_(std::move(private_dir)) {}

  // The pool destroys a worker once it has exited (at Unbind, expiry or
  // death), so this is where its private directory goes.
  ~ChildProcess() override {
    if (!reaped_) {
      Kill();
      int status;
      waitpid(pid_, &status, 0);
    }
    if (!private_dir_.empty()) {
      if (absl::Status s = RemoveTree(private_dir_); !s.ok()) {
        LogWarning(absl::StrCat("worker pid ", pid_,
                                ": cannot remove its private directory: ",
                                s.message()));
      }
    }
  }

  int pid() const override { return pid_; }
  int socket_fd() const override { return socket_.get(); }
  int exit_fd() const override { return pidfd_.get(); }

  void Interrupt() override {
    if (!reaped_) kill(pid_, SIGINT);
  }

  void Kill() override {
    if (reaped_) return;
    // The worker leads its own process group; killing the group also ends
    // the subprocesses user code started in it.
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
  }

  std::optional<std::string> TryReap() override {
    if (reaped_) return description_;
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == 0) return std::nullopt;
    reaped_ = true;
    description_ = r == pid_ ? DescribeWaitStatus(status)
                             : absl::StrCat("lost (waitpid: ", strerror(errno), ")");
    // Whatever user code left in the group goes with it.
    kill(-pid_, SIGKILL);
    return description_;
  }

 private:
  const pid_t pid_;
  UniqueFd socket_;
  UniqueFd pidfd_;
  const std::string private_dir_;
  bool reaped_ = false;
  std::string description_;
};

}  // namespace

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

absl::StatusOr<std::unique_ptr<WorkerProcess>> ProcessWorkerLauncher::Launch() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("socketpair: ", strerror(errno)));
  }
  UniqueFd ours(pair[0]);
  UniqueFd theirs(pair[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // stdout carries nothing of ours; C-level prints of user code go to the
  // server's stderr, beside the worker's own log lines.
  posix_spawn_file_actions_adddup2(&actions, 2, 1);
  // dup2 clears FD_CLOEXEC on the copy, so fd 3 survives exec.
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);  // own process group
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);

  std::string private_dir;
  if (!options_.private_dir_root.empty()) {
    absl::StatusOr<std::string> dir =
        CreatePrivateDir(options_.private_dir_root, options_.confinement.uid,
                         options_.confinement.gid);
    if (!dir.ok()) return dir.status();
    private_dir = *std::move(dir);
  }
  // Removes the directory if the spawn fails below.
  struct DirGuard {
    const std::string* path;
    ~DirGuard() {
      if (path != nullptr) RemoveTree(*path).IgnoreError();
    }
  } dir_guard{private_dir.empty() ? nullptr : &private_dir};

  const ConfinementOptions& c = options_.confinement;
  std::vector<std::string> args = {
      options_.worker_binary,
      "--socket_fd=3",
      absl::StrCat("--parent_pid=", getpid()),
      absl::StrCat("--max_output_bytes=", options_.max_output_bytes),
      absl::StrCat("--max_value_depth=", options_.max_value_depth),
      absl::StrCat("--max_frame_bytes=", options_.max_frame_bytes),
      absl::StrCat("--max_response_bytes=", options_.max_response_bytes),
      absl::StrCat("--memory_limit_mb=", options_.memory_limit_mb),
      absl::StrCat("--max_open_files=", options_.max_open_files),
      absl::StrCat("--uid=", c.uid),
      absl::StrCat("--gid=", c.gid),
      absl::StrCat("--max_processes=", c.max_processes),
      absl::StrCat("--cpu_seconds=", c.cpu_seconds),
      absl::StrCat("--max_file_bytes=", c.max_file_bytes),
      absl::StrCat("--seccomp=", c.seccomp ? "true" : "false"),
      absl::StrCat("--network=", c.network == WorkerNetwork::kNone ? "none" : "host"),
      absl::StrCat("--private_dir=", private_dir),
  };
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  int rc = posix_spawn(&pid, options_.worker_binary.c_str(), &actions, &attr,
                       argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start worker ", options_.worker_binary, ": ", strerror(rc)));
  }
  theirs.reset();

  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    return absl::InternalError(absl::StrCat("pidfd_open: ", strerror(errno)));
  }
  fcntl(ours.get(), F_SETFL, fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  dir_guard.path = nullptr;  // the ChildProcess owns it now
  return std::make_unique<ChildProcess>(pid, std::move(ours), std::move(pidfd),
                                        std::move(private_dir));
}

}  // namespace pyexec

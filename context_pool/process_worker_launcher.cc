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
#include "common/unique_fd.h"
#include "context_pool/child_process.h"
#include "context_pool/private_dir.h"

extern char** environ;

namespace pyexec {

absl::StatusOr<pid_t> SpawnWorkerBinary(
    const WorkerProcessOptions& options, int fd3,
    const std::vector<std::string>& extra_args,
    const std::vector<std::string>& extra_env) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // stdout carries nothing of ours; C-level prints of user code go to the
  // server's stderr, beside the worker's own log lines.
  posix_spawn_file_actions_adddup2(&actions, 2, 1);
  // dup2 clears FD_CLOEXEC on the copy, so fd 3 survives exec.
  posix_spawn_file_actions_adddup2(&actions, fd3, 3);

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

  const ConfinementOptions& c = options.confinement;
  std::vector<std::string> args = {
      options.worker_binary,
      "--socket_fd=3",
      absl::StrCat("--parent_pid=", getpid()),
      absl::StrCat("--max_output_bytes=", options.max_output_bytes),
      absl::StrCat("--max_value_depth=", options.max_value_depth),
      absl::StrCat("--max_frame_bytes=", options.max_frame_bytes),
      absl::StrCat("--max_response_bytes=", options.max_response_bytes),
      absl::StrCat("--memory_limit_mb=", options.memory_limit_mb),
      absl::StrCat("--max_open_files=", options.max_open_files),
      absl::StrCat("--uid=", c.uid),
      absl::StrCat("--gid=", c.gid),
      absl::StrCat("--max_processes=", c.max_processes),
      absl::StrCat("--cpu_seconds=", c.cpu_seconds),
      absl::StrCat("--max_file_bytes=", c.max_file_bytes),
      absl::StrCat("--seccomp=", c.seccomp ? "true" : "false"),
      absl::StrCat("--network=", c.network == WorkerNetwork::kNone ? "none" : "host"),
  };
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_extra = extra_env;
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  for (std::string& e : env_extra) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = 0;
  int rc = posix_spawn(&pid, options.worker_binary.c_str(), &actions, &attr,
                       argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start ", options.worker_binary, ": ", strerror(rc)));
  }
  return pid;
}

std::shared_ptr<PrivateDirs> MakeWorkerPrivateDirs(const WorkerProcessOptions& options) {
  if (options.private_dir_root.empty()) return nullptr;
  return std::make_shared<PrivateDirs>(options.private_dir_root,
                                       options.confinement.uid,
                                       options.confinement.gid,
                                       /*recycle=*/options.confinement.seccomp);
}

absl::StatusOr<std::string> TakeWorkerPrivateDir(const std::shared_ptr<PrivateDirs>& dirs) {
  if (dirs == nullptr) return std::string();
  return dirs->Take();
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> ProcessWorkerLauncher::Launch() {
  UniqueFd ours, theirs;
  if (absl::Status s = MakeSocketPair(&ours, &theirs); !s.ok()) return s;

  absl::StatusOr<std::string> dir = TakeWorkerPrivateDir(dirs_);
  if (!dir.ok()) return dir.status();
  PrivateDirGuard guard(dirs_, *std::move(dir));
  absl::StatusOr<pid_t> spawned = SpawnWorkerBinary(
      options_, theirs.get(), {absl::StrCat("--private_dir=", guard.path())});
  if (!spawned.ok()) return spawned.status();
  const pid_t pid = *spawned;
  theirs.reset();

  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    return absl::InternalError(absl::StrCat("pidfd_open: ", strerror(errno)));
  }
  fcntl(ours.get(), F_SETFL, fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  // The ChildProcess owns the directory now.
  return std::make_unique<ChildProcess>(pid, std::move(ours), std::move(pidfd),
                                        guard.Release(), dirs_);
}

}  // namespace pyexec

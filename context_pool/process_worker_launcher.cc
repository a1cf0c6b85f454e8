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

namespace pyexec {

absl::StatusOr<pid_t> SpawnWorkerBinary(
    const WorkerProcessOptions& options, const internal::WorkerSettings& settings,
    int fd3, const std::vector<std::string>& extra_args,
    const std::vector<std::string>& extra_env) {
  // The settings travel on a pipe, not the command line, which /proc shows
  // to every process.
  int settings_pipe[2];
  if (pipe2(settings_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  }
  UniqueFd settings_read(settings_pipe[0]), settings_write(settings_pipe[1]);
  const std::string serialized = settings.SerializeAsString();
  // Settings are small (paths and numbers), far below a pipe's buffer.
  if (serialized.size() > 60000 ||
      write(settings_write.get(), serialized.data(), serialized.size()) !=
          static_cast<ssize_t>(serialized.size())) {
    return absl::InternalError("cannot pass the worker settings");
  }
  settings_write.reset();

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  // stdout and stderr carry nothing of ours: what user code writes there
  // goes to pyexecd's log through the output pipe, never to its terminal.
  const int output = options.output_fd >= 0 ? options.output_fd : STDERR_FILENO;
  posix_spawn_file_actions_adddup2(&actions, output, 1);
  posix_spawn_file_actions_adddup2(&actions, output, 2);
  // dup2 clears FD_CLOEXEC on the copy, so fds 3 and 4 survive exec.
  posix_spawn_file_actions_adddup2(&actions, fd3, 3);
  posix_spawn_file_actions_adddup2(&actions, settings_read.get(), 4);

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

  std::vector<std::string> args = {
      options.worker_binary,
      "--socket_fd=3",
      "--settings_fd=4",
      absl::StrCat("--parent_pid=", getpid()),
  };
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env = options.environment;
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
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
  const internal::Confinement& c = options.settings.confinement();
  PrivateDirs::Options dirs;
  dirs.root = options.private_dir_root;
  dirs.uid = c.switch_user() ? static_cast<int64_t>(c.uid()) : -1;
  dirs.gid = c.switch_user() ? static_cast<int64_t>(c.gid()) : -1;
  dirs.recycle = c.seccomp();
  dirs.max_disk_bytes = options.max_disk_bytes;
  return std::make_shared<PrivateDirs>(dirs);
}

std::shared_ptr<UidPool> MakeWorkerUids(const WorkerProcessOptions& options) {
  if (options.uid_count == 0) return nullptr;
  return std::make_shared<UidPool>(options.uid_first, options.uid_count,
                                   options.settings.confinement().seccomp());
}

absl::StatusOr<WorkerIdentity> WorkerIdentity::Take(
    const std::shared_ptr<PrivateDirs>& dirs, const std::shared_ptr<UidPool>& uids,
    std::shared_ptr<WorkerCgroups> cgroups) {
  int64_t uid = -1;
  if (uids != nullptr) {
    absl::StatusOr<uint32_t> taken = uids->Take();
    if (!taken.ok()) return taken.status();
    uid = *taken;
  }
  std::string dir;
  if (dirs != nullptr) {
    absl::StatusOr<std::string> taken = dirs->Take(uid, uid);
    if (!taken.ok()) {
      if (uids != nullptr) uids->Return(static_cast<uint32_t>(uid), 0);
      return taken.status();
    }
    dir = *std::move(taken);
  }
  return WorkerIdentity(dirs, std::move(dir), uids, uid, std::move(cgroups));
}

WorkerIdentity::~WorkerIdentity() {
  if (uid_ >= 0 && uids_ != nullptr) uids_->Return(static_cast<uint32_t>(uid_), 0);
}

absl::StatusOr<std::unique_ptr<ChildProcess>> WorkerIdentity::Adopt(pid_t pid,
                                                                    UniqueFd socket) {
  WorkerHoldings holdings;
  if (cgroups_ != nullptr) {
    absl::StatusOr<std::string> cgroup = cgroups_->Place(pid);
    if (!cgroup.ok()) return cgroup.status();
    holdings.cgroup = *std::move(cgroup);
    holdings.cgroups = cgroups_;
  }
  holdings.private_dir = dir_.Release();
  holdings.dirs = dirs_;
  if (dirs_ != nullptr && !holdings.private_dir.empty()) {
    dirs_->Attach(holdings.private_dir, pid);
  }
  const int64_t uid = std::exchange(uid_, -1);
  if (uid >= 0) {
    holdings.uid = static_cast<uint32_t>(uid);
    holdings.uids = uids_;
  }
  return std::make_unique<ChildProcess>(pid, std::move(socket), std::move(holdings));
}

absl::StatusOr<std::unique_ptr<WorkerProcess>> ProcessWorkerLauncher::Launch() {
  UniqueFd ours, theirs;
  if (absl::Status s = MakeSocketPair(&ours, &theirs); !s.ok()) return s;

  absl::StatusOr<WorkerIdentity> identity =
      WorkerIdentity::Take(dirs_, uids_, options_.cgroups);
  if (!identity.ok()) return identity.status();
  internal::WorkerSettings settings = options_.settings;
  settings.mutable_confinement()->set_private_dir(identity->private_dir());
  if (identity->uid() >= 0) {
    settings.mutable_confinement()->set_switch_user(true);
    settings.mutable_confinement()->set_uid(static_cast<uint32_t>(identity->uid()));
    settings.mutable_confinement()->set_gid(static_cast<uint32_t>(identity->gid()));
  }
  absl::StatusOr<pid_t> spawned = SpawnWorkerBinary(options_, settings, theirs.get(), {});
  if (!spawned.ok()) return spawned.status();
  const pid_t pid = *spawned;
  theirs.reset();

  fcntl(ours.get(), F_SETFL, fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = identity->Adopt(pid, std::move(ours));
  if (!child.ok()) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    return child.status();
  }
  return std::unique_ptr<WorkerProcess>(*std::move(child));
}

}  // namespace pyexec

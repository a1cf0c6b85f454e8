#ifndef PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_
#define PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

#include "absl/status/statusor.h"
#include "common/limits.h"
#include "worker/confinement.h"
#include "context_pool/child_process.h"
#include "context_pool/private_dir.h"
#include "context_pool/uid_pool.h"
#include "context_pool/worker_cgroups.h"
#include "pyexec/v1/worker.pb.h"
#include "worker/worker_settings.h"
#include "context_pool/worker_launcher.h"

namespace pyexec {

// Settings passed to every pyexec_worker process.
struct WorkerProcessOptions {
  // Path of the pyexec_worker binary.
  std::string worker_binary;
  // What each worker is told at start: limits, confinement (user, rlimits,
  // seccomp, Landlock, network; applied by the worker itself with
  // ConfineWorker), preloads. Its confinement's private_dir is ignored: see
  // private_dir_root.
  internal::WorkerSettings settings = DefaultWorkerSettings();
  // When set, each worker gets a fresh private directory under it (owned by
  // the worker's uid) as HOME, TMPDIR and working directory, removed or
  // recycled once the worker has exited.
  std::string private_dir_root;
  // Disk one worker's private directory may take; 0 = no cap.
  uint64_t max_disk_bytes = 0;
  // With count > 0, each worker runs as a uid of its own from
  // [uid_first, uid_first + uid_count) instead of the settings' uid.
  uint32_t uid_first = 0;
  uint32_t uid_count = 0;
  // The workers' whole environment, NAME=VALUE (BuildWorkerEnvironment);
  // each worker adds its own HOME and TMPDIR.
  std::vector<std::string> environment;
  // Where workers' stdout and stderr go (the write end of the
  // WorkerOutputLog pipe); -1: pyexecd's stderr.
  int output_fd = -1;
  // A cgroup per worker, where one is delegated to pyexecd; null: none.
  std::shared_ptr<WorkerCgroups> cgroups;
};

// The workers' private directories under options.private_dir_root, or null
// when the root is unset. They are recycled only under the seccomp filter,
// which keeps every process of a session in its worker's process group.
std::shared_ptr<PrivateDirs> MakeWorkerPrivateDirs(const WorkerProcessOptions& options);

// The workers' uids, or null when they share the settings' uid.
std::shared_ptr<UidPool> MakeWorkerUids(const WorkerProcessOptions& options);

// What one new worker runs as and lives in: its uid (-1: the settings'), and
// its private directory, which the guard removes unless the launch hands it
// on (Release). Returns the uid to `uids` if the launch fails.
class WorkerIdentity {
 public:
  // RESOURCE_EXHAUSTED when no uid is free.
  static absl::StatusOr<WorkerIdentity> Take(const std::shared_ptr<PrivateDirs>& dirs,
                                             const std::shared_ptr<UidPool>& uids,
                                             std::shared_ptr<WorkerCgroups> cgroups);
  WorkerIdentity(WorkerIdentity&& other)
      : dir_(std::move(other.dir_)),
        dirs_(std::move(other.dirs_)),
        uids_(std::move(other.uids_)),
        uid_(std::exchange(other.uid_, -1)),
        cgroups_(std::move(other.cgroups_)) {}
  ~WorkerIdentity();

  int64_t uid() const { return uid_; }
  int64_t gid() const { return uid_ < 0 ? -1 : uid_; }
  const std::string& private_dir() const { return dir_.path(); }
  // The worker `pid` now runs, before any user code: it is put in its
  // cgroup, and owns the directory and the uid. On failure the caller must
  // kill and reap it.
  absl::StatusOr<std::unique_ptr<ChildProcess>> Adopt(pid_t pid, UniqueFd socket);

 private:
  WorkerIdentity(std::shared_ptr<PrivateDirs> dirs, std::string dir,
                 std::shared_ptr<UidPool> uids, int64_t uid,
                 std::shared_ptr<WorkerCgroups> cgroups)
      : dir_(dirs, std::move(dir)),
        dirs_(std::move(dirs)),
        uids_(std::move(uids)),
        uid_(uid),
        cgroups_(std::move(cgroups)) {}
  PrivateDirGuard dir_;
  std::shared_ptr<PrivateDirs> dirs_;
  std::shared_ptr<UidPool> uids_;
  int64_t uid_;
  std::shared_ptr<WorkerCgroups> cgroups_;
};

// Starts pyexec_worker processes with posix_spawn. Each worker gets a Unix
// socketpair end as fd 3, /dev/null as stdin, the output pipe as stdout and
// stderr, its own process group (so that Kill() also ends what user code
// started) and a pidfd for exit notification. The worker confines itself
// (ConfineWorker) with the settings' confinement before it runs any user
// code.
class ProcessWorkerLauncher final : public WorkerLauncher {
 public:
  explicit ProcessWorkerLauncher(WorkerProcessOptions options)
      : options_(std::move(options)),
        dirs_(MakeWorkerPrivateDirs(options_)),
        uids_(MakeWorkerUids(options_)) {}

  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch() override;

 private:
  const WorkerProcessOptions options_;
  const std::shared_ptr<PrivateDirs> dirs_;
  const std::shared_ptr<UidPool> uids_;
};


// Starts options.worker_binary with `fd3` as its fd 3, `settings` readable
// on its fd 4 (--settings_fd), stdin /dev/null, stdout and stderr onto
// options.output_fd, default signal dispositions, an empty signal mask and
// its own process group. The arguments are --parent_pid and `extra_args`;
// the environment is options.environment plus `extra_env` ("NAME=VALUE").
absl::StatusOr<pid_t> SpawnWorkerBinary(
    const WorkerProcessOptions& options, const internal::WorkerSettings& settings,
    int fd3, const std::vector<std::string>& extra_args,
    const std::vector<std::string>& extra_env = {});

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_

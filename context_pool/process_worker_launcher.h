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
#include "context_pool/private_dir.h"
#include "context_pool/worker_launcher.h"

namespace pyexec {

// Settings passed to every pyexec_worker process.
struct WorkerProcessOptions {
  // Path of the pyexec_worker binary.
  std::string worker_binary;
  // Captured stdout/stderr per call, each.
  uint64_t max_output_bytes = kDefaultMaxOutputBytes;
  // Container nesting limit of Values.
  int max_value_depth = kDefaultMaxValueDepth;
  // Largest request frame the worker accepts.
  uint64_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Largest response the worker sends; bigger results are refused.
  uint64_t max_response_bytes = kDefaultMaxMessageBytes;
  // RLIMIT_AS in MiB, 0 = none.
  uint64_t memory_limit_mb = 0;
  // RLIMIT_NOFILE, 0 = inherited.
  uint64_t max_open_files = 0;
  // User, rlimits, seccomp and network applied by the worker itself
  // (ConfineWorker). Its private_dir is ignored: see private_dir_root.
  ConfinementOptions confinement;
  // When set, each worker gets a fresh private directory under it (owned by
  // confinement.uid/gid) as HOME, TMPDIR and working directory, removed once
  // the worker has exited.
  std::string private_dir_root;
};

// The workers' private directories under options.private_dir_root, or null
// when the root is unset. They are recycled only under the seccomp filter,
// which keeps every process of a session in its worker's process group.
std::shared_ptr<PrivateDirs> MakeWorkerPrivateDirs(const WorkerProcessOptions& options);

// A private directory from `dirs` for one worker; "" when `dirs` is null.
absl::StatusOr<std::string> TakeWorkerPrivateDir(const std::shared_ptr<PrivateDirs>& dirs);

// Starts pyexec_worker processes with posix_spawn. Each worker gets a Unix
// socketpair end as fd 3, /dev/null as stdin, the server's stderr, its own
// process group (so that Kill() also ends what user code started) and a pidfd
// for exit notification. The worker confines itself (ConfineWorker) with
// options.confinement before it runs any user code.
class ProcessWorkerLauncher final : public WorkerLauncher {
 public:
  explicit ProcessWorkerLauncher(WorkerProcessOptions options)
      : options_(std::move(options)), dirs_(MakeWorkerPrivateDirs(options_)) {}

  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch() override;

 private:
  const WorkerProcessOptions options_;
  const std::shared_ptr<PrivateDirs> dirs_;
};


// Starts options.worker_binary with `fd3` as its fd 3, stdin /dev/null,
// stdout onto the server's stderr, default signal dispositions, an empty
// signal mask and its own process group. The arguments carry the worker
// settings and confinement, --parent_pid and `extra_args`; the environment
// is this process's, plus `extra_env` ("NAME=VALUE").
absl::StatusOr<pid_t> SpawnWorkerBinary(
    const WorkerProcessOptions& options, int fd3,
    const std::vector<std::string>& extra_args,
    const std::vector<std::string>& extra_env = {});

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_

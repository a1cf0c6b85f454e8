#ifndef PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_
#define PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "common/limits.h"
#include "worker/confinement.h"
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

// Starts pyexec_worker processes with posix_spawn. Each worker gets a Unix
// socketpair end as fd 3, /dev/null as stdin, the server's stderr, its own
// process group (so that Kill() also ends what user code started) and a pidfd
// for exit notification. The worker confines itself (ConfineWorker) with
// options.confinement before it runs any user code.
class ProcessWorkerLauncher final : public WorkerLauncher {
 public:
  explicit ProcessWorkerLauncher(WorkerProcessOptions options)
      : options_(std::move(options)) {}

  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch() override;

 private:
  const WorkerProcessOptions options_;
};

// "SIGKILL", "SIGSEGV", ... or "signal N".
std::string SignalName(int signal);

// Describes a wait status: "exited with code 3", "killed by signal SIGSEGV".
std::string DescribeWaitStatus(int status);

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_PROCESS_WORKER_LAUNCHER_H_

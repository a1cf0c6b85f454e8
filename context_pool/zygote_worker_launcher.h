#ifndef PYEXEC_CONTEXT_POOL_ZYGOTE_WORKER_LAUNCHER_H_
#define PYEXEC_CONTEXT_POOL_ZYGOTE_WORKER_LAUNCHER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "context_pool/process_worker_launcher.h"
#include "context_pool/worker_launcher.h"

namespace pyexec {

// What the zygote prepares once for every worker.
struct ZygoteOptions {
  // Modules imported in the zygote; every worker has them already, shared
  // copy-on-write.
  std::vector<std::string> preload;
  // A Python file run once in the zygote's __main__ (empty: none). Names it
  // defines are visible to bound sessions.
  std::string preload_file;
  // How long the zygote may take to initialise CPython and preload.
  absl::Duration start_timeout = absl::Seconds(60);
  // How long one fork may take before the zygote is considered stuck.
  absl::Duration fork_timeout = absl::Seconds(10);
};

// Forks workers from a zygote: pyexec_worker --zygote, spawned once (exec'd,
// so it never inherits gRPC threads), single-threaded, with CPython
// initialised and the preloads imported. Each Launch passes a new socket to
// the zygote, which forks a worker serving it (clone with CLONE_PARENT) and
// answers its pid. The worker is this process's child, so it is waited for,
// interrupted and killed exactly like a spawned one.
//
// The zygote also guards the workers it forked: if pyexecd dies, it kills
// them (worker/worker_guard.h). A zygote that died or hangs is started again
// (on the next Launch, or by RestartIfDead); workers already forked carry on,
// and the new zygote takes over guarding them. Thread-safe.
class ZygoteWorkerLauncher final : public WorkerLauncher {
 public:
  ZygoteWorkerLauncher(WorkerProcessOptions worker, ZygoteOptions zygote)
      : worker_(std::move(worker)),
        zygote_(std::move(zygote)),
        dirs_(MakeWorkerPrivateDirs(worker_)),
        uids_(MakeWorkerUids(worker_)) {}
  // Kills the zygote (not the workers).
  ~ZygoteWorkerLauncher() override;

  // Starts the zygote and waits until it is ready. A failing preload is FAILED_PRECONDITION with the Python
  // traceback. Call before any gRPC thread exists.
  absl::Status Start();

  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch() override;

  // Starts a new zygote now if the current one has died, so that the
  // workers it forked are guarded again without waiting for the next
  // Launch. pyexecd calls it once a second. A failed start is logged, and
  // Launch tries again.
  void RestartIfDead();

  // The zygote's pid, 0 if none is running (for tests and logs).
  pid_t zygote_pid() const;
  // How many times the zygote was started again after dying.
  int restarts() const;

 private:
  absl::Status StartZygoteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopZygoteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<pid_t> ForkLocked(int worker_socket, const WorkerIdentity& identity)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const WorkerProcessOptions worker_;
  const ZygoteOptions zygote_;
  const std::shared_ptr<PrivateDirs> dirs_;
  const std::shared_ptr<UidPool> uids_;
  mutable absl::Mutex mu_;
  UniqueFd control_ ABSL_GUARDED_BY(mu_);
  pid_t zygote_pid_ ABSL_GUARDED_BY(mu_) = 0;
  int restarts_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_ZYGOTE_WORKER_LAUNCHER_H_

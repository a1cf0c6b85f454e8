#ifndef PYEXEC_CONTEXT_POOL_WORKER_LAUNCHER_H_
#define PYEXEC_CONTEXT_POOL_WORKER_LAUNCHER_H_

// How the pool creates worker processes: posix_spawn of pyexec_worker
// (ProcessWorkerLauncher) or a fork of a pre-initialised zygote
// (ZygoteWorkerLauncher); unit tests substitute in-process fake workers.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "context_pool/death_cause.h"

namespace pyexec {

// One running worker, as seen by the pool. The pool calls its methods from
// its own threads, serialised by the pool's lock.
class WorkerProcess {
 public:
  virtual ~WorkerProcess() = default;

  // Process id, for logs and stats (a fake may return 0).
  virtual int pid() const = 0;
  // The pool's end of the frame socket; owned by this object. Non-blocking.
  virtual int socket_fd() const = 0;
  // Becomes readable when the process has exited (an eventfd for a fake),
  // or -1: the pool then learns of the exit from the socket's hang-up and
  // TryReap (a real worker is pyexecd's own child, so its pid cannot be
  // reused before it is reaped, and no descriptor beyond its socket is
  // needed). The pool cleans up a worker only once it has exited.
  virtual int exit_fd() const = 0;

  // Asks the worker to stop the call with request id `request_id` (SIGINT,
  // which Python turns into KeyboardInterrupt). The id lets the worker keep
  // an interrupt that arrives before that call starts, and drop one that
  // arrives after it ended.
  virtual void Interrupt(uint64_t request_id) = 0;
  // Kills the worker and everything in its process group at once.
  virtual void Kill() = 0;
  // Once the process has exited: reaps it and says how it ended ("exited
  // with code 3", "killed by signal SIGSEGV") and why, as far as the process
  // knows (the pool knows when it condemned it). std::nullopt while it is
  // still running.
  virtual std::optional<WorkerExit> TryReap() = 0;
};

// Creates workers. Called from the pool's spawner thread only, one launch
// at a time; a launch may block (fork, exec) without delaying calls.
class WorkerLauncher {
 public:
  virtual ~WorkerLauncher() = default;
  // Starts a worker. It is ready once it sends its hello frame.
  virtual absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch() = 0;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_WORKER_LAUNCHER_H_

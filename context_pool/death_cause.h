#ifndef PYEXEC_CONTEXT_POOL_DEATH_CAUSE_H_
#define PYEXEC_CONTEXT_POOL_DEATH_CAUSE_H_

// Why a worker ended, from a small fixed set: the label of the
// pyexec_worker_deaths_total metric and the cause in the pool's log. Set
// where the cause is known (the pool condemned the worker; the process
// exited, was signalled, or was killed for the disk cap), never parsed back
// out of a message.

#include <string>

namespace pyexec {

enum class DeathCause {
  kExit,            // the process exited (os._exit, a crash handler)
  kSignal,          // killed by a signal nobody in pyexecd sent (SIGSEGV, OOM)
  kProtocolError,   // garbage on its socket, or the socket closed
  kKillGrace,       // did not stop within --kill_grace of an interrupt
  kStartupTimeout,  // never said hello
  kDiskCap,         // its session passed --worker_max_disk_mb
};

// "exit", "signal", "protocol_error", "kill_grace", "startup_timeout",
// "disk_cap".
const char* DeathCauseLabel(DeathCause cause);

// How a worker process ended, as ChildProcess reports it.
struct WorkerExit {
  // "exited with code 3", "killed by signal SIGSEGV", with what is known of
  // why ("... : the session wrote more than --worker_max_disk_mb ...").
  std::string description;
  DeathCause cause = DeathCause::kExit;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_DEATH_CAUSE_H_

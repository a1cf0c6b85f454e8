#ifndef PYEXEC_WORKER_CONFINEMENT_H_
#define PYEXEC_WORKER_CONFINEMENT_H_

// Confinement of a worker process: the unprivileged user, no_new_privs,
// rlimits, a seccomp filter, a private HOME/TMPDIR and an optional empty
// network namespace. See README "Confined workers" and SECURITY notes there.
//
// ConfineWorker is the one entry point. It runs in the worker process itself,
// once, before the worker serves its first request: today right after exec,
// before Python is initialised; with a forking zygote, in each forked child
// (which is why it takes plain values and touches no Python). It must run
// in the child, never in a long-lived template: setuid and the netns are per
// process and cannot be undone. The seccomp filter is the one exception: the
// zygote installs it on itself (SeccompFilter::Install, with the host
// network), since it only narrows what the zygote may do, and its workers
// inherit it at fork instead of each installing its own.
//
// A zygote that initialised Python before forking must, after calling it,
// also refresh os.environ["HOME"]/["TMPDIR"] (and drop tempfile.tempdir),
// because Python copies the environment at start-up.

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pyexec {

// The seccomp filter (kDeniedSyscalls and namespace flags of clone answer
// EPERM, clone3 ENOSYS), compiled to classic BPF. libseccomp takes about
// 0.7 ms to build and compile it; the zygote compiles it once, and each
// forked worker only installs the program.
class SeccompFilter {
 public:
  static absl::StatusOr<SeccompFilter> Compile();
  // Installs the filter on every thread of the calling process (TSYNC).
  // REQUIRES: no_new_privs is set, or the process has CAP_SYS_ADMIN.
  absl::Status Install() const;
  size_t instructions() const { return program_.size(); }

 private:
  std::vector<sock_filter> program_;
};

// Worker network namespace policy.
enum class WorkerNetwork {
  kHost,  // the server's network (no namespace)
  kNone,  // a new, empty network namespace: only a loopback interface
};

// Everything ConfineWorker applies. Plain values (and a pointer to a
// program compiled beforehand), so that it can be passed on a command line
// or across a fork.
struct ConfinementOptions {
  // Switch to this uid/gid (supplementary groups dropped) when the process
  // runs as root; -1 keeps the current ids. Resolved from --worker_user by
  // pyexecd.
  int64_t uid = -1;
  int64_t gid = -1;
  // RLIMIT_NPROC: processes and threads of the worker's real uid (the count
  // is per uid, shared by every worker running as that user); 0 = inherited.
  uint64_t max_processes = 0;
  // RLIMIT_CPU in seconds of CPU over the worker's life (SIGXCPU, then
  // SIGKILL a second later); 0 = none.
  uint64_t cpu_seconds = 0;
  // RLIMIT_FSIZE: largest file the worker may write, in bytes; 0 = none.
  uint64_t max_file_bytes = 0;
  // Install the seccomp filter (kDeniedSyscalls answer EPERM).
  bool seccomp = true;
  // The filter compiled in advance (not owned; must outlive ConfineWorker);
  // null compiles it in ConfineWorker.
  const SeccompFilter* compiled_seccomp = nullptr;
  // The worker's private directory: becomes HOME, TMPDIR and the working
  // directory. Empty = leave them alone.
  std::string private_dir;
  WorkerNetwork network = WorkerNetwork::kHost;
};

// Confines the calling process. Order matters and is fixed here: the network
// namespace first (it needs privileges, and unshare is in the filter), then
// rlimits (raising a hard limit needs root), the private directory, the
// user switch, PR_SET_DUMPABLE(0) and PR_SET_NO_NEW_PRIVS, and the seccomp
// filter last, on every thread of the process (TSYNC). Any failure is
// returned and the caller must exit: a half-confined worker must not run
// user code. Call it while the process has at most helper threads that run
// no user code.
absl::Status ConfineWorker(const ConfinementOptions& options);

// Runs ConfineWorker in a forked child and returns its verdict, so that
// pyexecd can refuse to start with a clear message (e.g. a kernel without
// network namespaces for --worker_network=none) instead of failing every
// worker later. Call before any other thread exists (it forks).
absl::Status CheckConfinement(const ConfinementOptions& options);

// Parses "none" / "host".
bool ParseWorkerNetwork(const std::string& text, WorkerNetwork* out);

// The syscalls the filter refuses with EPERM, by name (names unknown to the
// running architecture are skipped). Exposed for tests and documentation.
extern const char* const kDeniedSyscalls[];

}  // namespace pyexec

#endif  // PYEXEC_WORKER_CONFINEMENT_H_

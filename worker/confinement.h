#ifndef PYEXEC_WORKER_CONFINEMENT_H_
#define PYEXEC_WORKER_CONFINEMENT_H_

// Confinement of a worker process, in layers (SECURITY.md says what each
// one stops, per deployment form):
//   - a Landlock domain (worker/landlock.h): files, /proc of other
//     processes, signals and abstract sockets outside the worker;
//   - a uid of its own (--worker_uid_range) or the worker user;
//   - a seccomp filter with argument rules: no ptrace, mount, namespaces,
//     kernel modules, ...; no signal, renice or rlimit change aimed at
//     pyexecd, the zygote or another process group; no TIOCSTI;
//   - no_new_privs, non-dumpable, rlimits, a private HOME/TMPDIR, an
//     optional empty network namespace (or no inet sockets at all).
//
// ConfineWorker is the one entry point. It runs in the worker process itself,
// once, before the worker serves its first request: right after exec for a
// spawned worker, before Python is initialised; in each child the zygote
// forks. It must run in the child, never in a long-lived template: setuid,
// Landlock and the netns are per process and cannot be undone. The seccomp
// filter is the one exception: the zygote installs it on itself (with the
// host network or no inet sockets), since it only narrows what the zygote
// may do, and its workers inherit it at fork.
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
#include "pyexec/v1/worker.pb.h"
#include "worker/landlock.h"

namespace pyexec {

// What a worker applies to itself; a plain proto message, so that pyexecd
// fills it once and it crosses exec and fork unchanged.
using ConfinementOptions = internal::Confinement;

// The defaults of a worker started without settings: the seccomp filter,
// nothing else.
ConfinementOptions DefaultConfinement();

// The seccomp filter compiled to classic BPF: kDeniedSyscalls and namespace
// flags of clone answer EPERM, clone3 ENOSYS, and the argument rules:
//   - kill, tgkill, rt_(tg)sigqueueinfo, pidfd_open, sched_set*,
//     migrate_pages, move_pages, setpriority and ioprio_set aimed at
//     options.protected_pids answer EPERM; so do kill of a negative pid (any
//     process group but the caller's own, which is kill(0)), PRIO_USER and
//     IOPRIO_WHO_USER (every process of the uid), tkill and
//     pidfd_send_signal (which name targets the filter cannot check);
//   - prlimit64 only on the caller itself (pid 0);
//   - ioctl TIOCSTI and TIOCLINUX (typing into a terminal);
//   - with network NO_INET, socket() of inet and packet families.
// libseccomp takes about 0.7 ms to build it; the zygote compiles it once.
class SeccompFilter {
 public:
  static absl::StatusOr<SeccompFilter> Compile(const ConfinementOptions& options);
  // Installs the filter on every thread of the calling process (TSYNC).
  // REQUIRES: no_new_privs is set, or the process has CAP_SYS_ADMIN.
  absl::Status Install() const;
  size_t instructions() const { return program_.size(); }

 private:
  std::vector<sock_filter> program_;
};

// What a worker's confinement may take ready-made from its zygote instead of
// preparing it in every worker.
struct ConfinementResources {
  // The filter compiled beforehand (not owned); null compiles one.
  const SeccompFilter* seccomp = nullptr;
  // The process already runs under the filter (inherited from the zygote).
  bool seccomp_inherited = false;
  // The Landlock rules with their paths opened (not owned); null opens them.
  const LandlockRules* landlock = nullptr;
};

// Confines the calling process. Order matters and is fixed here: the network
// namespace first (it needs privileges, and unshare is in the filter), then
// rlimits (raising a hard limit needs root), the user switch, the private
// directory, PR_SET_DUMPABLE(0) and PR_SET_NO_NEW_PRIVS, Landlock, and the
// seccomp filter last, on every thread of the process (TSYNC). Any failure
// is returned and the caller must exit: a half-confined worker must not run
// user code. Call it while the process has at most helper threads that run
// no user code.
absl::Status ConfineWorker(const ConfinementOptions& options,
                           const ConfinementResources& resources = {});

// Runs ConfineWorker in a forked child and returns its verdict, so that
// pyexecd can refuse to start with a clear message (e.g. a kernel without
// network namespaces for --worker_network=none) instead of failing every
// worker later. Call before any other thread exists (it forks).
absl::Status CheckConfinement(const ConfinementOptions& options);

// Parses "none" / "host".
bool ParseWorkerNetwork(const std::string& text, internal::Confinement::Network* out);

// The syscalls the filter refuses with EPERM, by name (names unknown to the
// running architecture are skipped). Exposed for tests and documentation.
extern const char* const kDeniedSyscalls[];

}  // namespace pyexec

#endif  // PYEXEC_WORKER_CONFINEMENT_H_

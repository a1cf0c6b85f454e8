#ifndef PYEXEC_WORKER_LANDLOCK_H_
#define PYEXEC_WORKER_LANDLOCK_H_

// A Landlock domain per worker (Linux >= 5.13): the strongest layer between
// a session and everything outside it, and the only one that holds when the
// workers share pyexecd's uid (the container image). A worker restricts
// itself once, after it forked and dropped privileges, before any user code:
// - files: read and execute only the system directories, the Python
//   installation and the operator's extra paths; read and write only its own
//   private directory and a few devices; /dev/shm to create and use
//   segments, never to list;
// - processes: the kernel refuses ptrace-mode access (/proc/PID/environ,
//   cwd, fd, mem) to any process outside the domain, and with ABI >= 6 also
//   signals and connections to abstract Unix sockets created outside it.
// Each worker has a domain of its own, so sessions are outside each other's.
//
// Debian 12's <linux/landlock.h> stops at ABI 2; the later rights and
// structures are defined here.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/unique_fd.h"

namespace pyexec {

// The Landlock ABI version of the running kernel; 0 when Landlock is absent
// or disabled.
int LandlockAbi();

// What a rule lets a worker do beneath a path.
enum class LandlockAccess {
  kReadExecute,  // read files, list directories, execute
  kReadOnly,     // read files and list directories
  kDevice,       // read, write, truncate and ioctl (character devices)
  kSharedMemory, // create, read, write, truncate and remove files; no listing
  kFull,         // everything (the worker's private directory)
};

// The rules every worker of a pyexecd shares, with their paths opened once
// (O_PATH) so that a forked worker adds them without looking paths up
// again. Paths that do not exist are skipped.
class LandlockRules {
 public:
  LandlockRules() = default;
  LandlockRules(LandlockRules&&) = default;
  LandlockRules& operator=(LandlockRules&&) = default;

  // Opens `path` for a rule. A missing path is skipped unless `required`,
  // in which case it is an error naming the path.
  absl::Status Add(const std::string& path, LandlockAccess access,
                   bool required = false);

  // The rules for a worker of this machine: the system directories,
  // /proc, /sys, the /etc files ordinary programs read, the usual devices,
  // /dev/shm, plus `extra_read` (the Python paths of preloads, the
  // operator's --worker_read_paths; each must exist). With `ptys`, also
  // /dev/ptmx and /dev/pts: only when workers have uids of their own, since
  // a pseudo-terminal is reachable by path by any process of its owner.
  static absl::StatusOr<LandlockRules> ForWorkers(
      const std::vector<std::string>& extra_read, bool ptys);

  // Closes the opened paths (a worker, once restricted).
  void Close() { rules_.clear(); }

  size_t size() const { return rules_.size(); }

 private:
  friend absl::Status RestrictSelfWithLandlock(const LandlockRules&,
                                               const std::string&);
  struct Rule {
    UniqueFd path;
    LandlockAccess access;
    bool is_directory;
  };
  std::vector<Rule> rules_;
};

// Puts the calling process (all its threads must run no user code yet) in a
// new Landlock domain: `rules`, plus full access to `private_dir` (may be
// ""), with signal and abstract-socket scoping where the ABI has them.
// REQUIRES: no_new_privs is set. Fails when Landlock is absent.
absl::Status RestrictSelfWithLandlock(const LandlockRules& rules,
                                      const std::string& private_dir);

// A short description of what Landlock enforces at `abi`, for the start-up
// log ("ABI 7: files, /proc, signals, abstract sockets").
std::string DescribeLandlock(int abi);

}  // namespace pyexec

#endif  // PYEXEC_WORKER_LANDLOCK_H_

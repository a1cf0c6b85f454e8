#ifndef PYEXEC_COMMON_ZYGOTE_PROTOCOL_H_
#define PYEXEC_COMMON_ZYGOTE_PROTOCOL_H_

// The control protocol between pyexecd (ZygoteWorkerLauncher) and the
// zygote (pyexec_worker --zygote), over a Unix stream socketpair. Both ends
// are built from the same tree, so the messages are plain fixed-size
// records:
//   zygote -> pyexecd, once:  ready   uint32 length + UTF-8 text; length 0
//                                     means ready, else the preload failure
//                                     (a Python traceback)
//   pyexecd -> zygote:        request uint32 kZygoteForkMagic, uint32
//                                     length, int64 uid, int64 gid (-1: the
//                                     zygote's settings) + the worker's
//                                     private directory (may be empty), with
//                                     one socket attached (SCM_RIGHTS): the
//                                     worker's end of its frame socket
//   zygote -> pyexecd:        reply   int32 pid of the forked worker, or
//                                     -errno
// Requests are answered in order, one at a time.

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"

namespace pyexec {

inline constexpr uint32_t kZygoteForkMagic = 0x5a46524b;  // "ZFRK"

// One fork request as the zygote receives it.
struct ZygoteRequest {
  // The worker's end of its frame socket.
  UniqueFd socket;
  // HOME/TMPDIR of the worker (ConfinementOptions::private_dir); may be "".
  std::string private_dir;
  // The worker's own uid and gid (--worker_uid_range); -1: the settings'.
  int64_t uid = -1;
  int64_t gid = -1;
};

// Zygote side. Blocking.
absl::Status WriteZygoteReady(int control, const absl::Status& preload);
// CANCELLED when pyexecd closed the control socket.
absl::StatusOr<ZygoteRequest> ReceiveZygoteRequest(int control);
absl::Status WriteZygoteReply(int control, pid_t pid_or_errno);

// pyexecd side. Each waits at most until `deadline`, a MonotonicNow() time.
// OK when the zygote is ready; FAILED_PRECONDITION with its traceback when
// a preload failed; UNAVAILABLE if it died or timed out.
absl::Status ReadZygoteReady(int control, absl::Time deadline);
absl::Status SendZygoteRequest(int control, int worker_socket,
                               const std::string& private_dir, int64_t uid = -1,
                               int64_t gid = -1);
// The forked worker's pid. UNAVAILABLE if the zygote is gone or silent,
// RESOURCE_EXHAUSTED if it could not fork.
absl::StatusOr<pid_t> ReadZygoteReply(int control, absl::Time deadline);

}  // namespace pyexec

#endif  // PYEXEC_COMMON_ZYGOTE_PROTOCOL_H_

#ifndef PYEXEC_SERVER_ISOLATION_H_
#define PYEXEC_SERVER_ISOLATION_H_

// Which isolation layers stand between a session and the rest (pyexecd,
// the zygote, other sessions) on this machine, as pyexecd says at start-up,
// and whether that is enough to start. SECURITY.md explains each layer.

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {

// What pyexecd found out about its workers' confinement.
struct IsolationFacts {
  // The workers' confinement, as resolved (Landlock only if available,
  // the network mode that works here).
  internal::Confinement confinement;
  uid_t pyexecd_uid = 0;
  // Workers have uids of their own (--worker_uid_range).
  bool uid_per_worker = false;
  // The kernel's Landlock ABI (0: none).
  int landlock_abi = 0;
  // Authentication is configured: there are principals to keep apart.
  bool authentication = false;
  bool allow_shared_worker_uid = false;
  // How each session's processes are capped, in words ("" when they are
  // not).
  std::string process_cap;
};

// Whether workers run as pyexecd's own uid.
bool SharesPyexecdUid(const IsolationFacts& facts);

// One line for the start-up log: every layer and whether it is active.
std::string DescribeIsolation(const IsolationFacts& facts);

// FAILED_PRECONDITION, with what to do, when authentication is on and
// workers would share pyexecd's uid with nothing else to keep them from it
// (no Landlock with signal scoping, ABI >= 6), unless allowed.
absl::Status CheckIsolation(const IsolationFacts& facts);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_ISOLATION_H_

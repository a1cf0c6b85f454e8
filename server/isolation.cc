#include "server/isolation.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/landlock.h"

namespace pyexec {

bool SharesPyexecdUid(const IsolationFacts& facts) {
  if (facts.uid_per_worker) return false;
  const internal::Confinement& c = facts.confinement;
  return !c.switch_user() || c.uid() == facts.pyexecd_uid;
}

std::string DescribeIsolation(const IsolationFacts& facts) {
  const internal::Confinement& c = facts.confinement;
  std::vector<std::string> layers;
  layers.push_back(c.landlock() ? absl::StrCat("Landlock ", DescribeLandlock(facts.landlock_abi))
                                : facts.landlock_abi > 0 ? "Landlock off (--worker_landlock=false)"
                                                         : "Landlock unavailable on this kernel");
  if (facts.uid_per_worker) {
    layers.push_back("a uid per worker");
  } else if (SharesPyexecdUid(facts)) {
    layers.push_back(absl::StrCat("workers share pyexecd's uid ", facts.pyexecd_uid));
  } else {
    layers.push_back(absl::StrCat("workers as uid ", c.uid(), ", apart from pyexecd"));
  }
  layers.push_back(c.seccomp() ? "seccomp filter with argument rules" : "no seccomp filter");
  switch (c.network()) {
    case internal::Confinement::NONE:
      layers.push_back("network: an empty namespace");
      break;
    case internal::Confinement::NO_INET:
      layers.push_back("network: no inet sockets (seccomp)");
      break;
    default:
      layers.push_back("network: the host's");
      break;
  }
  if (!facts.process_cap.empty()) layers.push_back(facts.process_cap);
  layers.push_back("non-dumpable, clean environment, output to the log");
  return absl::StrCat("isolation: ", absl::StrJoin(layers, "; "));
}

absl::Status CheckIsolation(const IsolationFacts& facts) {
  if (!facts.authentication || facts.allow_shared_worker_uid || !SharesPyexecdUid(facts)) {
    return absl::OkStatus();
  }
  if (facts.confinement.landlock() && facts.landlock_abi >= 6) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "workers would run as pyexecd's own uid ", facts.pyexecd_uid, " with ",
      facts.confinement.landlock()
          ? absl::StrCat("Landlock ABI ", facts.landlock_abi,
                         ", which cannot scope signals (ABI 6 can)")
          : "no Landlock domain",
      ": a session could read the tokens and the peer secret and stop pyexecd. Run "
      "on a kernel with Landlock ABI >= 6 (Linux >= 6.12), or run pyexecd as root "
      "with --worker_user or --worker_uid_range, or pass --allow_shared_worker_uid "
      "to accept the risk"));
}

}  // namespace pyexec

#ifndef PYEXEC_SERVER_FILE_LIMIT_H_
#define PYEXEC_SERVER_FILE_LIMIT_H_

// pyexecd holds one descriptor per worker (its socket) besides its
// listeners, client connections and peers. systemd and many containers
// start services with a soft RLIMIT_NOFILE of 1024, which would stop a
// replica at about 900 sessions: it raises the soft limit to the hard one at
// start, and says so when --max_workers still cannot fit.

#include <cstdint>
#include <string>

namespace pyexec {

// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in
// force afterwards.
uint64_t RaiseOpenFileLimit();

// Descriptors pyexecd needs with these pool sizes: one per worker, plus
// kDescriptorReserve for everything else.
inline constexpr uint64_t kDescriptorReserve = 512;
uint64_t DescriptorsNeeded(int max_workers, int workers);

// A warning for the log when `limit` is below what the pool may need, else "".
std::string FileLimitWarning(uint64_t limit, int max_workers, int workers);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_FILE_LIMIT_H_

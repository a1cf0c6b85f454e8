// The floor of a design that runs each call in another process: a payload
// relayed to a helper process over a Unix socket and back, the answer read
// on an I/O thread. It is pyexecd's call path (the gRPC handler sends, a
// thread of its own waits for the answer and finishes the call) with nothing
// of pyexec's own in it: no Python, sessions, framing or protobuf on the hop.

#ifndef PYEXEC_BENCH_PROCESS_RELAY_H_
#define PYEXEC_BENCH_PROCESS_RELAY_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace pyexec {
namespace bench {

// Thread-safe.
class ProcessRelay {
 public:
  // The largest payload relayed (one SOCK_SEQPACKET message).
  static constexpr size_t kMaxPayload = 64 << 10;

  // Forks `helpers` processes, each echoing every message it reads on a
  // socket of its own, one message at a time. Call it before the process
  // starts threads: fork() copies only the calling thread. The helpers die
  // with this process (PR_SET_PDEATHSIG).
  static absl::StatusOr<std::unique_ptr<ProcessRelay>> Start(int helpers);

  // Stops the I/O thread, closes the sockets, kills and reaps the helpers;
  // a relay still waiting for its answer gets UNAVAILABLE.
  ~ProcessRelay();
  ProcessRelay(const ProcessRelay&) = delete;
  ProcessRelay& operator=(const ProcessRelay&) = delete;

  using Done = std::function<void(absl::StatusOr<std::string>)>;
  // Sends `payload` to a free helper. `done` gets its answer on the I/O
  // thread, with no lock held; or at once, on the caller's thread,
  // RESOURCE_EXHAUSTED when every helper is busy and INVALID_ARGUMENT for a
  // payload over kMaxPayload.
  void Send(const std::string& payload, Done done);

  // The helpers' pids (for tests that kill one).
  std::vector<pid_t> helper_pids() const;

 private:
  struct Helper {
    int fd = -1;
    pid_t pid = 0;
  };
  ProcessRelay() = default;
  void Run();
  // The relay waiting on helper `i` (empty if none), taken off it; the
  // helper is free again unless `dead`.
  Done Take(size_t i, bool dead);

  std::vector<Helper> helpers_;  // set before the I/O thread starts
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: the destructor stops the I/O thread with it
  absl::Mutex mu_;
  std::vector<size_t> free_ ABSL_GUARDED_BY(mu_);
  std::vector<Done> waiting_ ABSL_GUARDED_BY(mu_);  // by helper
  std::thread io_;
};

}  // namespace bench
}  // namespace pyexec

#endif  // PYEXEC_BENCH_PROCESS_RELAY_H_

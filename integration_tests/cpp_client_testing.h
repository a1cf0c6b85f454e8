// Helpers of the C++ client's integration tests: the real pyexecd on port
// 0, child processes whose output is read line by line, and a TCP proxy
// that stands for a load balancer.

#ifndef PYEXEC_INTEGRATION_TESTS_CPP_CLIENT_TESTING_H_
#define PYEXEC_INTEGRATION_TESTS_CPP_CLIENT_TESTING_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/process.h"

namespace pyexec {
namespace testing_util {

// A runfile of this workspace.
std::string Runfile(const std::string& path);

// `name` in $TEST_TMPDIR (else /tmp).
std::string TmpPath(const std::string& name);

// $PYEXECD when set, else the runfile server/pyexecd.
std::string PyexecdPath();

// Starts pyexecd with `flags` (add --listen=127.0.0.1:0 unless they name
// one), its log in $TEST_TMPDIR/<log_name>. Null (and a test failure) if it
// does not start.
std::unique_ptr<bench::ServerProcess> StartPyexecd(const std::vector<std::string>& flags,
                                                   const std::string& log_name);

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Polls `done` every 10 ms until it holds or `timeout` passes.
template <typename Pred>
bool WaitUntil(Pred done, absl::Duration timeout) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// A child process with its stdin, stdout and stderr on pipes (stdout and
// stderr read on threads of their own). Killed (SIGKILL) on destruction.
class Child {
 public:
  static absl::StatusOr<std::unique_ptr<Child>> Start(const std::vector<std::string>& argv);
  ~Child();

  pid_t pid() const { return pid_; }
  // Waits for a whole line (ended by a newline) of stderr (or stdout)
  // containing `needle`; returns it without the newline.
  absl::StatusOr<std::string> WaitForLine(const std::string& needle, absl::Duration timeout,
                                          bool from_stderr = true);
  // Writes to the child's stdin.
  bool Write(const std::string& text);
  // Sends `sig` and reaps the child; returns its wait status.
  int Kill(int sig);
  // Waits up to `timeout` for the child to exit, then for the end of its
  // output; returns its wait status, or nothing if it is still running.
  std::optional<int> Wait(absl::Duration timeout);
  // All output so far.
  std::string Output(bool from_stderr = true) const;

 private:
  Child() = default;
  void Pump(int fd, bool is_stderr);

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  bool reaped_ = false;
  std::thread out_thread_;
  std::thread err_thread_;
  mutable absl::Mutex mu_;
  std::string out_ ABSL_GUARDED_BY(mu_);
  std::string err_ ABSL_GUARDED_BY(mu_);
};

// A TCP proxy on 127.0.0.1 (port 0) that sends each new connection to the
// current backend, as an L4 balancer does. Thread-safe.
class TcpProxy {
 public:
  explicit TcpProxy(std::string backend);
  ~TcpProxy();

  const std::string& address() const { return address_; }
  // New connections go to `backend`.
  void SetBackend(const std::string& backend);
  // Closes every open connection (clients reconnect, to the new backend).
  void DropConnections();
  // Stops accepting and closes everything: the balancer is gone.
  void Stop();
  // Bytes carried so far, both directions.
  int64_t bytes() const { return bytes_.load(); }
  // Waits until bytes() stops moving for 150 ms (HTTP/2 acks and pings
  // after the last call) and returns it.
  int64_t SettledBytes() const;

 private:
  void AcceptLoop();
  void Pipe(int from, int to);

  std::string address_;
  int listen_fd_ = -1;
  std::atomic<bool> stopped_{false};
  std::atomic<int64_t> bytes_{0};
  std::thread accept_thread_;
  absl::Mutex mu_;
  std::string backend_ ABSL_GUARDED_BY(mu_);
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> pipes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace testing_util
}  // namespace pyexec

#endif  // PYEXEC_INTEGRATION_TESTS_CPP_CLIENT_TESTING_H_

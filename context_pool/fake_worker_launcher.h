#ifndef PYEXEC_CONTEXT_POOL_FAKE_WORKER_LAUNCHER_H_
#define PYEXEC_CONTEXT_POOL_FAKE_WORKER_LAUNCHER_H_

// In-process fake workers for pool tests: each is a thread speaking the real
// frame protocol over a socketpair, with no Python. An Eval's code selects
// the behaviour:
//   "sleep:MS"   sleeps MS ms, interruptibly (answers KeyboardInterrupt)
//   "stream:N"   sends N partial responses (values 0..N-1), then N
//   "bigstream:N:BYTES"  sends N partial responses of a BYTES-long str, then N
//   "spin"       ignores interrupts until killed
//   "exit:N"     the process "exits" with code N mid-call
//   "garbage"    writes bytes that are not a frame
//   "close"      closes its socket but keeps running until killed
//   anything else: answers str "<worker index>:<code>"

#include <atomic>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "context_pool/worker_launcher.h"

namespace pyexec {

class FakeWorkerLauncher final : public WorkerLauncher {
 public:
  // Ignores SIGPIPE process-wide, as pyexecd does: fake workers write to
  // sockets the pool may already have closed.
  FakeWorkerLauncher();

  absl::StatusOr<std::unique_ptr<WorkerProcess>> Launch() override;

  // Makes the next `n` launches fail.
  void FailNextLaunches(int n) { fail_launches_ = n; }
  // Gives the next `n` workers an exit fd that epoll refuses (/dev/null), as
  // if registering it failed.
  void UnwatchableNextLaunches(int n) { unwatchable_launches_ = n; }
  // Workers launched so far.
  int launched() const { return launched_; }

 private:
  std::atomic<int> fail_launches_{0};
  std::atomic<int> launched_{0};
  std::atomic<int> unwatchable_launches_{0};
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_FAKE_WORKER_LAUNCHER_H_

// What context_pool.cc (the public entry points) and context_pool_io.cc (the
// I/O thread) share: the pool's private records of calls, workers and
// waiters, and the I/O thread's constants. Internal to the context_pool
// library; include only from those two files.

#ifndef PYEXEC_CONTEXT_POOL_CONTEXT_POOL_INTERNAL_H_
#define PYEXEC_CONTEXT_POOL_CONTEXT_POOL_INTERNAL_H_

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "context_pool/context_pool.h"

namespace pyexec {
namespace context_pool_internal {

// Epoll keys: 0 is the wake eventfd; a worker's socket is key*2 and its exit
// fd key*2+1 (worker keys start at 1).
constexpr uint64_t kWakeKey = 0;

// While timers are being scheduled, the I/O thread sleeps at most this long
// at a time, so that a timer due later needs no wake-up: in steady traffic
// every call schedules a deadline timer, which would otherwise wake the
// thread each time it had just gone to sleep with no timer pending.
constexpr absl::Duration kTimerHorizon = absl::Seconds(1);

inline std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

}  // namespace context_pool_internal

struct ContextPool::Call {
  CallId id = 0;
  internal::WorkerRequest request;
  CallDone done;
  // When the call must end (MonotonicNow time); the worker learns how much
  // time is left when the call starts.
  absl::Time deadline;
  TimerQueue::Timer deadline_timer;
  TimerQueue::Timer kill_timer;
  // Why the call was interrupted (DEADLINE_EXCEEDED or CANCELLED); OK if not.
  absl::StatusCode interrupted = absl::StatusCode::kOk;
  // Interrupted by InterruptWorker rather than by its own client.
  bool by_interrupt_request = false;
  // Streamed calls: where events go, and how many are not yet consumed.
  CallEvent events;
  int events_outstanding = 0;
  // Bytes of those events, and each one's size in the order handed out
  // (the consumer consumes in that order).
  size_t bytes_outstanding = 0;
  std::deque<size_t> outstanding_sizes;
  // Keeps the events, then the outcome, in order (streamed calls only), and
  // the sequence number of the next one.
  std::shared_ptr<OrderedDelivery> order;
  uint64_t next_seq = 0;
  // Who made the call (stateless calls of different principals never share
  // a worker).
  std::string principal;
  // Request bytes counted in queued_bytes_ while the call waits in a queue.
  size_t queued_bytes = 0;
  // A traced call (WorkerRequest.trace): when its frame went to the worker.
  int64_t trace_sent_ns = 0;
};

struct ContextPool::Worker {
  enum class State { kStarting, kReady, kDying };

  Worker(uint64_t key, std::unique_ptr<WorkerProcess> process, size_t max_frame_bytes)
      : key(key),
        process(std::move(process)),
        connection(this->process->socket_fd(), max_frame_bytes) {}

  const uint64_t key;
  const std::unique_ptr<WorkerProcess> process;
  WorkerConnection connection;
  State state = State::kStarting;
  bool checked_out = false;
  // Has run a stateless call: its interpreter may hold state left by that
  // call (builtins, sys.modules...), so it is never handed to a session, and
  // only `principal`'s stateless calls may run on it.
  bool tainted = false;
  std::string principal;
  // Discarded by Release, Shutdown or the scheduler: its end is expected.
  bool released = false;
  bool socket_registered = false;
  bool exit_registered = false;
  // Set when the pool killed the worker for a fault; explains its death.
  std::optional<DeathCause> condemned_cause;
  std::string condemned_reason;
  std::unique_ptr<Call> current;
  // Calls made by the client while it runs a callback of `current` (or of
  // the nested call below): they run on top of it, innermost last.
  std::vector<std::unique_ptr<Call>> nested;
  std::deque<std::unique_ptr<Call>> queue;  // session calls waiting to run
  TimerQueue::Timer startup_timer;
  // Polls for its exit once it hung up or was killed (no exit fd).
  TimerQueue::Timer reap_timer;

  // The call whose responses the worker sends now: the innermost.
  Call* top() const { return nested.empty() ? current.get() : nested.back().get(); }
};

struct ContextPool::Waiter {
  uint64_t id = 0;
  AcquireDone done;
  TimerQueue::Timer timer;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_CONTEXT_POOL_INTERNAL_H_

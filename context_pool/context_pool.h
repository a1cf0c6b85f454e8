#ifndef PYEXEC_CONTEXT_POOL_CONTEXT_POOL_H_
#define PYEXEC_CONTEXT_POOL_CONTEXT_POOL_H_

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/unique_fd.h"
#include "common/frame.h"
#include "common/limits.h"
#include "context_pool/death_cause.h"
#include "context_pool/ordered_delivery.h"
#include "context_pool/pool_ids.h"
#include "context_pool/scheduler.h"
#include "context_pool/timer_queue.h"
#include "context_pool/worker_connection.h"
#include "context_pool/worker_launcher.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {

// Settings of a ContextPool.
struct ContextPoolOptions {
  // Idle, unbound workers kept warm for stateless calls and fast binds.
  int workers = 4;
  // Most workers checked out (bound to sessions) at once.
  int max_workers = 16;
  // Most calls and binds waiting for a worker; more are refused with
  // RESOURCE_EXHAUSTED.
  int max_pending = 1024;
  // How long an interrupted call may take to stop before its worker is
  // SIGKILLed.
  absl::Duration kill_grace = absl::Seconds(2);
  // How long a new worker may take to say hello before it is killed.
  absl::Duration startup_timeout = absl::Seconds(60);
  // Largest frame accepted from a worker.
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Events of a streamed call handed to its consumer and not yet consumed
  // (EventConsumed). At this bound the pool stops reading that worker's
  // socket, so the worker blocks in write() and its Python code pauses:
  // server memory per stream stays bounded however slow the client is.
  int max_buffered_events = 8;
  // The same bound in bytes of those events (high watermark): reading
  // pauses once the unconsumed events reach it, so a slow reader of large
  // items holds about this much, not max_buffered_events large items.
  size_t max_buffered_bytes = 16 << 20;
  // Most request bytes waiting in queues (stateless and per session), so
  // that a few huge requests cannot pile up memory; past it, RESOURCE_EXHAUSTED.
  // One call may always wait, whatever its size.
  size_t max_queued_bytes = 256 << 20;
  // Reads the wall clock that callers' deadlines (absl::Time) refer to.
  // Tests inject one that jumps.
  std::function<absl::Time()> wall_clock = absl::Now;
  // Longest time the I/O thread polls for a worker's answer before it
  // blocks in epoll_wait (0: it never polls). A blocked thread pays a wake-up
  // when the answer comes, which on a VM without guest halt-polling is a
  // hypervisor exit; polling a little instead catches quick answers awake.
  // The window adapts as haltpoll's does: it doubles when a block ended
  // within io_spin (a longer poll would have caught it) and halves when a
  // block outlasted it. It polls only while calls run and fewer of them than
  // spin_below_calls, so that it never takes a core a worker needs.
  absl::Duration io_spin = absl::ZeroDuration();
  // 0: the number of CPUs this process may run on.
  int spin_below_calls = 0;
};

// Figures reported by GetStats.
struct PoolStats {
  int num_workers = 0;        // ready workers: available + busy + checked out
  int available_workers = 0;  // idle, unbound, ready
  int checked_out = 0;        // bound to sessions
  int pending_requests = 0;   // calls and binds waiting for a worker
  int starting_workers = 0;   // spawned, not yet ready
  int busy_workers = 0;       // running a call
  uint64_t workers_spawned = 0;
  uint64_t workers_died = 0;  // deaths the pool did not ask for
  uint64_t calls_total = 0;   // calls answered
  // workers_died by cause (DeathCauseLabel), for metrics.
  std::map<std::string, uint64_t> deaths_by_reason;
};


// Receives the outcome of a call: the worker's response, or a service-level
// error (DEADLINE_EXCEEDED, CANCELLED, ABORTED, NOT_FOUND, UNAVAILABLE,
// RESOURCE_EXHAUSTED, INVALID_ARGUMENT).
using CallDone =
    std::function<void(absl::StatusOr<internal::WorkerResponse> result)>;
// Receives each intermediate event of a streamed call (a WorkerResponse with
// `partial` set: one output chunk or one value), in order and before its
// CallDone. The consumer calls ContextPool::EventConsumed(call) once it has
// passed the event on.
using CallEvent =
    std::function<void(CallId call, internal::WorkerResponse event)>;
// Receives the outcome of Acquire.
using AcquireDone = std::function<void(absl::StatusOr<WorkerId> worker)>;
// Told when a checked-out worker is gone without Release (death, kill).
using WorkerLostListener =
    std::function<void(WorkerId worker, const std::string& reason)>;

// The pool of Python worker processes: spawns them, hands out workers to
// sessions, dispatches calls, enforces deadlines (interrupt, then kill after
// kill_grace), notices deaths at once and heals itself.
//
// Thread-safe. No method blocks on a worker: results arrive through
// callbacks, which run on the pool's I/O thread, or on the calling thread for
// calls refused at once, and never with the pool's lock held (they may call
// back into the pool).
class ContextPool {
 public:
  ContextPool(ContextPoolOptions options,
              std::unique_ptr<WorkerLauncher> launcher);
  ContextPool(const ContextPool&) = delete;
  ContextPool& operator=(const ContextPool&) = delete;
  // Shuts down if Start succeeded.
  ~ContextPool();

  // Starts the I/O thread, which spawns the initial workers. REQUIRES: called
  // once, before anything else.
  absl::Status Start();

  // Waits until `options.workers` workers are ready. Returns false on timeout.
  bool WaitUntilWarm(absl::Duration timeout);

  // Checks out a worker exclusively. The worker has never run a call: a
  // worker that served stateless calls is never handed to a session. Spawns
  // one when no fresh worker is idle. Fails
  // with RESOURCE_EXHAUSTED "no_workers_available" when max_workers are
  // checked out, and DEADLINE_EXCEEDED if none is ready by `deadline`.
  void Acquire(absl::Time deadline, AcquireDone done);

  // Gives back a checked-out worker. Its process is discarded, so no state
  // leaks to the next session; a call still running on it ends ABORTED.
  // Unknown ids are ignored.
  void Release(WorkerId worker);

  // Runs `request` on checked-out `worker`, or on an idle unbound worker
  // when `worker` is 0. Calls on one worker run in submission order.
  // `request.id` is assigned by the pool.
  //
  // Stateless calls (`worker` 0) run only on a worker that is fresh or has
  // run stateless calls of the same `principal` only; a worker that ran
  // another principal's calls is recycled (killed, and a fresh one spawned)
  // rather than shared. Waiting stateless calls are dispatched fairly: the
  // principal with the fewest running stateless calls goes first.
  //
  // With `events`, the request is streamed (`request.stream` is set): its
  // partial responses go to `events`, with backpressure (see
  // max_buffered_events). Events of an interrupted call are dropped.
  //
  // With `nested_in`, the call was made by the client while it runs a
  // callback of that call: it runs at once on top of it, on its worker
  // (which waits for the callback's answer and runs what arrives
  // meanwhile), provided that call is the innermost on its worker and was
  // made by the same `principal`; else NOT_FOUND. `worker` is then ignored.
  CallId Submit(WorkerId worker, internal::WorkerRequest request,
                absl::Time deadline, CallDone done,
                absl::string_view principal = "", CallEvent events = nullptr,
                CallId nested_in = 0);

  // Sends a frame that is not a call (a callback's answer) to the worker
  // running `call`. NOT_FOUND if the call has ended.
  absl::Status SendToCall(CallId call, internal::WorkerRequest frame);

  // Interrupts the call `call` as InterruptWorker does: running, it is
  // interrupted; waiting, it ends CANCELLED without running. Returns
  // whether it was open.
  absl::StatusOr<bool> InterruptCall(CallId call);

  // The consumer of a streamed call has passed one event on; reading from
  // its worker resumes if it was paused. Unknown calls are ignored. May run
  // the call's callbacks on the calling thread: call it without holding a
  // lock that those callbacks take.
  void EventConsumed(CallId call);

  // Interrupts the call running on checked-out `worker` (the innermost, when
  // calls are nested), as Cancel does; it ends CANCELLED. With nothing
  // running, the first call waiting on the worker ends CANCELLED without
  // running. Returns whether there was such a call, or NOT_FOUND if the
  // worker is gone or dying (as Submit would).
  absl::StatusOr<bool> InterruptWorker(WorkerId worker);

  // The client gave up on `call`: drops it if it is still waiting, or
  // interrupts it (and kills after kill_grace). It ends CANCELLED. Unknown or
  // finished calls are ignored.
  void Cancel(CallId call);

  // Registers the listener for lost workers. REQUIRES: before Start.
  void SetWorkerLostListener(WorkerLostListener listener);

  // From now on refuses new binds and calls with UNAVAILABLE; calls already
  // accepted carry on. With `keep_session_calls`, calls on checked-out
  // workers are still taken (the sessions are being moved away, and their
  // snapshots are calls too; the core refuses clients' calls on a session
  // once its move starts).
  void BeginDrain(bool keep_session_calls = false);
  bool draining() const {
    absl::MutexLock lock(&mu_);
    return draining_;
  }
  // Waits until no call is running or waiting. Returns false on timeout.
  bool WaitForCallsToFinish(absl::Time deadline);

  // Stops the I/O thread, kills every worker and waits for them to exit.
  // Calls still open end UNAVAILABLE. Idempotent.
  void Shutdown();

  PoolStats GetStats() const;
  int max_workers() const { return options_.max_workers; }

 private:
  struct Call;
  struct Worker;
  struct Waiter;
  // Work to run once the lock is released: callbacks, and the destruction of
  // dead workers (which returns their holdings).
  using Deferred = std::vector<std::function<void()>>;

  // A launch ended: the worker joins the pool, or the failure is handled
  // (backoff; binds refused at once when out of resources).
  void SpawnedLocked(absl::StatusOr<std::unique_ptr<WorkerProcess>> process,
                     Deferred* deferred) ABSL_LOCKS_EXCLUDED(mu_);
  void IoLoop();
  // Waits for events like epoll_wait, first polling for up to the current
  // window when `poll` is set, and adapts the window.
  int WaitForEvents(epoll_event* events, int max_events, int timeout_ms, bool poll);
  void Wake();
  // Schedules a timer whose callback runs on the I/O thread under the lock;
  // wakes the I/O thread only if it would otherwise sleep past `when`.
  TimerQueue::Timer ScheduleLocked(absl::Time when, std::function<void()> fire)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Handles readiness of one worker's descriptors.
  void OnWorkerEvent(uint64_t epoll_key, uint32_t events, Deferred* deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads the frames that arrived (or, with `resume`, lifts a backpressure
  // pause first); condemns the worker on a protocol error.
  void ReadFrames(Worker* w, bool resume, Deferred* deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Handles one frame; false when the worker was condemned or reading
  // paused.
  bool HandleFrame(Worker* w, const std::string& payload, Deferred* deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends a frame to the worker; condemns it if its socket failed.
  void SendFrame(Worker* w, const internal::WorkerRequest& frame)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Something is wrong with the worker (protocol error, socket closed,
  // timeout): kill it; it is cleaned up once its exit is observed.
  void Condemn(Worker* w, DeathCause cause, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Kills a worker the pool no longer wants (released, recycled, retired):
  // its end is expected.
  void Discard(Worker* w, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A worker without an exit fd hung up or was killed: reaps it now if it
  // has exited (burying it into `deferred`, or from a timer when null), else
  // polls TryReap with a backoff from 1 ms to 100 ms, and condemns it if it
  // outlives its socket by 100 ms.
  void AwaitExit(Worker* w, Deferred* deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleReapPoll(uint64_t key, absl::Duration delay, absl::Time since)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The process has exited (or is being discarded): finish its calls, tell
  // listeners, forget it; it is destroyed once the lock is released.
  void Bury(Worker* w, const WorkerExit& exit, Deferred* deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives idle workers work: acquire waiters first, then pending calls.
  void Dispatch(Deferred* deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes `w` idle again (ready, unbound) and retires workers past the
  // pool's size.
  void BecomeIdle(Worker* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartCall(Worker* w, std::unique_ptr<Call> call)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishCall(std::unique_ptr<Call> call,
                  absl::StatusOr<internal::WorkerResponse> result,
                  Deferred* deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The open call `id` and, if it is running, its worker (else
  // *running_on = nullptr: it is queued). nullptr if it is not open.
  Call* FindCall(CallId id, Worker** running_on)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The wait queue at a call location: the stateless queue for 0, else that
  // worker's session queue; nullptr if the worker is gone.
  std::deque<std::unique_ptr<Call>>* QueueAt(uint64_t location)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a call that is still waiting in a queue; ignores unknown ids.
  void FinishQueuedCall(CallId id, const absl::Status& status,
                        Deferred* deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void InterruptCall(Worker* w, Call* call, absl::StatusCode reason, Deferred* deferred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What a finished call ends with: the worker's response, or the status
  // its interruption calls for.
  static absl::StatusOr<internal::WorkerResponse> Outcome(const Call& call,
                                                          internal::WorkerResponse response);
  static absl::Status InterruptedBeforeItRan();
  // Tells the call's request how much of its deadline is left, just before
  // it goes to its worker.
  static void SetTimeLeft(Call* call);
  // The call's deadline passed.
  void OnCallDeadline(CallId id, Deferred* deferred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a streamed call's consumer is too far behind to read more from
  // its worker (events or bytes outstanding at their bound).
  bool StreamFull(const Call& call) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the worker socket's epoll interest from its connection's state.
  void UpdateEpoll(Worker* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The spawner thread: launches workers as the I/O loop asks.
  void SpawnLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void SpawnOne() ABSL_LOCKS_EXCLUDED(mu_);
  // Registers a new worker's socket and exit fd with epoll under `key`.
  absl::Status Watch(const WorkerProcess& process, uint64_t key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes `fd` from epoll.
  void Unwatch(int fd) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunDeferred(Deferred* deferred) ABSL_LOCKS_EXCLUDED(mu_);
  // A call leaves its queue (to run or to end): its bytes no longer wait.
  void Dequeued(Call* call) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ContextPoolOptions options_;
  const std::unique_ptr<WorkerLauncher> launcher_;
  WorkerLostListener lost_listener_;

  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;  // eventfd
  std::thread io_thread_;
  std::thread spawn_thread_;

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool drain_keeps_sessions_ ABSL_GUARDED_BY(mu_) = false;
  // Every live worker process, by key (a WorkerId once checked out).
  absl::flat_hash_map<uint64_t, std::unique_ptr<Worker>> workers_
      ABSL_GUARDED_BY(mu_);
  // Placement, fairness, recycling, trimming and spawn decisions.
  Scheduler scheduler_ ABSL_GUARDED_BY(mu_);
  // Stateless calls waiting for an idle worker.
  std::deque<std::unique_ptr<Call>> pending_ ABSL_GUARDED_BY(mu_);
  // Binds waiting for a worker to become ready.
  std::deque<std::unique_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(mu_);
  // Where each open call is: the worker running it or queued on it (0 for
  // the stateless queue).
  absl::flat_hash_map<CallId, uint64_t> call_location_ ABSL_GUARDED_BY(mu_);
  // Keyed by MonotonicNow() time; callers' wall-clock deadlines are
  // converted once, on entry.
  TimerQueue timers_ ABSL_GUARDED_BY(mu_);
  // What timer callbacks left to run once the lock is released.
  Deferred timer_deferred_ ABSL_GUARDED_BY(mu_);
  // The time the I/O thread sleeps until (a timer earlier than this wakes
  // it), and the last time a timer was scheduled: while timers come and go,
  // the loop sleeps at most kTimerHorizon at a time, so that the next
  // call's deadline timer needs no wake-up of its own.
  absl::Time sleep_until_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time last_scheduled_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t next_key_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
  int starting_ ABSL_GUARDED_BY(mu_) = 0;
  // Launches asked of the spawner thread and not yet begun.
  int spawn_requests_ ABSL_GUARDED_BY(mu_) = 0;
  // Launches asked and not yet returned (includes spawn_requests_).
  int launching_ ABSL_GUARDED_BY(mu_) = 0;
  int checked_out_ ABSL_GUARDED_BY(mu_) = 0;
  int open_calls_ ABSL_GUARDED_BY(mu_) = 0;
  // The I/O thread is (about to be) blocked in epoll_wait: a call sent now
  // wakes it so that it polls for the answer (io_spin).
  bool io_blocked_ ABSL_GUARDED_BY(mu_) = false;
  // The I/O thread's current poll window in nanoseconds (it alone writes
  // it; others read it to decide whether waking it is worth it).
  std::atomic<int64_t> spin_window_ns_{0};
  int spin_below_calls_ = 1;
  // Calls waiting in any queue (stateless and per session).
  int queued_calls_ ABSL_GUARDED_BY(mu_) = 0;
  // Request bytes of the calls waiting in any queue.
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t workers_spawned_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t workers_died_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, uint64_t> deaths_by_reason_ ABSL_GUARDED_BY(mu_);
  uint64_t calls_total_ ABSL_GUARDED_BY(mu_) = 0;
  int consecutive_spawn_failures_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time next_spawn_attempt_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_CONTEXT_POOL_H_

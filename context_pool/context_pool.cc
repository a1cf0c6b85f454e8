#include "context_pool/context_pool.h"

#include <errno.h>
#include <string.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/logging.h"
#include "common/thread_name.h"

namespace pyexec {
namespace {

// Epoll keys: 0 is the wake eventfd; a worker's socket is key*2 and its exit
// fd key*2+1 (worker keys start at 1).
constexpr uint64_t kWakeKey = 0;

// While timers are being scheduled, the I/O thread sleeps at most this long
// at a time, so that a timer due later needs no wake-up: in steady traffic
// every call schedules a deadline timer, which would otherwise wake the
// thread each time it had just gone to sleep with no timer pending.
constexpr absl::Duration kTimerHorizon = absl::Seconds(1);

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

}  // namespace

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

ContextPool::ContextPool(ContextPoolOptions options,
                         std::unique_ptr<WorkerLauncher> launcher)
    : options_(options), launcher_(std::move(launcher)), scheduler_(options.workers) {}

ContextPool::~ContextPool() { Shutdown(); }

void ContextPool::SetWorkerLostListener(WorkerLostListener listener) {
  lost_listener_ = std::move(listener);
}

absl::Status ContextPool::Start() {
  if (options_.spin_below_calls > 0) {
    spin_below_calls_ = options_.spin_below_calls;
  } else {
    cpu_set_t cpus;
    spin_below_calls_ =
        sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? std::max(1, CPU_COUNT(&cpus)) : 1;
  }
  spin_window_ns_.store(absl::ToInt64Nanoseconds(options_.io_spin) / 10);
  epoll_fd_.reset(epoll_create1(EPOLL_CLOEXEC));
  wake_fd_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_fd_.valid() || !wake_fd_.valid()) {
    return absl::InternalError(absl::StrCat("epoll/eventfd: ", strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeKey;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, wake_fd_.get(), &ev) != 0) {
    return absl::InternalError(absl::StrCat("epoll_ctl: ", strerror(errno)));
  }
  {
    absl::MutexLock lock(&mu_);
    started_ = true;
  }
  io_thread_ = std::thread([this] {
    NameThisThread("pool-io");
    IoLoop();
  });
  spawn_thread_ = std::thread([this] {
    NameThisThread("pool-spawn");
    SpawnLoop();
  });
  return absl::OkStatus();
}

bool ContextPool::WaitUntilWarm(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto warm = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return static_cast<int>(scheduler_.idle_count()) >= options_.workers;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&warm), timeout);
}

int ContextPool::WaitForEvents(epoll_event* events, int max_events, int timeout_ms,
                               bool poll) {
  const int64_t max_ns = absl::ToInt64Nanoseconds(options_.io_spin);
  int64_t window = spin_window_ns_.load(std::memory_order_relaxed);
  if (poll && window > 0) {
    const int64_t until = MonotonicNanos() + window;
    do {
      int n = epoll_wait(epoll_fd_.get(), events, max_events, 0);
      if (n != 0) return n;  // caught awake: the window stays
    } while (MonotonicNanos() < until);
  }
  if (poll) {
    absl::MutexLock lock(&mu_);
    io_blocked_ = true;  // calls sent from now on wake us to poll again
  }
  const int64_t blocked_at = MonotonicNanos();
  int n = epoll_wait(epoll_fd_.get(), events, max_events, timeout_ms);
  if (poll && n > 0) {
    const int64_t blocked_for = MonotonicNanos() - blocked_at;
    // haltpoll's rule: a block that a longer poll would have caught grows
    // the window, one longer than the maximum shrinks it.
    // It never drops below a tenth of the maximum, so that a quiet spell
    // does not stop the polling for good.
    if (blocked_for + window <= max_ns) {
      window = std::min(max_ns, window * 2);
    } else {
      window = std::max(max_ns / 10, window / 2);
    }
    spin_window_ns_.store(window, std::memory_order_relaxed);
  }
  return n;
}

void ContextPool::Wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
}

TimerQueue::Timer ContextPool::ScheduleLocked(absl::Time when, std::function<void()> fire) {
  last_scheduled_ = MonotonicNow();
  TimerQueue::Timer timer = timers_.Schedule(when, std::move(fire));
  if (when < sleep_until_) {
    sleep_until_ = when;
    Wake();
  }
  return timer;
}

void ContextPool::RunDeferred(Deferred* deferred) {
  for (auto& fn : *deferred) fn();
  deferred->clear();
}

// ---------------------------------------------------------------------------
// Public entry points (any thread).

void ContextPool::Acquire(absl::Time deadline, AcquireDone done) {
  absl::Status refused;
  WorkerId granted = 0;
  {
    absl::MutexLock lock(&mu_);
    if (draining_ || stopping_) {
      refused = absl::UnavailableError("server is shutting down");
    } else if (checked_out_ + static_cast<int>(waiters_.size()) >= options_.max_workers) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "no_workers_available: all ", options_.max_workers,
          " workers are bound to sessions"));
    } else if ((granted = scheduler_.TakeForSession()) != 0) {
      workers_.at(granted)->checked_out = true;
      ++checked_out_;
      Wake();  // spawn a replacement for the warm pool
    } else if (static_cast<int>(waiters_.size()) >= options_.max_pending) {
      refused = absl::ResourceExhaustedError("too many binds waiting");
    } else {
      auto waiter = std::make_unique<Waiter>();
      waiter->id = next_call_id_++;
      waiter->done = std::move(done);
      waiter->timer = ScheduleLocked(
          WallToMonotonic(deadline, options_.wall_clock()), [this, id = waiter->id]()
                                                                ABSL_NO_THREAD_SAFETY_ANALYSIS {
            auto it = std::find_if(waiters_.begin(), waiters_.end(),
                                   [id](const auto& w) { return w->id == id; });
            if (it == waiters_.end()) return;
            AcquireDone done = std::move((*it)->done);
            waiters_.erase(it);
            timer_deferred_.push_back([done = std::move(done)] {
              done(absl::DeadlineExceededError(
                  "deadline exceeded while waiting for a worker to start"));
            });
          });
      waiters_.push_back(std::move(waiter));
      Wake();
      return;
    }
  }
  if (granted != 0) {
    done(granted);
  } else {
    done(refused);
  }
}

void ContextPool::Release(WorkerId worker) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker);
    if (it == workers_.end() || !it->second->checked_out) return;
    Worker* w = it->second.get();
    w->checked_out = false;
    --checked_out_;
    while (!w->nested.empty()) {
      FinishCall(std::move(w->nested.back()),
                 absl::AbortedError("the session was unbound during the call"), &deferred);
      w->nested.pop_back();
    }
    if (w->current != nullptr) {
      FinishCall(std::move(w->current),
                 absl::AbortedError("the session was unbound during the call"), &deferred);
    }
    while (!w->queue.empty()) {
      std::unique_ptr<Call> call = std::move(w->queue.front());
      w->queue.pop_front();
      --queued_calls_;
      FinishCall(std::move(call),
                 absl::AbortedError("the session was unbound before the call ran"),
                 &deferred);
    }
    Discard(w, "released");
  }
  RunDeferred(&deferred);
}

CallId ContextPool::Submit(WorkerId worker, internal::WorkerRequest request,
                           absl::Time deadline, CallDone done,
                           absl::string_view principal, CallEvent events, CallId nested_in) {
  absl::Status refused;
  CallId id = 0;
  {
    absl::MutexLock lock(&mu_);
    id = next_call_id_++;
    // Where the call goes: started at once on `start`, or appended to
    // `queue` (a session's queue, or the stateless one), or run on top of
    // the call `nested_in` on `nest_on`.
    Worker* start = nullptr;
    Worker* nest_on = nullptr;
    std::deque<std::unique_ptr<Call>>* queue = nullptr;
    uint64_t queue_location = 0;
    if (stopping_ || (draining_ && (worker == 0 || !drain_keeps_sessions_))) {
      refused = absl::UnavailableError("server is shutting down");
    } else if (nested_in != 0) {
      Worker* w = nullptr;
      Call* outer = FindCall(nested_in, &w);
      if (outer == nullptr || w == nullptr || w->top() != outer ||
          outer->principal != principal || w->state == Worker::State::kDying) {
        refused = absl::NotFoundError(
            "the callback this call was made from has ended (or was not this caller's)");
      } else {
        nest_on = w;
      }
    } else if (worker != 0) {
      auto it = workers_.find(worker);
      if (it == workers_.end() || !it->second->checked_out ||
          it->second->state == Worker::State::kDying) {
        refused = absl::NotFoundError("session not found: its interpreter is gone");
      } else if (Worker* w = it->second.get(); w->current == nullptr && w->queue.empty()) {
        start = w;
      } else if (static_cast<int>(w->queue.size()) >= options_.max_pending) {
        refused = absl::ResourceExhaustedError("too many calls waiting for this session");
      } else {
        queue = &w->queue;
        queue_location = w->key;
      }
    } else if (uint64_t key = scheduler_.TakeForStateless(principal); key != 0) {
      start = workers_.at(key).get();
    } else if (static_cast<int>(pending_.size()) >= options_.max_pending) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "too many calls waiting for a worker (limit ", options_.max_pending, ")"));
    } else {
      queue = &pending_;
      // Idle workers may all belong to other principals: the I/O thread
      // decides whether to recycle one.
      Wake();
    }
    size_t bytes = 0;
    if (refused.ok() && queue != nullptr) {
      bytes = request.ByteSizeLong();
      if (queued_bytes_ > 0 && queued_bytes_ + bytes > options_.max_queued_bytes) {
        refused = absl::ResourceExhaustedError(absl::StrCat(
            "too many request bytes waiting for workers (limit ",
            options_.max_queued_bytes, " bytes)"));
      }
    }
    if (refused.ok()) {
      auto call = std::make_unique<Call>();
      call->id = id;
      request.set_id(id);
      call->request = std::move(request);
      call->done = std::move(done);
      call->events = std::move(events);
      call->principal = std::string(principal);
      call->deadline = WallToMonotonic(deadline, options_.wall_clock());
      call->deadline_timer =
          ScheduleLocked(call->deadline, [this, id]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
            OnCallDeadline(id, &timer_deferred_);
          });
      ++open_calls_;
      if (nest_on != nullptr) {
        call_location_[id] = nest_on->key;
        SetTimeLeft(call.get());
        internal::WorkerRequest frame = std::move(call->request);
        call->request.Clear();
        nest_on->nested.push_back(std::move(call));
        SendFrame(nest_on, frame);
      } else if (start != nullptr) {
        StartCall(start, std::move(call));
      } else {
        call_location_[id] = queue_location;
        call->queued_bytes = bytes;
        queued_bytes_ += bytes;
        ++queued_calls_;
        queue->push_back(std::move(call));
      }
    }
  }
  if (!refused.ok()) done(refused);
  return id;
}

std::deque<std::unique_ptr<ContextPool::Call>>* ContextPool::QueueAt(uint64_t location) {
  if (location == 0) return &pending_;
  auto it = workers_.find(location);
  return it == workers_.end() ? nullptr : &it->second->queue;
}

ContextPool::Call* ContextPool::FindCall(CallId id, Worker** running_on) {
  *running_on = nullptr;
  auto loc = call_location_.find(id);
  if (loc == call_location_.end()) return nullptr;
  if (loc->second != 0) {
    auto it = workers_.find(loc->second);
    if (it != workers_.end()) {
      Worker* w = it->second.get();
      if (w->current != nullptr && w->current->id == id) {
        *running_on = w;
        return w->current.get();
      }
      for (auto& nested : w->nested) {
        if (nested->id == id) {
          *running_on = w;
          return nested.get();
        }
      }
    }
  }
  std::deque<std::unique_ptr<Call>>* queue = QueueAt(loc->second);
  if (queue == nullptr) return nullptr;
  for (auto& call : *queue) {
    if (call->id == id) return call.get();
  }
  return nullptr;
}

void ContextPool::Cancel(CallId call) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    Worker* running_on;
    Call* found = FindCall(call, &running_on);
    if (found == nullptr) return;
    if (running_on != nullptr) {
      InterruptCall(running_on, found, absl::StatusCode::kCancelled, &deferred);
    } else {
      FinishQueuedCall(call, absl::CancelledError("cancelled by the client"), &deferred);
    }
  }
  RunDeferred(&deferred);
}

void ContextPool::EventConsumed(CallId id) {
  Deferred deferred;
  {
    absl::MutexLock lock(&mu_);
    Worker* running_on;
    Call* call = FindCall(id, &running_on);
    if (call == nullptr || running_on == nullptr) return;
    if (call->events_outstanding > 0) --call->events_outstanding;
    if (!call->outstanding_sizes.empty()) {
      call->bytes_outstanding -= call->outstanding_sizes.front();
      call->outstanding_sizes.pop_front();
    }
    if (running_on->connection.paused() && !StreamFull(*call)) {
      ReadFrames(running_on, /*resume=*/true, &deferred);
    }
  }
  RunDeferred(&deferred);
}

absl::StatusOr<bool> ContextPool::InterruptWorker(WorkerId worker) {
  Deferred deferred;
  bool running = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker);
    if (it == workers_.end() || !it->second->checked_out ||
        it->second->state == Worker::State::kDying) {
      return absl::NotFoundError("session not found: its interpreter is gone");
    }
    Worker* w = it->second.get();
    if (w->current != nullptr) {
      running = true;
      Call* call = w->top();
      if (call->interrupted == absl::StatusCode::kOk) call->by_interrupt_request = true;
      InterruptCall(w, call, absl::StatusCode::kCancelled, &deferred);
    } else if (!w->queue.empty()) {
      // Received but not started: the interrupt is for it.
      running = true;
      FinishQueuedCall(w->queue.front()->id, InterruptedBeforeItRan(), &deferred);
    }
  }
  RunDeferred(&deferred);
  return running;
}

absl::StatusOr<bool> ContextPool::InterruptCall(CallId id) {
  Deferred deferred;
  bool found = false;
  {
    absl::MutexLock lock(&mu_);
    Worker* running_on;
    Call* call = FindCall(id, &running_on);
    if (call != nullptr) {
      found = true;
      if (running_on != nullptr) {
        if (call->interrupted == absl::StatusCode::kOk) call->by_interrupt_request = true;
        InterruptCall(running_on, call, absl::StatusCode::kCancelled, &deferred);
      } else {
        FinishQueuedCall(id, InterruptedBeforeItRan(), &deferred);
      }
    }
  }
  RunDeferred(&deferred);
  return found;
}

absl::Status ContextPool::SendToCall(CallId id, internal::WorkerRequest frame) {
  absl::MutexLock lock(&mu_);
  Worker* running_on;
  Call* call = FindCall(id, &running_on);
  if (call == nullptr || running_on == nullptr || running_on->state == Worker::State::kDying) {
    return absl::NotFoundError("the call has ended");
  }
  frame.set_id(id);
  SendFrame(running_on, frame);
  return absl::OkStatus();
}

void ContextPool::BeginDrain(bool keep_session_calls) {
  std::deque<std::unique_ptr<Waiter>> waiters;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    drain_keeps_sessions_ = keep_session_calls;
    // Binds that were waiting will not get a worker now.
    waiters.swap(waiters_);
    for (auto& waiter : waiters) waiter->timer.Cancel();
  }
  for (auto& waiter : waiters) {
    waiter->done(absl::UnavailableError("server is shutting down"));
  }
}

bool ContextPool::WaitForCallsToFinish(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return open_calls_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&done), deadline - options_.wall_clock());
}

PoolStats ContextPool::GetStats() const {
  absl::MutexLock lock(&mu_);
  PoolStats stats;
  stats.available_workers = static_cast<int>(scheduler_.idle_count());
  stats.checked_out = checked_out_;
  stats.pending_requests = static_cast<int>(waiters_.size()) + queued_calls_;
  stats.starting_workers = starting_ + launching_;
  stats.busy_workers = scheduler_.running_stateless();
  for (const auto& [key, w] : workers_) {
    if (w->state != Worker::State::kReady) continue;
    ++stats.num_workers;
    if (w->checked_out && w->current != nullptr) ++stats.busy_workers;
  }
  stats.workers_spawned = workers_spawned_;
  stats.workers_died = workers_died_;
  stats.calls_total = calls_total_;
  stats.deaths_by_reason = deaths_by_reason_;
  return stats;
}

void ContextPool::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
    Wake();
  }
  if (io_thread_.joinable()) io_thread_.join();
  if (spawn_thread_.joinable()) spawn_thread_.join();

  Deferred deferred;
  std::vector<std::unique_ptr<Worker>> doomed;
  {
    absl::MutexLock lock(&mu_);
    const absl::Status gone = absl::UnavailableError("server is shutting down");
    for (auto& [key, w] : workers_) {
      w->released = true;
      w->process->Kill();
      while (!w->nested.empty()) {
        FinishCall(std::move(w->nested.back()), gone, &deferred);
        w->nested.pop_back();
      }
      if (w->current != nullptr) FinishCall(std::move(w->current), gone, &deferred);
      while (!w->queue.empty()) {
        FinishCall(std::move(w->queue.front()), gone, &deferred);
        w->queue.pop_front();
      }
      w->startup_timer.Cancel();
      doomed.push_back(std::move(w));
    }
    workers_.clear();
    while (!pending_.empty()) {
      FinishCall(std::move(pending_.front()), gone, &deferred);
      pending_.pop_front();
    }
    queued_calls_ = 0;
    for (auto& waiter : waiters_) {
      waiter->timer.Cancel();
      deferred.push_back([done = std::move(waiter->done), gone] { done(gone); });
    }
    waiters_.clear();
  }
  // Destroying a process object waits for it to exit.
  for (auto& w : doomed) {
    std::optional<WorkerExit> how = w->process->TryReap();
    LogInfo(absl::StrCat("worker pid ", w->process->pid(), " stopped",
                         how ? absl::StrCat(" (", how->description, ")") : ""));
  }
  doomed.clear();
  RunDeferred(&deferred);
}

// ---------------------------------------------------------------------------
// I/O thread.

void ContextPool::IoLoop() {
  constexpr int kMaxEvents = 64;
  epoll_event events[kMaxEvents];
  while (true) {
    int timeout_ms = -1;
    bool poll = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      const absl::Time now = MonotonicNow();
      absl::Time next = timers_.next();
      if (next != absl::InfiniteFuture() || now < last_scheduled_ + kTimerHorizon) {
        next = std::min(next, now + kTimerHorizon);
      }
      int spawns = draining_ ? 0
                             : scheduler_.SpawnsNeeded(starting_, launching_,
                                                       static_cast<int>(waiters_.size()));
      if (spawns > 0 && next_spawn_attempt_ > now) {
        next = std::min(next, next_spawn_attempt_);
        spawns = 0;
      }
      // Launching may block (a fork in the zygote, an exec): the spawner
      // thread does it, so that calls on other workers never wait for it.
      if (spawns > 0) {
        spawn_requests_ += spawns;
        launching_ += spawns;
      }
      sleep_until_ = next;
      if (next != absl::InfiniteFuture()) {
        // Round up so that a timer is never polled for early.
        timeout_ms = static_cast<int>(std::max<int64_t>(
            0, absl::ToInt64Milliseconds(next - now + absl::Microseconds(999))));
      }
      const int running = open_calls_ - queued_calls_;
      poll = options_.io_spin > absl::ZeroDuration() && running > 0 &&
             running < spin_below_calls_ && timeout_ms != 0;
      io_blocked_ = !poll;
    }

    int n = WaitForEvents(events, kMaxEvents, timeout_ms, poll);
    if (n < 0 && errno != EINTR) {
      LogError(absl::StrCat("epoll_wait: ", strerror(errno)));
    }
    Deferred deferred;
    {
      absl::MutexLock lock(&mu_);
      // Anything scheduled from here on wakes the loop unless it is due
      // after the loop's next computed sleep.
      sleep_until_ = absl::InfinitePast();
      io_blocked_ = false;
      for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kWakeKey) {
          uint64_t count;
          ssize_t ignored = read(wake_fd_.get(), &count, sizeof(count));
          (void)ignored;
          continue;
        }
        OnWorkerEvent(events[i].data.u64, events[i].events, &deferred);
      }
      timers_.FireDue(MonotonicNow());
      for (auto& fn : timer_deferred_) deferred.push_back(std::move(fn));
      timer_deferred_.clear();
      Dispatch(&deferred);
    }
    RunDeferred(&deferred);
  }
}

void ContextPool::Dequeued(Call* call) {
  queued_bytes_ -= call->queued_bytes;
  call->queued_bytes = 0;
}

void ContextPool::SpawnLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto wanted = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return stopping_ || spawn_requests_ > 0;
      };
      mu_.Await(absl::Condition(&wanted));
      if (stopping_) return;
      --spawn_requests_;
    }
    SpawnOne();
  }
}

void ContextPool::SpawnOne() {
  absl::StatusOr<std::unique_ptr<WorkerProcess>> process = launcher_->Launch();
  Deferred deferred;
  SpawnedLocked(std::move(process), &deferred);
  RunDeferred(&deferred);
}

void ContextPool::SpawnedLocked(absl::StatusOr<std::unique_ptr<WorkerProcess>> process,
                                Deferred* deferred) {
  absl::MutexLock lock(&mu_);
  --launching_;
  Wake();  // the I/O loop re-plans spawns and timers
  if (stopping_) return;  // destroying the process kills and reaps it
  const uint64_t key = next_key_;
  if (process.ok()) {
    // A worker whose socket or exit we cannot watch would hang its calls
    // or die unseen: refuse it like a failed spawn (destroying it kills and
    // reaps it).
    absl::Status watched = Watch(**process, key);
    if (!watched.ok()) process = watched;
  }
  if (!process.ok()) {
    ++consecutive_spawn_failures_;
    absl::Duration backoff = std::min(
        absl::Milliseconds(100) * (1 << std::min(consecutive_spawn_failures_, 6)),
        absl::Seconds(5));
    next_spawn_attempt_ = MonotonicNow() + backoff;
    LogError(absl::StrCat("worker spawn failed (retrying in ", DurationText(backoff),
                          "): ", process.status().message()));
    // The other requests wait for the backoff too.
    launching_ -= spawn_requests_;
    spawn_requests_ = 0;
    if (process.status().code() == absl::StatusCode::kResourceExhausted) {
      // Out of descriptors or processes: the binds waiting for a worker
      // would wait in vain until their deadlines. They are refused now.
      const absl::Status refused = absl::ResourceExhaustedError(absl::StrCat(
          "no_workers_available: no worker can be started now (", process.status().message(),
          ")"));
      for (auto& waiter : waiters_) {
        waiter->timer.Cancel();
        deferred->push_back([done = std::move(waiter->done), refused] { done(refused); });
      }
      waiters_.clear();
    }
    return;
  }
  consecutive_spawn_failures_ = 0;
  ++next_key_;
  auto w = std::make_unique<Worker>(key, std::move(*process), options_.max_frame_bytes);
  w->socket_registered = true;
  w->exit_registered = w->process->exit_fd() >= 0;
  w->startup_timer = ScheduleLocked(
      MonotonicNow() + options_.startup_timeout, [this, key]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        auto it = workers_.find(key);
        if (it != workers_.end() && it->second->state == Worker::State::kStarting) {
          Condemn(it->second.get(), DeathCause::kStartupTimeout,
                  absl::StrCat("not ready within ", DurationText(options_.startup_timeout)));
        }
      });
  ++starting_;
  ++workers_spawned_;
  LogInfo(absl::StrCat("worker pid ", w->process->pid(), " spawned"));
  workers_.emplace(key, std::move(w));
}

absl::Status ContextPool::Watch(const WorkerProcess& process, uint64_t key) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = key * 2;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, process.socket_fd(), &ev) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot watch the worker's socket: ", strerror(errno)));
  }
  if (process.exit_fd() < 0) return absl::OkStatus();  // exit seen through the socket
  ev.events = EPOLLIN;
  ev.data.u64 = key * 2 + 1;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, process.exit_fd(), &ev) != 0) {
    int saved = errno;
    Unwatch(process.socket_fd());
    return absl::InternalError(
        absl::StrCat("cannot watch the worker's exit: ", strerror(saved)));
  }
  return absl::OkStatus();
}

void ContextPool::Unwatch(int fd) {
  // ENOENT/EBADF: not registered or already closed, which is what we want.
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0 && errno != ENOENT &&
      errno != EBADF) {
    LogError(absl::StrCat("epoll_ctl(DEL): ", strerror(errno)));
  }
}

void ContextPool::OnWorkerEvent(uint64_t epoll_key, uint32_t events, Deferred* deferred) {
  auto it = workers_.find(epoll_key / 2);
  if (it == workers_.end()) return;  // already gone
  Worker* w = it->second.get();
  if (epoll_key % 2 == 1) {
    if (std::optional<WorkerExit> how = w->process->TryReap()) Bury(w, *how, deferred);
    return;
  }
  if (events & EPOLLOUT) {
    if (absl::Status s = w->connection.Flush(); !s.ok()) {
      Condemn(w, DeathCause::kProtocolError, std::string(s.message()));
      return;
    }
    if (!w->connection.wants_write()) UpdateEpoll(w);
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    // While paused, a hang-up is left to the exit fd, which buries the
    // worker.
    ReadFrames(w, /*resume=*/false, deferred);
  }
}

void ContextPool::ReadFrames(Worker* w, bool resume, Deferred* deferred) {
  if (!w->socket_registered) return;
  const bool was_paused = w->connection.paused();
  WorkerConnection::FrameHandler handle = [this, w, deferred](const std::string& payload)
                                              ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                                return HandleFrame(w, payload, deferred);
                                              };
  absl::Status s = resume ? w->connection.Resume(handle) : w->connection.Read(handle);
  if (!w->socket_registered) return;  // condemned by a frame
  if (!s.ok() && w->connection.hung_up() && !w->exit_registered) {
    // It has exited, most likely (a process's descriptors close before it
    // becomes reapable): reap it, or condemn it if it lives on.
    Unwatch(w->process->socket_fd());
    w->socket_registered = false;
    AwaitExit(w, deferred);
    return;
  }
  if (!s.ok()) {
    Condemn(w, DeathCause::kProtocolError, std::string(s.message()));
    return;
  }
  if (w->connection.paused() != was_paused) UpdateEpoll(w);
}

void ContextPool::UpdateEpoll(Worker* w) {
  if (!w->socket_registered) return;
  epoll_event ev{};
  ev.events = w->connection.epoll_events();
  ev.data.u64 = w->key * 2;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, w->process->socket_fd(), &ev) != 0) {
    // An unseen event would stall the call: give the worker up.
    Condemn(w, DeathCause::kProtocolError, absl::StrCat("epoll_ctl(MOD): ", strerror(errno)));
  }
}

void ContextPool::SendFrame(Worker* w, const internal::WorkerRequest& frame) {
  const bool wanted_write = w->connection.wants_write();
  if (frame.trace()) {
    // Stamped as the write starts: the worker may read the frame before
    // this thread runs again.
    if (Call* call = w->top(); call != nullptr && call->id == frame.id()) {
      call->trace_sent_ns = MonotonicNanos();
    }
  }
  if (absl::Status s = w->connection.Send(frame); !s.ok()) {
    Condemn(w, DeathCause::kProtocolError, std::string(s.message()));
    return;
  }
  // A call went out while the I/O thread sleeps: with polling worth it, wake
  // it now, while the worker runs, so that it is awake when the answer comes.
  if (io_blocked_ && spin_window_ns_.load(std::memory_order_relaxed) > 0 &&
      open_calls_ - queued_calls_ < spin_below_calls_) {
    io_blocked_ = false;
    Wake();
  }
  if (w->connection.wants_write() != wanted_write) UpdateEpoll(w);
}

bool ContextPool::HandleFrame(Worker* w, const std::string& payload, Deferred* deferred) {
  internal::WorkerResponse response;
  if (!ParseFramePayload(payload, &response)) {
    Condemn(w, DeathCause::kProtocolError,
            "protocol error: the worker sent a frame that does not parse");
    return false;
  }
  if (response.has_hello()) {
    if (w->state != Worker::State::kStarting) {
      Condemn(w, DeathCause::kProtocolError, "protocol error: unexpected hello");
      return false;
    }
    w->state = Worker::State::kReady;
    --starting_;
    w->startup_timer.Cancel();
    BecomeIdle(w);
    return true;
  }
  Call* top = w->top();
  if (top == nullptr || response.id() != top->id) {
    Condemn(w, DeathCause::kProtocolError,
            absl::StrCat("protocol error: unexpected response id ", response.id()));
    return false;
  }
  if (response.partial()) {
    Call* call = top;
    // Nobody wants the events of an interrupted call; dropping them also
    // keeps the worker unblocked so that it sees the interrupt.
    if (!call->events || call->interrupted != absl::StatusCode::kOk) return true;
    ++call->events_outstanding;
    call->outstanding_sizes.push_back(payload.size());
    call->bytes_outstanding += payload.size();
    if (!call->order) call->order = std::make_shared<OrderedDelivery>();
    deferred->push_back([order = call->order, seq = call->next_seq++, events = call->events,
                         id = call->id, event = std::move(response)]() mutable {
      order->Put(seq, [events = std::move(events), id, event = std::move(event)]() mutable {
        events(id, std::move(event));
      });
    });
    if (StreamFull(*call)) {
      w->connection.Pause();
      return false;
    }
    return true;
  }
  if (top->trace_sent_ns != 0) {
    response.mutable_trace()->set_pool_sent_ns(top->trace_sent_ns);
    response.mutable_trace()->set_pool_received_ns(MonotonicNanos());
  }
  if (!w->nested.empty()) {
    // A nested call ended: the call below it waits on for its callback.
    std::unique_ptr<Call> call = std::move(w->nested.back());
    w->nested.pop_back();
    absl::StatusOr<internal::WorkerResponse> outcome = Outcome(*call, std::move(response));
    FinishCall(std::move(call), std::move(outcome), deferred);
    // Interrupted while calls ran above it, it hears it now that it is on
    // top again (the worker's signal went to the call that was running).
    if (Call* below = w->top(); below->interrupted != absl::StatusCode::kOk) {
      w->process->Interrupt(below->id);
    }
    return true;
  }
  std::unique_ptr<Call> call = std::move(w->current);
  absl::StatusOr<internal::WorkerResponse> outcome = Outcome(*call, std::move(response));
  FinishCall(std::move(call), std::move(outcome), deferred);
  if (w->checked_out) {
    if (!w->queue.empty()) {
      std::unique_ptr<Call> next = std::move(w->queue.front());
      w->queue.pop_front();
      --queued_calls_;
      StartCall(w, std::move(next));
    }
  } else if (!w->released) {
    scheduler_.StatelessEnded(w->principal);
    BecomeIdle(w);
  }
  return w->socket_registered;
}

absl::StatusOr<internal::WorkerResponse> ContextPool::Outcome(
    const Call& call, internal::WorkerResponse response) {
  if (call.by_interrupt_request && call.interrupted == absl::StatusCode::kCancelled) {
    return absl::CancelledError(
        "interrupted by an Interrupt request; the Python code was interrupted and the session "
        "keeps its state");
  }
  if (call.interrupted == absl::StatusCode::kDeadlineExceeded) {
    return absl::DeadlineExceededError("deadline exceeded; the Python code was interrupted");
  }
  if (call.interrupted == absl::StatusCode::kCancelled) {
    return absl::CancelledError("cancelled by the client; the Python code was interrupted");
  }
  return response;
}

absl::Status ContextPool::InterruptedBeforeItRan() {
  return absl::CancelledError(
      "interrupted by an Interrupt request before it started; the session keeps its state");
}

void ContextPool::SetTimeLeft(Call* call) {
  const absl::Duration left = call->deadline - MonotonicNow();
  call->request.set_timeout_ms(std::max<int64_t>(1, absl::ToInt64Milliseconds(left)));
}

bool ContextPool::StreamFull(const Call& call) const {
  // One event may always be outstanding, however large (up to the frame
  // limit): a stream must be able to move at all.
  return call.events_outstanding >= options_.max_buffered_events ||
         (call.events_outstanding > 0 && call.bytes_outstanding >= options_.max_buffered_bytes);
}

void ContextPool::BecomeIdle(Worker* w) {
  scheduler_.AddIdle(w->key, w->tainted, w->principal);
  for (uint64_t key : scheduler_.Trim(starting_, static_cast<int>(waiters_.size()))) {
    Discard(workers_.at(key).get(), "retired");
  }
}

void ContextPool::StartCall(Worker* w, std::unique_ptr<Call> call) {
  Dequeued(call.get());
  if (!w->checked_out) {
    // The scheduler counted the call as running when it chose the worker.
    w->tainted = true;
    w->principal = call->principal;
  }
  call_location_[call->id] = w->key;
  SetTimeLeft(call.get());
  internal::WorkerRequest request = std::move(call->request);
  call->request.Clear();  // only the bytes are needed from here on
  w->current = std::move(call);
  SendFrame(w, request);
}

void ContextPool::Condemn(Worker* w, DeathCause cause, const std::string& reason) {
  if (w->state != Worker::State::kDying) {
    w->condemned_cause = cause;
    w->condemned_reason = reason;
    LogWarning(absl::StrCat("killing worker pid ", w->process->pid(), ": ", reason));
  }
  Discard(w, reason);
}

void ContextPool::Discard(Worker* w, const std::string& reason) {
  if (w->state != Worker::State::kDying) {
    if (!w->condemned_cause) {
      w->released = true;
      w->condemned_reason = reason;
    }
    if (w->state == Worker::State::kStarting) --starting_;
    w->state = Worker::State::kDying;
    w->startup_timer.Cancel();
  }
  scheduler_.RemoveIdle(w->key);
  w->process->Kill();
  if (w->socket_registered) {
    Unwatch(w->process->socket_fd());
    w->socket_registered = false;
  }
  if (!w->exit_registered && !w->reap_timer.armed()) AwaitExit(w, nullptr);
}

void ContextPool::AwaitExit(Worker* w, Deferred* deferred) {
  if (std::optional<WorkerExit> how = w->process->TryReap()) {
    if (deferred != nullptr) {
      Bury(w, *how, deferred);
    } else {
      // Called from Discard, whose caller still holds `w`: bury it from the
      // I/O thread instead, at once.
      ScheduleReapPoll(w->key, absl::ZeroDuration(), MonotonicNow());
    }
    return;
  }
  ScheduleReapPoll(w->key, absl::Milliseconds(1), MonotonicNow());
}

void ContextPool::ScheduleReapPoll(uint64_t key, absl::Duration delay, absl::Time since) {
  auto it = workers_.find(key);
  if (it == workers_.end()) return;
  it->second->reap_timer = ScheduleLocked(
      MonotonicNow() + delay, [this, key, delay, since]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        auto found = workers_.find(key);
        if (found == workers_.end()) return;
        Worker* w = found->second.get();
        if (std::optional<WorkerExit> how = w->process->TryReap()) {
          Bury(w, *how, &timer_deferred_);
          return;
        }
        // Alive long after closing its socket: it is of no use any more.
        if (w->state != Worker::State::kDying &&
            MonotonicNow() - since > absl::Milliseconds(100)) {
          Condemn(w, DeathCause::kProtocolError, "protocol error: the worker closed its socket");
        }
        ScheduleReapPoll(key, std::clamp(delay * 2, absl::Milliseconds(1), absl::Milliseconds(100)),
                         since);
      });
}

void ContextPool::Bury(Worker* w, const WorkerExit& exit, Deferred* deferred) {
  const uint64_t key = w->key;
  const bool expected = w->released || stopping_;
  std::string reason =
      w->condemned_cause
          ? absl::StrCat(w->condemned_reason, " (worker pid ", w->process->pid(), " ",
                         exit.description, ")")
          : absl::StrCat("worker pid ", w->process->pid(), " ", exit.description);
  if (expected) {
    LogInfo(absl::StrCat("worker pid ", w->process->pid(), " exited (", exit.description, ")"));
  } else {
    ++workers_died_;
    ++deaths_by_reason_[DeathCauseLabel(w->condemned_cause.value_or(exit.cause))];
    LogWarning(absl::StrCat("worker lost: ", reason));
  }
  if (w->state == Worker::State::kStarting) --starting_;
  w->state = Worker::State::kDying;
  w->startup_timer.Cancel();
  w->reap_timer.Cancel();
  scheduler_.RemoveIdle(key);

  // Tell the listener first, so that the session is gone before its
  // callers hear ABORTED and a retry reliably gets NOT_FOUND.
  if (w->checked_out) {
    --checked_out_;
    if (lost_listener_) {
      deferred->push_back([listener = lost_listener_, key, reason] { listener(key, reason); });
    }
  }
  while (!w->nested.empty()) {
    FinishCall(std::move(w->nested.back()),
               absl::AbortedError(absl::StrCat("the worker died during the call: ", reason,
                                               w->checked_out ? "; the session is gone" : "")),
               deferred);
    w->nested.pop_back();
  }
  if (w->current != nullptr) {
    if (!w->checked_out && !w->released) scheduler_.StatelessEnded(w->principal);
    FinishCall(std::move(w->current),
               absl::AbortedError(absl::StrCat("the worker died during the call: ", reason,
                                               w->checked_out ? "; the session is gone" : "")),
               deferred);
  }
  while (!w->queue.empty()) {
    --queued_calls_;
    FinishCall(std::move(w->queue.front()),
               absl::AbortedError(
                   absl::StrCat("the session's worker died before the call ran: ", reason)),
               deferred);
    w->queue.pop_front();
  }
  if (w->socket_registered) Unwatch(w->process->socket_fd());
  if (w->exit_registered) Unwatch(w->process->exit_fd());
  // Destroyed once the lock is released: giving back its private directory,
  // uid and cgroup must not hold up the pool.
  auto node = workers_.extract(key);
  deferred->push_back(
      [worker = std::shared_ptr<Worker>(std::move(node.mapped()))]() mutable { worker.reset(); });
}

void ContextPool::OnCallDeadline(CallId id, Deferred* deferred) {
  Worker* running_on;
  Call* call = FindCall(id, &running_on);
  if (call == nullptr) return;
  if (running_on != nullptr) {
    InterruptCall(running_on, call, absl::StatusCode::kDeadlineExceeded, deferred);
  } else {
    FinishQueuedCall(id, absl::DeadlineExceededError("deadline exceeded while waiting for a worker"),
                     deferred);
  }
}

void ContextPool::InterruptCall(Worker* w, Call* call, absl::StatusCode reason,
                                Deferred* deferred) {
  if (call->interrupted != absl::StatusCode::kOk) return;
  call->interrupted = reason;
  // Calls nested above it run first and must end before it can: they are
  // interrupted with it, innermost first, and each one below is signalled
  // again when the one above it ends (one SIGINT cannot reach two levels).
  bool above = false;
  for (auto& nested : w->nested) {
    if (above) InterruptCall(w, nested.get(), reason, deferred);
    above = above || nested.get() == call;
  }
  if (call == w->current.get()) {
    for (auto& nested : w->nested) InterruptCall(w, nested.get(), reason, deferred);
  }
  w->process->Interrupt(w->top()->id);
  const uint64_t key = w->key;
  const CallId id = call->id;
  call->kill_timer = ScheduleLocked(
      MonotonicNow() + options_.kill_grace, [this, key, id]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        auto it = workers_.find(key);
        Worker* running_on;
        if (it == workers_.end() || FindCall(id, &running_on) == nullptr ||
            running_on != it->second.get()) {
          return;
        }
        Condemn(it->second.get(), DeathCause::kKillGrace,
                absl::StrCat("the call did not stop within --kill_grace (",
                             DurationText(options_.kill_grace), ") after it was interrupted"));
      });
  // A stream paused by backpressure must flow again: the worker may be
  // blocked writing an event and would never see the interrupt.
  if (w->connection.paused()) ReadFrames(w, /*resume=*/true, deferred);
}

void ContextPool::Dispatch(Deferred* deferred) {
  while (!waiters_.empty()) {
    uint64_t key = scheduler_.TakeForSession();
    if (key == 0) break;
    std::unique_ptr<Waiter> waiter = std::move(waiters_.front());
    waiters_.pop_front();
    waiter->timer.Cancel();
    workers_.at(key)->checked_out = true;
    ++checked_out_;
    deferred->push_back([done = std::move(waiter->done), key] { done(WorkerId{key}); });
  }
  if (pending_.empty() || scheduler_.idle_count() == 0) return;
  std::vector<std::string> waiting;
  waiting.reserve(pending_.size());
  for (const auto& call : pending_) waiting.push_back(call->principal);
  // Fresh workers already on their way, not promised to binds.
  const int spare_starting = std::max(0, starting_ - static_cast<int>(waiters_.size()));
  Scheduler::Plan plan = scheduler_.PlanStateless(waiting, spare_starting);
  for (uint64_t key : plan.recycle) {
    Discard(workers_.at(key).get(), "recycled for another principal");
  }
  if (plan.starts.empty()) return;
  std::vector<std::unique_ptr<Call>> starting(pending_.size());
  for (const Scheduler::Plan::Start& start : plan.starts) {
    starting[start.waiting_index] = std::move(pending_[start.waiting_index]);
  }
  pending_.erase(std::remove(pending_.begin(), pending_.end(), nullptr), pending_.end());
  for (const Scheduler::Plan::Start& start : plan.starts) {
    --queued_calls_;
    StartCall(workers_.at(start.worker).get(), std::move(starting[start.waiting_index]));
  }
}

void ContextPool::FinishCall(std::unique_ptr<Call> call,
                             absl::StatusOr<internal::WorkerResponse> result,
                             Deferred* deferred) {
  Dequeued(call.get());
  call->deadline_timer.Cancel();
  call->kill_timer.Cancel();
  call_location_.erase(call->id);
  --open_calls_;
  ++calls_total_;
  if (call->order) {
    // After the events already handed out, which may still be on their way.
    deferred->push_back([order = call->order, seq = call->next_seq, done = std::move(call->done),
                         result = std::move(result)]() mutable {
      order->Put(seq, [done = std::move(done), result = std::move(result)]() mutable {
        done(std::move(result));
      });
    });
    return;
  }
  deferred->push_back([done = std::move(call->done), result = std::move(result)]() mutable {
    done(std::move(result));
  });
}

void ContextPool::FinishQueuedCall(CallId id, const absl::Status& status, Deferred* deferred) {
  auto loc = call_location_.find(id);
  if (loc == call_location_.end()) return;
  std::deque<std::unique_ptr<Call>>* queue = QueueAt(loc->second);
  if (queue == nullptr) return;
  auto it = std::find_if(queue->begin(), queue->end(),
                         [id](const auto& c) { return c->id == id; });
  if (it == queue->end()) return;
  std::unique_ptr<Call> call = std::move(*it);
  queue->erase(it);
  --queued_calls_;
  FinishCall(std::move(call), status, deferred);
}

}  // namespace pyexec

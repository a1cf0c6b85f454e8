// ContextPool's public entry points, which any thread calls. The I/O thread,
// which does the work they queue, is in context_pool_io.cc.
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
#include "context_pool/context_pool_internal.h"

namespace pyexec {

using context_pool_internal::DurationText;
using context_pool_internal::kTimerHorizon;
using context_pool_internal::kWakeKey;

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

}  // namespace pyexec

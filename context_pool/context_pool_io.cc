// ContextPool's I/O thread: it reads the workers' frames, starts and buries
// workers, fires deadlines and kill timers, and dispatches queued calls. The
// public entry points, which any thread calls, are in context_pool.cc.
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

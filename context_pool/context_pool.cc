#include "context_pool/context_pool.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/logging.h"

namespace pyexec {
namespace {

// Epoll keys: 0 is the wake eventfd; a worker's socket is key*2 and its exit
// fd key*2+1 (worker keys start at 1).
constexpr uint64_t kWakeKey = 0;

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

}  // namespace

namespace {

// Hands a streamed call's events, then its outcome, to their receivers one at
// a time and in the order the worker sent them. They are handed out by the
// I/O thread and by gRPC threads that lift a backpressure pause (which read
// the frames buffered meanwhile); whichever thread holds the next item in
// order delivers it and every later one already there. Nobody waits, so a
// receiver that calls back into the pool (EventConsumed) cannot deadlock.
// Thread-safe.
class OrderedDelivery {
 public:
  // Queues item `seq` (0, 1, 2, ... with no gaps) and delivers what is now
  // in order.
  void Put(uint64_t seq, std::function<void()> deliver) {
    {
      absl::MutexLock lock(&mu_);
      pending_.emplace(seq, std::move(deliver));
      if (draining_) return;  // the draining thread will get to it
      draining_ = true;
    }
    while (true) {
      std::function<void()> next;
      {
        absl::MutexLock lock(&mu_);
        auto it = pending_.find(next_);
        if (it == pending_.end()) {
          draining_ = false;
          return;
        }
        next = std::move(it->second);
        pending_.erase(it);
        ++next_;
      }
      next();
    }
  }

 private:
  absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::function<void()>> pending_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

struct ContextPool::Call {
  CallId id = 0;
  internal::WorkerRequest request;
  CallDone done;
  bool has_deadline_timer = false;
  TimerMap::iterator deadline_timer;
  bool has_kill_timer = false;
  TimerMap::iterator kill_timer;
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
};

struct ContextPool::Worker {
  enum class State { kStarting, kReady, kDying };

  Worker(uint64_t key, std::unique_ptr<WorkerProcess> process,
         size_t max_frame_bytes)
      : key(key), process(std::move(process)), decoder(max_frame_bytes) {}

  const uint64_t key;
  const std::unique_ptr<WorkerProcess> process;
  State state = State::kStarting;
  bool checked_out = false;
  // Has run a stateless call: its interpreter may hold state left by that
  // call (builtins, sys.modules...), so it is never handed to a session, and
  // only `principal`'s stateless calls may run on it.
  bool tainted = false;
  std::string principal;
  // Discarded by Release or Shutdown: its end is expected.
  bool released = false;
  bool socket_registered = false;
  bool exit_registered = false;
  bool want_write = false;
  // Backpressure: a streamed call's consumer is behind, so the socket is
  // not read (EPOLLIN off) until it catches up.
  bool reading_paused = false;
  // Set when the pool killed the worker; explains its death.
  std::string condemned_reason;
  std::unique_ptr<Call> current;
  std::deque<std::unique_ptr<Call>> queue;  // session calls waiting to run
  std::string outbuf;                        // frame bytes not yet written
  FrameDecoder decoder;
  bool has_startup_timer = false;
  TimerMap::iterator startup_timer;
};

struct ContextPool::Waiter {
  uint64_t id = 0;
  AcquireDone done;
  TimerMap::iterator timer;
};

ContextPool::ContextPool(ContextPoolOptions options,
                         std::unique_ptr<WorkerLauncher> launcher)
    : options_(options), launcher_(std::move(launcher)) {}

ContextPool::~ContextPool() { Shutdown(); }

void ContextPool::SetWorkerLostListener(WorkerLostListener listener) {
  lost_listener_ = std::move(listener);
}

absl::Status ContextPool::Start() {
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
  io_thread_ = std::thread([this] { IoLoop(); });
  spawn_thread_ = std::thread([this] { SpawnLoop(); });
  return absl::OkStatus();
}

bool ContextPool::WaitUntilWarm(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto warm = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return static_cast<int>(idle_.size()) >= options_.workers;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&warm), timeout);
}

void ContextPool::Wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_fd_.get(), &one, sizeof(one));
  (void)ignored;
}

ContextPool::TimerMap::iterator ContextPool::AddTimer(absl::Time when,
                                                      TimerKind kind,
                                                      uint64_t id) {
  auto it = timers_.emplace(when, std::make_pair(kind, id));
  if (when < next_wake_) {
    next_wake_ = when;
    Wake();
  }
  return it;
}

void ContextPool::RunDeferred(Deferred* deferred) {
  for (auto& fn : *deferred) fn();
  deferred->clear();
}

int ContextPool::PendingCount() const {
  int n = static_cast<int>(pending_.size() + waiters_.size());
  for (const auto& [key, w] : workers_) n += static_cast<int>(w->queue.size());
  return n;
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
    } else if (checked_out_ + static_cast<int>(waiters_.size()) >=
               options_.max_workers) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "no_workers_available: all ", options_.max_workers,
          " workers are bound to sessions"));
    } else if ((granted = TakeCleanIdle()) != 0) {
      Worker* w = workers_[granted].get();
      w->checked_out = true;
      ++checked_out_;
      Wake();  // spawn a replacement for the warm pool
    } else if (static_cast<int>(waiters_.size()) >= options_.max_pending) {
      refused = absl::ResourceExhaustedError("too many binds waiting");
    } else {
      auto waiter = std::make_unique<Waiter>();
      waiter->id = next_call_id_++;
      waiter->done = std::move(done);
      waiter->timer =
          AddTimer(WallToMonotonic(deadline, options_.wall_clock()),
                   TimerKind::kAcquireDeadline, waiter->id);
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
    w->released = true;
    --checked_out_;
    if (w->current != nullptr) {
      FinishCall(std::move(w->current),
                 absl::AbortedError("the session was unbound during the call"),
                 &deferred);
    }
    while (!w->queue.empty()) {
      std::unique_ptr<Call> call = std::move(w->queue.front());
      w->queue.pop_front();
      FinishCall(std::move(call),
                 absl::AbortedError("the session was unbound before the call ran"),
                 &deferred);
    }
    Condemn(w, "released");
  }
  RunDeferred(&deferred);
}

CallId ContextPool::Submit(WorkerId worker, internal::WorkerRequest request,
                           absl::Time deadline, CallDone done,
                           absl::string_view principal,
                           CallEvent events) {
  absl::Status refused;
  CallId id = 0;
  {
    absl::MutexLock lock(&mu_);
    id = next_call_id_++;
    // Where the call goes: started at once on `start`, or appended to
    // `queue` (a session's queue, or the stateless one).
    Worker* start = nullptr;
    std::deque<std::unique_ptr<Call>>* queue = nullptr;
    uint64_t queue_location = 0;
    if (draining_ || stopping_) {
      refused = absl::UnavailableError("server is shutting down");
    } else if (worker != 0) {
      auto it = workers_.find(worker);
      if (it == workers_.end() || !it->second->checked_out ||
          it->second->state == Worker::State::kDying) {
        refused = absl::NotFoundError("session not found: its interpreter is gone");
      } else if (Worker* w = it->second.get();
                 w->current == nullptr && w->queue.empty()) {
        start = w;
      } else if (static_cast<int>(w->queue.size()) >= options_.max_pending) {
        refused = absl::ResourceExhaustedError(
            "too many calls waiting for this session");
      } else {
        queue = &w->queue;
        queue_location = w->key;
      }
    } else if (uint64_t key = TakeIdleFor(principal); key != 0) {
      start = workers_[key].get();
      ++busy_unbound_;
    } else if (static_cast<int>(pending_.size()) >= options_.max_pending) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "too many calls waiting for a worker (limit ", options_.max_pending,
          ")"));
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
      call->deadline_timer = AddTimer(WallToMonotonic(deadline, options_.wall_clock()),
                                      TimerKind::kCallDeadline, id);
      call->has_deadline_timer = true;
      ++open_calls_;
      if (start != nullptr) {
        StartCall(start, std::move(call));
      } else {
        call_location_[id] = queue_location;
        call->queued_bytes = bytes;
        queued_bytes_ += bytes;
        queue->push_back(std::move(call));
      }
    }
  }
  if (!refused.ok()) done(refused);
  return id;
}

std::deque<std::unique_ptr<ContextPool::Call>>* ContextPool::QueueAt(
    uint64_t location) {
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
    if (it != workers_.end() && it->second->current != nullptr &&
        it->second->current->id == id) {
      *running_on = it->second.get();
      return it->second->current.get();
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
    if (FindCall(call, &running_on) == nullptr) return;
    if (running_on != nullptr) {
      InterruptCall(running_on, absl::StatusCode::kCancelled, &deferred);
    } else {
      FinishQueuedCall(call, absl::CancelledError("cancelled by the client"),
                       &deferred);
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
    if (running_on->reading_paused && !StreamFull(*call)) {
      ResumeReading(running_on, &deferred);
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
      if (w->current->interrupted == absl::StatusCode::kOk) {
        w->current->by_interrupt_request = true;
      }
      InterruptCall(w, absl::StatusCode::kCancelled, &deferred);
    }
  }
  RunDeferred(&deferred);
  return running;
}

void ContextPool::BeginDrain() {
  std::deque<std::unique_ptr<Waiter>> waiters;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // Binds that were waiting will not get a worker now.
    for (auto& waiter : waiters_) timers_.erase(waiter->timer);
    waiters.swap(waiters_);
  }
  for (auto& waiter : waiters) {
    waiter->done(absl::UnavailableError("server is shutting down"));
  }
}

bool ContextPool::WaitForCallsToFinish(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return open_calls_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&done),
                              deadline - options_.wall_clock());
}

PoolStats ContextPool::GetStats() const {
  absl::MutexLock lock(&mu_);
  PoolStats stats;
  stats.available_workers = static_cast<int>(idle_.size());
  stats.checked_out = checked_out_;
  stats.pending_requests = PendingCount();
  stats.starting_workers = starting_ + launching_;
  stats.busy_workers = busy_unbound_;
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
      if (w->current != nullptr) FinishCall(std::move(w->current), gone, &deferred);
      while (!w->queue.empty()) {
        FinishCall(std::move(w->queue.front()), gone, &deferred);
        w->queue.pop_front();
      }
      doomed.push_back(std::move(w));
    }
    workers_.clear();
    idle_.clear();
    while (!pending_.empty()) {
      FinishCall(std::move(pending_.front()), gone, &deferred);
      pending_.pop_front();
    }
    for (auto& waiter : waiters_) {
      deferred.push_back([done = std::move(waiter->done), gone] { done(gone); });
    }
    waiters_.clear();
    timers_.clear();
  }
  // Destroying a process object waits for it to exit.
  for (auto& w : doomed) {
    std::optional<std::string> how = w->process->TryReap();
    LogInfo(absl::StrCat("worker pid ", w->process->pid(), " stopped",
                         how ? absl::StrCat(" (", *how, ")") : ""));
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
    int spawns = 0;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      absl::Time now = MonotonicNow();
      absl::Time next = timers_.empty() ? absl::InfiniteFuture()
                                        : timers_.begin()->first;
      spawns = SpawnsNeeded();
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
      next_wake_ = next;
      if (next != absl::InfiniteFuture()) {
        // Round up so that a timer is never polled for early.
        timeout_ms = static_cast<int>(std::max<int64_t>(
            0, absl::ToInt64Milliseconds(next - now + absl::Microseconds(999))));
      }
    }

    int n = epoll_wait(epoll_fd_.get(), events, kMaxEvents, timeout_ms);
    if (n < 0 && errno != EINTR) {
      LogError(absl::StrCat("epoll_wait: ", strerror(errno)));
    }
    Deferred deferred;
    {
      absl::MutexLock lock(&mu_);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.u64 == kWakeKey) {
          uint64_t count;
          ssize_t ignored = read(wake_fd_.get(), &count, sizeof(count));
          (void)ignored;
          continue;
        }
        OnWorkerEvent(events[i].data.u64, events[i].events, &deferred);
      }
      FireTimers(MonotonicNow(), &deferred);
      Dispatch(&deferred);
    }
    RunDeferred(&deferred);
  }
}

int ContextPool::SpawnsNeeded() const {
  if (stopping_ || draining_) return 0;
  int unbound = static_cast<int>(idle_.size()) + busy_unbound_ + starting_ +
                launching_;
  const int for_pool = std::max(0, options_.workers - unbound);
  // Binds need fresh workers: idle ones that never ran a call, or ones on
  // their way (including those just counted for the pool). Only waiters
  // beyond those get spawns of their own, so that a replacement already
  // starting serves a Bind instead of a second spawn the pool would then
  // have to retire. (Keeping a fresh worker in reserve for binds was tried:
  // under stateless load it was taken whenever the used workers were all
  // busy, and the pool spawned and retired workers over and over.)
  int fresh = starting_ + launching_ + for_pool;
  for (uint64_t key : idle_) fresh += workers_.at(key)->tainted ? 0 : 1;
  return for_pool + std::max(0, static_cast<int>(waiters_.size()) - fresh);
}

uint64_t ContextPool::TakeIdleFor(absl::string_view principal) {
  auto clean = idle_.rend();
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    const Worker& w = *workers_.at(*it);
    if (!w.tainted) {
      if (clean == idle_.rend()) clean = it;
    } else if (w.principal == principal) {
      clean = it;  // a worker already tainted by this principal is best
      break;
    }
  }
  if (clean == idle_.rend()) return 0;
  uint64_t key = *clean;
  idle_.erase(std::next(clean).base());
  return key;
}

uint64_t ContextPool::TakeCleanIdle() {
  for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
    if (!workers_.at(*it)->tainted) {
      uint64_t key = *it;
      idle_.erase(std::next(it).base());
      return key;
    }
  }
  return 0;
}

void ContextPool::EndStateless(Worker* w) {
  --busy_unbound_;
  auto it = running_stateless_.find(w->principal);
  if (it != running_stateless_.end() && --it->second <= 0) {
    running_stateless_.erase(it);
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
  {
    absl::StatusOr<std::unique_ptr<WorkerProcess>> process = launcher_->Launch();
    absl::MutexLock lock(&mu_);
    --launching_;
    Wake();  // the I/O loop re-plans spawns and timers
    if (stopping_) return;  // destroying the process kills and reaps it
    uint64_t key = next_key_;
    if (process.ok()) {
      // A worker whose socket or exit we cannot watch would hang its calls
      // or die unseen: refuse it like a failed spawn (destroying it kills
      // and reaps it).
      absl::Status watched = Watch(**process, key);
      if (!watched.ok()) process = watched;
    }
    if (!process.ok()) {
      ++consecutive_spawn_failures_;
      absl::Duration backoff = std::min(
          absl::Milliseconds(100) * (1 << std::min(consecutive_spawn_failures_, 6)),
          absl::Seconds(5));
      next_spawn_attempt_ = MonotonicNow() + backoff;
      LogError(absl::StrCat("worker spawn failed (retrying in ",
                            DurationText(backoff), "): ",
                            process.status().message()));
      // The other requests wait for the backoff too.
      launching_ -= spawn_requests_;
      spawn_requests_ = 0;
      return;
    }
    consecutive_spawn_failures_ = 0;
    ++next_key_;
    auto w = std::make_unique<Worker>(key, std::move(*process),
                                      options_.max_frame_bytes);
    w->socket_registered = true;
    w->exit_registered = true;
    w->startup_timer = AddTimer(MonotonicNow() + options_.startup_timeout,
                                TimerKind::kStartup, key);
    w->has_startup_timer = true;
    ++starting_;
    ++workers_spawned_;
    LogInfo(absl::StrCat("worker pid ", w->process->pid(), " spawned"));
    workers_.emplace(key, std::move(w));
  }
}

absl::Status ContextPool::Watch(const WorkerProcess& process, uint64_t key) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = key * 2;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, process.socket_fd(), &ev) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot watch the worker's socket: ", strerror(errno)));
  }
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
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0 &&
      errno != ENOENT && errno != EBADF) {
    LogError(absl::StrCat("epoll_ctl(DEL): ", strerror(errno)));
  }
}

void ContextPool::OnWorkerEvent(uint64_t epoll_key, uint32_t events,
                                Deferred* deferred) {
  auto it = workers_.find(epoll_key / 2);
  if (it == workers_.end()) return;  // already gone
  Worker* w = it->second.get();
  if (epoll_key % 2 == 1) {
    if (std::optional<std::string> how = w->process->TryReap()) {
      Bury(w, *how, deferred);
    }
    return;
  }
  if (events & EPOLLOUT) FlushWrites(w);
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    ReadFromWorker(w, deferred);
  }
}

bool ContextPool::DecodeFrames(Worker* w, Deferred* deferred) {
  while (!w->reading_paused) {
    absl::StatusOr<std::optional<std::string>> frame = w->decoder.Next();
    if (!frame.ok()) {
      Condemn(w, absl::StrCat("protocol error: ", frame.status().message()));
      return false;
    }
    if (!frame->has_value()) return true;
    HandleFrame(w, **frame, deferred);
    if (!w->socket_registered) return false;  // condemned by the frame
  }
  return false;
}

void ContextPool::ResumeReading(Worker* w, Deferred* deferred) {
  w->reading_paused = false;
  // Frames read before the pause come first; they may pause it again.
  if (!DecodeFrames(w, deferred)) return;
  UpdateEpoll(w);
}

void ContextPool::UpdateEpoll(Worker* w) {
  if (!w->socket_registered) return;
  epoll_event ev{};
  ev.events = (w->reading_paused ? 0 : EPOLLIN | EPOLLRDHUP) |
              (w->want_write ? EPOLLOUT : 0);
  ev.data.u64 = w->key * 2;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, w->process->socket_fd(),
                &ev) != 0) {
    // An unseen event would stall the call: give the worker up.
    Condemn(w, absl::StrCat("epoll_ctl(MOD): ", strerror(errno)));
  }
}

void ContextPool::ReadFromWorker(Worker* w, Deferred* deferred) {
  char buffer[65536];
  // While paused, a hang-up is left to the exit fd, which buries the worker.
  while (w->socket_registered && !w->reading_paused) {
    ssize_t n = recv(w->process->socket_fd(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      w->decoder.Append(buffer, static_cast<size_t>(n));
      if (!DecodeFrames(w, deferred)) return;
      if (static_cast<size_t>(n) < sizeof(buffer)) return;
    } else if (n == 0) {
      Condemn(w, "protocol error: the worker closed its socket");
      return;
    } else {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      Condemn(w, absl::StrCat("socket error: ", strerror(errno)));
      return;
    }
  }
}

void ContextPool::HandleFrame(Worker* w, const std::string& payload,
                              Deferred* deferred) {
  internal::WorkerResponse response;
  if (!ParseFramePayload(payload, &response)) {
    Condemn(w, "protocol error: the worker sent a frame that does not parse");
    return;
  }
  if (response.has_hello()) {
    if (w->state != Worker::State::kStarting) {
      Condemn(w, "protocol error: unexpected hello");
      return;
    }
    w->state = Worker::State::kReady;
    --starting_;
    if (w->has_startup_timer) {
      timers_.erase(w->startup_timer);
      w->has_startup_timer = false;
    }
    idle_.push_back(w->key);
    TrimIdle();
    return;
  }
  if (w->current == nullptr || response.id() != w->current->id) {
    Condemn(w, absl::StrCat("protocol error: unexpected response id ",
                            response.id()));
    return;
  }
  if (response.partial()) {
    Call* call = w->current.get();
    // Nobody wants the events of an interrupted call; dropping them also
    // keeps the worker unblocked so that it sees the interrupt.
    if (!call->events || call->interrupted != absl::StatusCode::kOk) return;
    ++call->events_outstanding;
    call->outstanding_sizes.push_back(payload.size());
    call->bytes_outstanding += payload.size();
    if (!call->order) call->order = std::make_shared<OrderedDelivery>();
    deferred->push_back([order = call->order, seq = call->next_seq++,
                         events = call->events, id = call->id,
                         event = std::move(response)]() mutable {
      order->Put(seq, [events = std::move(events), id,
                       event = std::move(event)]() mutable {
        events(id, std::move(event));
      });
    });
    if (StreamFull(*call)) {
      w->reading_paused = true;
      UpdateEpoll(w);
    }
    return;
  }
  std::unique_ptr<Call> call = std::move(w->current);
  if (call->by_interrupt_request &&
      call->interrupted == absl::StatusCode::kCancelled) {
    FinishCall(std::move(call),
               absl::CancelledError(
                   "interrupted by an Interrupt request; the Python code was "
                   "interrupted and the session keeps its state"),
               deferred);
  } else if (call->interrupted == absl::StatusCode::kDeadlineExceeded) {
    FinishCall(std::move(call),
               absl::DeadlineExceededError(
                   "deadline exceeded; the Python code was interrupted"),
               deferred);
  } else if (call->interrupted == absl::StatusCode::kCancelled) {
    FinishCall(std::move(call),
               absl::CancelledError(
                   "cancelled by the client; the Python code was interrupted"),
               deferred);
  } else {
    FinishCall(std::move(call), std::move(response), deferred);
  }
  if (w->checked_out) {
    if (!w->queue.empty()) {
      std::unique_ptr<Call> next = std::move(w->queue.front());
      w->queue.pop_front();
      StartCall(w, std::move(next));
    }
  } else if (!w->released) {
    EndStateless(w);
    idle_.push_back(w->key);
    TrimIdle();
  }
}

bool ContextPool::StreamFull(const Call& call) const {
  // One event may always be outstanding, however large (up to the frame
  // limit): a stream must be able to move at all.
  return call.events_outstanding >= options_.max_buffered_events ||
         (call.events_outstanding > 0 &&
          call.bytes_outstanding >= options_.max_buffered_bytes);
}

void ContextPool::TrimIdle() {
  // The pool can grow past --workers when a Bind that had a spawn started
  // for it gives up (deadline, drain); shrink it back by retiring the least
  // recently used workers that ran stateless calls.
  while (static_cast<int>(idle_.size()) + busy_unbound_ + starting_ >
         options_.workers + static_cast<int>(waiters_.size())) {
    auto lru = std::find_if(idle_.begin(), idle_.end(),
                            [this](uint64_t key)
                                ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                                  return workers_.at(key)->tainted;
                                });
    if (lru == idle_.end()) break;
    Worker* victim = workers_.at(*lru).get();
    victim->released = true;
    Condemn(victim, "retired");
  }
}

void ContextPool::StartCall(Worker* w, std::unique_ptr<Call> call) {
  Dequeued(call.get());
  if (!w->checked_out) {
    w->tainted = true;
    w->principal = call->principal;
    ++running_stateless_[w->principal];
    last_served_[w->principal] = ++dispatch_count_;
  }
  call_location_[call->id] = w->key;
  AppendFrame(call->request, &w->outbuf);
  call->request.Clear();  // only the bytes are needed from here on
  w->current = std::move(call);
  FlushWrites(w);
}

void ContextPool::FlushWrites(Worker* w) {
  size_t done = 0;
  while (done < w->outbuf.size()) {
    ssize_t n = send(w->process->socket_fd(), w->outbuf.data() + done,
                     w->outbuf.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      w->outbuf.clear();
      Condemn(w, absl::StrCat("socket write failed: ", strerror(errno)));
      return;
    }
  }
  w->outbuf.erase(0, done);
  bool want_write = !w->outbuf.empty();
  if (want_write != w->want_write) {
    w->want_write = want_write;
    UpdateEpoll(w);
  }
}

void ContextPool::Condemn(Worker* w, const std::string& reason) {
  if (w->state != Worker::State::kDying) {
    w->condemned_reason = reason;
    if (w->state == Worker::State::kStarting) --starting_;
    w->state = Worker::State::kDying;
    if (w->has_startup_timer) {
      timers_.erase(w->startup_timer);
      w->has_startup_timer = false;
    }
    if (!w->released) {
      LogWarning(absl::StrCat("killing worker pid ", w->process->pid(), ": ",
                              reason));
    }
  }
  auto idle = std::find(idle_.begin(), idle_.end(), w->key);
  if (idle != idle_.end()) idle_.erase(idle);
  w->process->Kill();
  if (w->socket_registered) {
    Unwatch(w->process->socket_fd());
    w->socket_registered = false;
  }
}

namespace {

// A death's cause from a small fixed set (a metrics label): why the pool
// condemned the worker, else how the process ended.
const char* DeathCause(const std::string& condemned, const std::string& how) {
  if (absl::StartsWith(condemned, "protocol error") ||
      absl::StartsWith(condemned, "socket")) {
    return "protocol_error";
  }
  if (absl::StrContains(condemned, "--kill_grace")) return "kill_grace";
  if (absl::StartsWith(condemned, "not ready within")) return "startup_timeout";
  return absl::StrContains(how, "signal") ? "signal" : "exit";
}

}  // namespace

void ContextPool::Bury(Worker* w, const std::string& how, Deferred* deferred) {
  const uint64_t key = w->key;
  const bool expected = w->released || stopping_;
  std::string reason =
      w->condemned_reason.empty() || w->condemned_reason == "released"
          ? absl::StrCat("worker pid ", w->process->pid(), " ", how)
          : absl::StrCat(w->condemned_reason, " (worker pid ", w->process->pid(),
                         " ", how, ")");
  if (expected) {
    LogInfo(absl::StrCat("worker pid ", w->process->pid(), " exited (", how,
                         ")"));
  } else {
    ++workers_died_;
    ++deaths_by_reason_[DeathCause(w->condemned_reason, how)];
    LogWarning(absl::StrCat("worker lost: ", reason));
  }
  if (w->state == Worker::State::kStarting) --starting_;
  w->state = Worker::State::kDying;
  if (w->has_startup_timer) timers_.erase(w->startup_timer);
  auto idle = std::find(idle_.begin(), idle_.end(), key);
  if (idle != idle_.end()) idle_.erase(idle);

  // Tell the listener first, so that the session is gone before its
  // callers hear ABORTED and a retry reliably gets NOT_FOUND.
  if (w->checked_out) {
    --checked_out_;
    if (lost_listener_) {
      deferred->push_back(
          [listener = lost_listener_, key, reason] { listener(key, reason); });
    }
  }
  if (w->current != nullptr) {
    if (!w->checked_out && !w->released) EndStateless(w);
    FinishCall(std::move(w->current),
               absl::AbortedError(absl::StrCat(
                   "the worker died during the call: ", reason,
                   w->checked_out ? "; the session is gone" : "")),
               deferred);
  }
  while (!w->queue.empty()) {
    FinishCall(std::move(w->queue.front()),
               absl::AbortedError(absl::StrCat(
                   "the session's worker died before the call ran: ", reason)),
               deferred);
    w->queue.pop_front();
  }
  if (w->socket_registered) {
    Unwatch(w->process->socket_fd());
  }
  if (w->exit_registered) {
    Unwatch(w->process->exit_fd());
  }
  workers_.erase(key);
}

void ContextPool::FireTimers(absl::Time now, Deferred* deferred) {
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto [kind, id] = timers_.begin()->second;
    timers_.erase(timers_.begin());
    switch (kind) {
      case TimerKind::kCallDeadline: {
        Worker* running_on;
        Call* call = FindCall(id, &running_on);
        if (call == nullptr) break;
        call->has_deadline_timer = false;  // fired: nothing to erase
        if (running_on != nullptr) {
          InterruptCall(running_on, absl::StatusCode::kDeadlineExceeded,
                        deferred);
        } else {
          FinishQueuedCall(id,
                           absl::DeadlineExceededError(
                               "deadline exceeded while waiting for a worker"),
                           deferred);
        }
        break;
      }
      case TimerKind::kKill: {
        Worker* running_on;
        Call* call = FindCall(id, &running_on);
        if (call == nullptr || running_on == nullptr) break;
        call->has_kill_timer = false;
        Condemn(running_on,
                absl::StrCat("the call did not stop within --kill_grace (",
                             DurationText(options_.kill_grace),
                             ") after it was interrupted"));
        break;
      }
      case TimerKind::kStartup: {
        auto it = workers_.find(id);
        if (it == workers_.end()) break;
        it->second->has_startup_timer = false;
        if (it->second->state == Worker::State::kStarting) {
          Condemn(it->second.get(),
                  absl::StrCat("not ready within ",
                               DurationText(options_.startup_timeout)));
        }
        break;
      }
      case TimerKind::kAcquireDeadline: {
        auto it = std::find_if(waiters_.begin(), waiters_.end(),
                               [id = id](const auto& w) { return w->id == id; });
        if (it == waiters_.end()) break;
        AcquireDone done = std::move((*it)->done);
        waiters_.erase(it);
        deferred->push_back([done = std::move(done)] {
          done(absl::DeadlineExceededError(
              "deadline exceeded while waiting for a worker to start"));
        });
        break;
      }
    }
  }
}

void ContextPool::InterruptCall(Worker* w, absl::StatusCode reason,
                                Deferred* deferred) {
  Call* call = w->current.get();
  if (call->interrupted != absl::StatusCode::kOk) return;
  call->interrupted = reason;
  w->process->Interrupt(call->id);
  call->kill_timer =
      AddTimer(MonotonicNow() + options_.kill_grace, TimerKind::kKill, call->id);
  call->has_kill_timer = true;
  // A stream paused by backpressure must flow again: the worker may be
  // blocked writing an event and would never see the interrupt.
  if (w->reading_paused) ResumeReading(w, deferred);
}

void ContextPool::Dispatch(Deferred* deferred) {
  while (!waiters_.empty()) {
    uint64_t key = TakeCleanIdle();
    if (key == 0) break;
    std::unique_ptr<Waiter> waiter = std::move(waiters_.front());
    waiters_.pop_front();
    timers_.erase(waiter->timer);
    Worker* w = workers_[key].get();
    w->checked_out = true;
    ++checked_out_;
    deferred->push_back(
        [done = std::move(waiter->done), key] { done(WorkerId{key}); });
  }
  // Stateless calls: the principal with the fewest running stateless calls
  // first, then the one served least recently, then the oldest call; so a
  // principal with a deep queue cannot starve the others.
  std::vector<const Call*> blocked;  // no compatible idle worker this pass
  // Fresh workers already on their way, not promised to binds.
  int spare_starting = std::max(0, starting_ - static_cast<int>(waiters_.size()));
  while (!idle_.empty() && pending_.size() > blocked.size()) {
    auto best = pending_.end();
    std::pair<int, uint64_t> best_rank;
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (std::find(blocked.begin(), blocked.end(), it->get()) != blocked.end()) {
        continue;
      }
      const std::string& principal = (*it)->principal;
      auto running = running_stateless_.find(principal);
      auto served = last_served_.find(principal);
      std::pair<int, uint64_t> rank = {
          running == running_stateless_.end() ? 0 : running->second,
          served == last_served_.end() ? 0 : served->second};
      if (best == pending_.end() || rank < best_rank) {
        best = it;
        best_rank = rank;
      }
    }
    uint64_t key = TakeIdleFor((*best)->principal);
    if (key == 0) {
      // Every idle worker ran another principal's calls. A principal with
      // nothing running must not starve: recycle the least recently used
      // idle worker for it (unless a fresh one is already on its way).
      // Otherwise another waiting call may still use the idle workers.
      blocked.push_back(best->get());
      if (best_rank.first == 0) {
        if (spare_starting > 0) {
          --spare_starting;
        } else {
          Recycle(workers_.at(idle_.front()).get());
        }
      }
      continue;
    }
    std::unique_ptr<Call> call = std::move(*best);
    pending_.erase(best);
    ++busy_unbound_;
    StartCall(workers_[key].get(), std::move(call));
  }
  // Idle workers left now are of no use to any waiting call. Rebalance: a
  // blocked principal gets a worker of a principal that runs at least two
  // more stateless calls than it does. Each recycle costs a spawn, so shares
  // only move towards equal, never back and forth.
  for (const Call* call : blocked) {
    if (idle_.empty()) break;
    int mine = RunningStateless(call->principal);
    if (mine == 0) continue;  // handled above
    if (spare_starting > 0) {
      --spare_starting;
      continue;
    }
    for (uint64_t key : idle_) {
      Worker* w = workers_.at(key).get();
      if (RunningStateless(w->principal) > mine + 1) {
        Recycle(w);
        break;
      }
    }
  }
}

int ContextPool::RunningStateless(const std::string& principal) const {
  auto it = running_stateless_.find(principal);
  return it == running_stateless_.end() ? 0 : it->second;
}

void ContextPool::Recycle(Worker* w) {
  w->released = true;
  Condemn(w, "recycled for another principal");
}

void ContextPool::FinishCall(std::unique_ptr<Call> call,
                             absl::StatusOr<internal::WorkerResponse> result,
                             Deferred* deferred) {
  Dequeued(call.get());
  if (call->has_deadline_timer) timers_.erase(call->deadline_timer);
  if (call->has_kill_timer) timers_.erase(call->kill_timer);
  call_location_.erase(call->id);
  --open_calls_;
  ++calls_total_;
  if (call->order) {
    // After the events already handed out, which may still be on their way.
    deferred->push_back([order = call->order, seq = call->next_seq,
                         done = std::move(call->done),
                         result = std::move(result)]() mutable {
      order->Put(seq, [done = std::move(done),
                       result = std::move(result)]() mutable {
        done(std::move(result));
      });
    });
    return;
  }
  deferred->push_back([done = std::move(call->done),
                       result = std::move(result)]() mutable {
    done(std::move(result));
  });
}

void ContextPool::FinishQueuedCall(CallId id, const absl::Status& status,
                                   Deferred* deferred) {
  auto loc = call_location_.find(id);
  if (loc == call_location_.end()) return;
  std::deque<std::unique_ptr<Call>>* queue = QueueAt(loc->second);
  if (queue == nullptr) return;
  auto it = std::find_if(queue->begin(), queue->end(),
                         [id](const auto& c) { return c->id == id; });
  if (it == queue->end()) return;
  std::unique_ptr<Call> call = std::move(*it);
  queue->erase(it);
  FinishCall(std::move(call), status, deferred);
}

}  // namespace pyexec

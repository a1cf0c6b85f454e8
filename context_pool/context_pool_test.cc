#include "context_pool/context_pool.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "context_pool/fake_worker_launcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

// Collects one asynchronous result.
template <typename T>
struct Result {
  absl::Notification done;
  absl::StatusOr<T> value = absl::UnknownError("not called");

  std::function<void(absl::StatusOr<T>)> Callback() {
    return [this](absl::StatusOr<T> v) {
      value = std::move(v);
      done.Notify();
    };
  }
  const absl::StatusOr<T>& Wait() {
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    return value;
  }
};

using CallResult = Result<internal::WorkerResponse>;

internal::WorkerRequest Eval(const std::string& code) {
  internal::WorkerRequest request;
  request.mutable_eval()->set_code(code);
  return request;
}

absl::Time In(absl::Duration d) { return absl::Now() + d; }

class ContextPoolTest : public ::testing::Test {
 protected:
  void StartPool(ContextPoolOptions options) {
    auto launcher = std::make_unique<FakeWorkerLauncher>();
    launcher_ = launcher.get();
    pool_ = std::make_unique<ContextPool>(options, std::move(launcher));
    pool_->SetWorkerLostListener([this](WorkerId id, const std::string& why) {
      absl::MutexLock lock(&mu_);
      lost_.push_back(id);
      lost_reasons_.push_back(why);
    });
    ASSERT_TRUE(pool_->Start().ok());
    ASSERT_TRUE(pool_->WaitUntilWarm(absl::Seconds(10)));
  }

  WorkerId Acquire() {
    Result<WorkerId> r;
    pool_->Acquire(In(absl::Seconds(5)), r.Callback());
    EXPECT_TRUE(r.Wait().ok()) << r.Wait().status();
    return r.Wait().value_or(0);
  }

  // Runs code and waits for the outcome.
  absl::StatusOr<internal::WorkerResponse> Run(
      WorkerId worker, const std::string& code,
      absl::Duration timeout = absl::Seconds(5)) {
    CallResult r;
    pool_->Submit(worker, Eval(code), In(timeout), r.Callback());
    return r.Wait();
  }

  // Waits until the pool is back to `n` idle workers.
  void ExpectHealsTo(int n) {
    absl::Time until = In(absl::Seconds(10));
    while (pool_->GetStats().available_workers != n && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_EQ(pool_->GetStats().available_workers, n);
  }

  // The lost-worker listener runs on the pool's I/O thread after the failed
  // call's callback: wait for it rather than assume it already ran.
  bool WaitLost(size_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return lost_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }

  FakeWorkerLauncher* launcher_ = nullptr;
  absl::Mutex mu_;
  std::vector<WorkerId> lost_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> lost_reasons_ ABSL_GUARDED_BY(mu_);
  // Last, so that it is destroyed first: its I/O thread calls the listener,
  // which writes the members above (found by the ASan run: a listener call
  // after lost_ was destroyed).
  std::unique_ptr<ContextPool> pool_;
};

TEST_F(ContextPoolTest, WarmsUpToWorkers) {
  ContextPoolOptions options;
  options.workers = 3;
  StartPool(options);
  PoolStats stats = pool_->GetStats();
  EXPECT_EQ(stats.num_workers, 3);
  EXPECT_EQ(stats.available_workers, 3);
  EXPECT_EQ(stats.checked_out, 0);
  EXPECT_EQ(stats.pending_requests, 0);
}

TEST_F(ContextPoolTest, StatelessCallRunsOnAnIdleWorker) {
  StartPool({});
  auto r = Run(0, "hello");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->value().str(), HasSubstr(":hello"));
}

// With io_spin the I/O thread polls for answers before it sleeps, and a
// call sent while it sleeps wakes it: answers, deadlines and concurrent
// calls behave exactly as without.
TEST_F(ContextPoolTest, PollingForAnswersChangesNoOutcome) {
  ContextPoolOptions options;
  options.workers = 2;
  options.io_spin = absl::Microseconds(200);
  options.spin_below_calls = 2;
  StartPool(options);
  WorkerId session = Acquire();
  for (int i = 0; i < 200; ++i) {
    auto r = Run(i % 2 == 0 ? session : 0, absl::StrCat("sleep:", i % 3));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->value().int_(), i % 3);
  }
  // A slow answer (the poll window runs out, the thread blocks) and a
  // deadline that interrupts one.
  auto slow = Run(session, "sleep:30");
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_EQ(Run(session, "sleep:2000", absl::Milliseconds(50)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // Concurrent calls: more than spin_below_calls run at once.
  std::vector<std::unique_ptr<CallResult>> results;
  for (int i = 0; i < 6; ++i) {
    results.push_back(std::make_unique<CallResult>());
    pool_->Submit(i < 3 ? session : 0, Eval("sleep:5"), In(absl::Seconds(5)),
                  results.back()->Callback());
  }
  for (auto& r : results) EXPECT_TRUE(r->Wait().ok()) << r->Wait().status();
}

TEST_F(ContextPoolTest, AcquiredWorkerServesItsSessionOnly) {
  ContextPoolOptions options;
  options.workers = 2;
  StartPool(options);
  WorkerId a = Acquire();
  WorkerId b = Acquire();
  ASSERT_NE(a, b);
  auto ra1 = Run(a, "x");
  auto ra2 = Run(a, "y");
  auto rb = Run(b, "x");
  ASSERT_TRUE(ra1.ok() && ra2.ok() && rb.ok());
  // The fake answers with its worker index: the same for one session.
  std::string wa = ra1->value().str().substr(0, ra1->value().str().find(':'));
  EXPECT_EQ(ra2->value().str(), wa + ":y");
  EXPECT_NE(rb->value().str(), wa + ":x");
  EXPECT_EQ(pool_->GetStats().checked_out, 2);
  // Replacements keep the warm pool at size.
  ExpectHealsTo(2);
}

TEST_F(ContextPoolTest, AcquirePastMaxWorkersIsRefusedButStatelessWorks) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_workers = 2;
  StartPool(options);
  Acquire();
  Acquire();
  Result<WorkerId> third;
  pool_->Acquire(In(absl::Seconds(5)), third.Callback());
  EXPECT_EQ(third.Wait().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.Wait().status().message(), HasSubstr("no_workers_available"));
  EXPECT_TRUE(Run(0, "still").ok());
}

TEST_F(ContextPoolTest, ReleaseDiscardsTheWorker) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_workers = 1;
  StartPool(options);
  WorkerId a = Acquire();
  pool_->Release(a);
  EXPECT_EQ(pool_->GetStats().checked_out, 0);
  EXPECT_EQ(Run(a, "x").status().code(), absl::StatusCode::kNotFound);
  // The limit counts only bound workers: a new bind works.
  WorkerId b = Acquire();
  EXPECT_NE(a, b);
  pool_->Release(12345);  // unknown: ignored
}

TEST_F(ContextPoolTest, DeadlineInterruptsAndTheSessionSurvives) {
  StartPool({});
  WorkerId a = Acquire();
  absl::Time start = absl::Now();
  auto r = Run(a, "sleep:10000", absl::Milliseconds(100));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  auto again = Run(a, "after");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(again->value().str(), HasSubstr(":after"));
}

// Deadlines, kill grace and startup timeouts run on a monotonic clock: the
// wall clock being set back an hour must not delay a deadline.
TEST_F(ContextPoolTest, DeadlineHoldsWhenTheWallClockIsSetBack) {
  auto offset = std::make_shared<std::atomic<int64_t>>(0);
  ContextPoolOptions options;
  options.workers = 1;
  options.wall_clock = [offset] {
    return absl::Now() + absl::Seconds(offset->load());
  };
  StartPool(options);
  WorkerId a = Acquire();
  absl::Notification done;
  absl::Status status;
  absl::Time start = absl::Now();
  internal::WorkerRequest request;
  request.mutable_eval()->set_code("sleep:3000");
  pool_->Submit(a, request, options.wall_clock() + absl::Milliseconds(200),
                [&](absl::StatusOr<internal::WorkerResponse> r) {
                  status = r.status();
                  done.Notify();
                });
  offset->store(-3600);
  done.WaitForNotification();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

// A worker whose exit cannot be watched (epoll_ctl fails) would never be
// seen to die: it is refused like a failed spawn, and another one started.
TEST_F(ContextPoolTest, WorkerThatCannotBeWatchedIsRefused) {
  auto launcher = std::make_unique<FakeWorkerLauncher>();
  FakeWorkerLauncher* fake = launcher.get();
  fake->UnwatchableNextLaunches(1);
  ContextPoolOptions options;
  options.workers = 1;
  pool_ = std::make_unique<ContextPool>(options, std::move(launcher));
  ASSERT_TRUE(pool_->Start().ok());
  ASSERT_TRUE(pool_->WaitUntilWarm(absl::Seconds(10)));
  EXPECT_EQ(fake->launched(), 2);
  EXPECT_EQ(pool_->GetStats().num_workers, 1);
}

TEST_F(ContextPoolTest, CallThatIgnoresTheInterruptIsKilledAfterGrace) {
  ContextPoolOptions options;
  options.workers = 2;
  options.kill_grace = absl::Milliseconds(200);
  StartPool(options);
  WorkerId a = Acquire();
  auto r = Run(a, "spin", absl::Milliseconds(50));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("kill_grace"));
  EXPECT_EQ(Run(a, "x").status().code(), absl::StatusCode::kNotFound);
  {
    // The listener runs on the I/O thread after the call's callback.
    absl::MutexLock lock(&mu_);
    ASSERT_TRUE(WaitLost(1));
    ASSERT_EQ(lost_.size(), 1u);
    EXPECT_EQ(lost_[0], a);
  }
  ExpectHealsTo(2);
}

TEST_F(ContextPoolTest, StreamEventsAreBoundedUntilConsumed) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_buffered_events = 2;
  StartPool(options);
  WorkerId a = Acquire();
  absl::Mutex events_mu;
  std::vector<int64_t> events;
  CallResult r;
  internal::WorkerRequest request = Eval("stream:20");
  request.set_stream(true);
  CallId id = pool_->Submit(
      a, std::move(request), In(absl::Seconds(10)), r.Callback(), "",
      [&](CallId, internal::WorkerResponse event) {
        absl::MutexLock lock(&events_mu);
        events.push_back(event.value().int_());
      });
  auto count = [&] {
    absl::MutexLock lock(&events_mu);
    return events.size();
  };
  // The worker has written all 20 (they fit in the socket buffer), but the
  // pool hands out only 2 until they are consumed.
  absl::Time until = In(absl::Seconds(5));
  while (count() < 2 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(count(), 2u);
  EXPECT_FALSE(r.done.HasBeenNotified());
  for (size_t consumed = 0; consumed < 20; ++consumed) {
    until = In(absl::Seconds(5));
    while (count() <= consumed && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    pool_->EventConsumed(id);
  }
  ASSERT_TRUE(r.Wait().ok());
  EXPECT_EQ(r.value->value().int_(), 20);
  absl::MutexLock lock(&events_mu);
  ASSERT_EQ(events.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(events[i], i);
}

// Large items are bounded by bytes, not only by count: a slow reader of
// 1 MiB items holds about max_buffered_bytes, not max_buffered_events MiB.
TEST_F(ContextPoolTest, StreamEventsAreBoundedInBytesToo) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_buffered_events = 8;
  options.max_buffered_bytes = (5 << 20) / 2;  // 2.5 MiB: three 1 MiB items
  StartPool(options);
  WorkerId a = Acquire();
  std::atomic<int> received{0};
  CallResult r;
  internal::WorkerRequest request = Eval(absl::StrCat("bigstream:6:", 1 << 20));
  request.set_stream(true);
  CallId id = pool_->Submit(a, std::move(request), In(absl::Seconds(10)), r.Callback(), "",
                            [&](CallId, internal::WorkerResponse) { ++received; });
  absl::Time until = In(absl::Seconds(5));
  while (received < 3 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(received.load(), 3);
  for (int consumed = 0; consumed < 6; ++consumed) {
    until = In(absl::Seconds(5));
    while (received <= consumed && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
    pool_->EventConsumed(id);
  }
  ASSERT_TRUE(r.Wait().ok());
  EXPECT_EQ(received.load(), 6);
}

TEST_F(ContextPoolTest, InterruptWorkerEndsTheRunningCallCancelled) {
  ContextPoolOptions options;
  options.workers = 1;
  StartPool(options);
  WorkerId a = Acquire();
  EXPECT_EQ(pool_->InterruptWorker(a).value(), false);  // nothing running
  CallResult r;
  pool_->Submit(a, Eval("sleep:5000"), In(absl::Seconds(10)), r.Callback());
  // An interrupt that reaches the fake before it reads the request is lost
  // (as with a real worker before the call starts); the fake gives no signal
  // that it started, so leave it a moment.
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(pool_->InterruptWorker(a).value(), true);
  EXPECT_EQ(r.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(r.value.status().message(), HasSubstr("Interrupt"));
  EXPECT_TRUE(Run(a, "x").ok());  // the session lives on
  EXPECT_EQ(pool_->InterruptWorker(WorkerId{999}).status().code(),
            absl::StatusCode::kNotFound);
}

// An interrupt that names a call (Interrupt with a call id) reaches it
// wherever it is: a waiting one ends CANCELLED without running, and the one
// running carries on.
TEST_F(ContextPoolTest, InterruptCallReachesAWaitingCallByItsId) {
  ContextPoolOptions options;
  options.workers = 1;
  StartPool(options);
  WorkerId a = Acquire();
  CallResult running, waiting;
  pool_->Submit(a, Eval("sleep:300"), In(absl::Seconds(10)), running.Callback());
  CallId second = pool_->Submit(a, Eval("never"), In(absl::Seconds(10)), waiting.Callback());
  EXPECT_EQ(pool_->InterruptCall(second).value(), true);
  EXPECT_EQ(waiting.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(waiting.value.status().message(), HasSubstr("before it started"));
  ASSERT_TRUE(running.Wait().ok());
  EXPECT_EQ(running.value->value().int_(), 300);
  EXPECT_EQ(pool_->InterruptCall(second).value(), false);  // ended already
}

TEST_F(ContextPoolTest, WorkerDeathAbortsTheCallWithTheReason) {
  ContextPoolOptions options;
  options.workers = 2;
  StartPool(options);
  WorkerId a = Acquire();
  WorkerId b = Acquire();
  auto r = Run(a, "exit:3");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("exited with code 3"));
  EXPECT_EQ(Run(a, "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Run(b, "x").ok());  // the other session is untouched
  EXPECT_EQ(pool_->GetStats().workers_died, 1u);
  ExpectHealsTo(2);
}

TEST_F(ContextPoolTest, StatelessWorkerDeathHeals) {
  ContextPoolOptions options;
  options.workers = 2;
  StartPool(options);
  auto r = Run(0, "exit:9");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  ExpectHealsTo(2);
  absl::MutexLock lock(&mu_);
  EXPECT_TRUE(lost_.empty());  // no session was involved
}

TEST_F(ContextPoolTest, GarbageFromAWorkerIsAProtocolError) {
  StartPool({});
  auto r = Run(0, "garbage");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("protocol error"));
}

TEST_F(ContextPoolTest, AClosedSocketIsAProtocolError) {
  StartPool({});
  auto r = Run(0, "close");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("closed its socket"));
}

TEST_F(ContextPoolTest, FullWaitQueueIsRefused) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_pending = 1;
  StartPool(options);
  CallResult running, queued, refused;
  pool_->Submit(0, Eval("sleep:300"), In(absl::Seconds(5)), running.Callback());
  pool_->Submit(0, Eval("q"), In(absl::Seconds(5)), queued.Callback());
  pool_->Submit(0, Eval("r"), In(absl::Seconds(5)), refused.Callback());
  EXPECT_EQ(refused.Wait().status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(running.Wait().ok());
  EXPECT_TRUE(queued.Wait().ok());
}

TEST_F(ContextPoolTest, QueuedCallTimesOutWhileWaiting) {
  ContextPoolOptions options;
  options.workers = 1;
  StartPool(options);
  CallResult running, queued;
  pool_->Submit(0, Eval("sleep:500"), In(absl::Seconds(5)), running.Callback());
  pool_->Submit(0, Eval("q"), In(absl::Milliseconds(50)), queued.Callback());
  EXPECT_EQ(queued.Wait().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(queued.Wait().status().message(), HasSubstr("waiting"));
  EXPECT_TRUE(running.Wait().ok());
}

TEST_F(ContextPoolTest, CancelInterruptsARunningCall) {
  StartPool({});
  WorkerId a = Acquire();
  CallResult r;
  CallId id = pool_->Submit(a, Eval("sleep:10000"), In(absl::Seconds(30)),
                            r.Callback());
  absl::SleepFor(absl::Milliseconds(20));
  pool_->Cancel(id);
  EXPECT_EQ(r.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(Run(a, "alive").ok());
  pool_->Cancel(id);  // finished: ignored
}

TEST_F(ContextPoolTest, SessionCallsRunInOrder) {
  StartPool({});
  WorkerId a = Acquire();
  CallResult first, second, third;
  pool_->Submit(a, Eval("sleep:50"), In(absl::Seconds(5)), first.Callback());
  pool_->Submit(a, Eval("two"), In(absl::Seconds(5)), second.Callback());
  pool_->Submit(a, Eval("three"), In(absl::Seconds(5)), third.Callback());
  EXPECT_EQ(pool_->GetStats().pending_requests, 2);
  ASSERT_TRUE(third.Wait().ok());
  EXPECT_TRUE(first.done.HasBeenNotified());
  EXPECT_TRUE(second.done.HasBeenNotified());
}

TEST_F(ContextPoolTest, DrainRefusesNewWorkAndWaitsForOpenCalls) {
  StartPool({});
  CallResult running;
  pool_->Submit(0, Eval("sleep:200"), In(absl::Seconds(5)), running.Callback());
  pool_->BeginDrain();
  EXPECT_EQ(Run(0, "new").status().code(), absl::StatusCode::kUnavailable);
  Result<WorkerId> bind;
  pool_->Acquire(In(absl::Seconds(1)), bind.Callback());
  EXPECT_EQ(bind.Wait().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(pool_->WaitForCallsToFinish(In(absl::Seconds(5))));
  EXPECT_TRUE(running.Wait().ok());
}

TEST_F(ContextPoolTest, ShutdownEndsOpenCalls) {
  StartPool({});
  CallResult running;
  pool_->Submit(0, Eval("spin"), In(absl::Seconds(30)), running.Callback());
  pool_->Shutdown();
  EXPECT_EQ(running.Wait().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ContextPoolTest, SpawnFailuresAreRetried) {
  auto launcher = std::make_unique<FakeWorkerLauncher>();
  launcher->FailNextLaunches(2);
  ContextPoolOptions options;
  options.workers = 1;
  pool_ = std::make_unique<ContextPool>(options, std::move(launcher));
  ASSERT_TRUE(pool_->Start().ok());
  EXPECT_TRUE(pool_->WaitUntilWarm(absl::Seconds(10)));
}

}  // namespace
}  // namespace pyexec

namespace pyexec {
namespace {

// The fake worker's index, from its answer "<index>:<code>".
std::string WorkerOf(const absl::StatusOr<internal::WorkerResponse>& r) {
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return "";
  const std::string& s = r->value().str();
  return s.substr(0, s.find(':'));
}

class ContextPoolIsolationTest : public ContextPoolTest {
 protected:
  absl::StatusOr<internal::WorkerResponse> RunAs(const std::string& principal,
                                                 const std::string& code) {
    CallResult r;
    pool_->Submit(0, Eval(code), In(absl::Seconds(5)), r.Callback(), principal);
    return r.Wait();
  }
};

TEST_F(ContextPoolIsolationTest, AWorkerThatRanAStatelessCallIsNeverBound) {
  ContextPoolOptions options;
  options.workers = 2;
  StartPool(options);
  std::vector<std::string> used;
  for (int i = 0; i < 6; ++i) used.push_back(WorkerOf(Run(0, "x")));
  for (int i = 0; i < 3; ++i) {
    WorkerId session = Acquire();
    std::string bound = WorkerOf(Run(session, "y"));
    EXPECT_THAT(used, ::testing::Not(::testing::Contains(bound)));
    pool_->Release(session);
  }
}

TEST_F(ContextPoolIsolationTest, PrincipalsNeverShareAStatelessWorker) {
  ContextPoolOptions options;
  options.workers = 2;
  StartPool(options);
  absl::flat_hash_map<std::string, std::string> owner;  // worker -> principal
  for (int round = 0; round < 4; ++round) {
    for (const std::string principal : {"alice", "bob", "carol"}) {
      std::string worker = WorkerOf(RunAs(principal, "x"));
      auto [it, inserted] = owner.emplace(worker, principal);
      EXPECT_EQ(it->second, principal) << "worker " << worker << " ran calls of "
                                       << it->second << " and " << principal;
    }
  }
  // A principal alone keeps reusing its worker (no recycling cost).
  std::string first = WorkerOf(RunAs("dave", "x"));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(WorkerOf(RunAs("dave", "x")), first);
}

TEST_F(ContextPoolIsolationTest, QueuedStatelessCallsAreDispatchedFairly) {
  ContextPoolOptions options;
  options.workers = 1;
  StartPool(options);
  // Alice keeps the only worker busy and queues four more calls; bob's one
  // call, queued after them, runs before alice's second.
  std::vector<std::unique_ptr<CallResult>> alice;
  std::vector<std::string> order;
  absl::Mutex order_mu;
  auto record = [&](const std::string& who, CallResult* r) {
    return [&, who, r](absl::StatusOr<internal::WorkerResponse> v) {
      {
        absl::MutexLock lock(&order_mu);
        order.push_back(who);
      }
      r->Callback()(std::move(v));
    };
  };
  for (int i = 0; i < 5; ++i) {
    alice.push_back(std::make_unique<CallResult>());
    pool_->Submit(0, Eval(i == 0 ? "sleep:200" : "sleep:20"), In(absl::Seconds(10)),
                  record("alice", alice.back().get()), "alice");
  }
  CallResult bob;
  pool_->Submit(0, Eval("b"), In(absl::Seconds(10)), record("bob", &bob), "bob");
  for (auto& r : alice) EXPECT_TRUE(r->Wait().ok());
  EXPECT_TRUE(bob.Wait().ok()) << bob.Wait().status();
  absl::MutexLock lock(&order_mu);
  ASSERT_EQ(order.size(), 6u);
  EXPECT_EQ(order[0], "alice");
  EXPECT_EQ(order[1], "bob");
}

TEST_F(ContextPoolIsolationTest, QueuedBytesAreBounded) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_queued_bytes = 1000;
  StartPool(options);
  CallResult running, first, second;
  pool_->Submit(0, Eval("sleep:300"), In(absl::Seconds(5)), running.Callback());
  // One call may always wait, whatever its size; the next one is refused.
  pool_->Submit(0, Eval(std::string(800, 'a')), In(absl::Seconds(5)), first.Callback());
  pool_->Submit(0, Eval(std::string(800, 'b')), In(absl::Seconds(5)), second.Callback());
  EXPECT_EQ(second.Wait().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.Wait().status().message(), HasSubstr("bytes"));
  EXPECT_TRUE(running.Wait().ok());
  EXPECT_TRUE(first.Wait().ok());
  // Once they have run, the bytes no longer count.
  EXPECT_TRUE(Run(0, std::string(800, 'c')).ok());
}

}  // namespace
}  // namespace pyexec

#include "server/pyexec_core.h"

#include "absl/synchronization/notification.h"
#include "context_pool/fake_worker_launcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

class PyExecCoreTest : public ::testing::Test {
 protected:
  PyExecCoreTest() {
    ContextPoolOptions options;
    options.workers = 2;
    options.max_workers = 2;
    pool_ = std::make_unique<ContextPool>(
        options, std::make_unique<FakeWorkerLauncher>());
    core_ = std::make_unique<PyExecCore>(CoreOptions{}, &sessions_, pool_.get());
    pool_->SetWorkerLostListener([this](WorkerId w, const std::string& why) {
      core_->OnWorkerLost(w, why);
    });
    EXPECT_TRUE(pool_->Start().ok());
    EXPECT_TRUE(pool_->WaitUntilWarm(absl::Seconds(10)));
  }

  absl::Time Deadline() { return absl::Now() + absl::Seconds(5); }

  absl::StatusOr<std::string> Bind(uint32_t idle_seconds = 0,
                                   const std::string& principal = "",
                                   PyExecCore* core = nullptr) {
    if (core == nullptr) core = core_.get();
    v1::BindRequest request;
    request.set_idle_timeout_seconds(idle_seconds);
    v1::BindResponse response;
    absl::Notification done;
    absl::Status status;
    core->Bind(principal, request, Deadline(), &response, [&](absl::Status s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) return status;
    last_idle_ = response.idle_timeout_seconds();
    return response.session();
  }

  absl::StatusOr<v1::EvalResponse> Eval(const std::string& session,
                                        const std::string& code,
                                        const std::string& principal = "") {
    v1::EvalRequest request;
    request.set_session(session);
    request.set_code(code);
    v1::EvalResponse response;
    absl::Notification done;
    absl::Status status;
    core_->Eval(principal, request, Deadline(), &response, [&](absl::Status s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) return status;
    return response;
  }

  SessionTable sessions_;
  std::unique_ptr<ContextPool> pool_;
  std::unique_ptr<PyExecCore> core_;
  uint32_t last_idle_ = 0;
};

TEST_F(PyExecCoreTest, BindEvalUnbind) {
  auto token = Bind();
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(last_idle_, 600u);  // the default
  auto r = Eval(*token, "x");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->value().str(), HasSubstr(":x"));
  EXPECT_EQ(core_->GetStats().sessions(), 1u);
  EXPECT_TRUE(core_->Unbind("", [&] {
    v1::UnbindRequest u;
    u.set_session(*token);
    return u;
  }()).ok());
  EXPECT_EQ(Eval(*token, "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(core_->Unbind("", v1::UnbindRequest()).ok());  // idempotent
}

TEST_F(PyExecCoreTest, BindMayAskForItsIdleTimeout) {
  ASSERT_TRUE(Bind(42).ok());
  EXPECT_EQ(last_idle_, 42u);
}

TEST_F(PyExecCoreTest, EmptyCodeIsInvalid) {
  EXPECT_EQ(Eval("", "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PyExecCoreTest, UnknownSessionIsNotFound) {
  EXPECT_EQ(Eval("0123", "x").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PyExecCoreTest, ExhaustionSaysNoWorkersAvailable) {
  ASSERT_TRUE(Bind().ok());
  ASSERT_TRUE(Bind().ok());
  auto third = Bind();
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("no_workers_available"));
  EXPECT_EQ(core_->GetStats().max_workers(), 2u);
}

TEST_F(PyExecCoreTest, AnotherPrincipalsTokenIsNotFoundAndUnbindIsANoOp) {
  auto token = Bind(0, "alice");
  ASSERT_TRUE(token.ok());
  auto foreign = Eval(*token, "x", "bob");
  auto unknown = Eval("0123456789abcdef0123456789abcdef", "x", "bob");
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kNotFound);
  // Indistinguishable from an unknown token.
  EXPECT_EQ(foreign.status(), unknown.status());
  v1::UnbindRequest unbind;
  unbind.set_session(*token);
  EXPECT_TRUE(core_->Unbind("bob", unbind).ok());
  EXPECT_TRUE(Eval(*token, "x", "alice").ok());
  EXPECT_TRUE(core_->Unbind("alice", unbind).ok());
  EXPECT_EQ(Eval(*token, "x", "alice").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PyExecCoreTest, SessionsPerPrincipalAreLimited) {
  CoreOptions options;
  options.max_sessions_per_principal = 1;
  PyExecCore limited(options, &sessions_, pool_.get());
  auto first = Bind(0, "alice", &limited);
  ASSERT_TRUE(first.ok());
  auto second = Bind(0, "alice", &limited);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("max_sessions_per_principal"));
  // Another principal is not affected, and an unbind frees the slot.
  auto other = Bind(0, "bob", &limited);
  EXPECT_TRUE(other.ok());
  v1::UnbindRequest unbind;
  unbind.set_session(*first);
  EXPECT_TRUE(limited.Unbind("alice", unbind).ok());
  unbind.set_session(*other);
  EXPECT_TRUE(limited.Unbind("bob", unbind).ok());
  EXPECT_TRUE(Bind(0, "alice", &limited).ok());
}

TEST_F(PyExecCoreTest, WorkerDeathEndsTheSession) {
  auto token = Bind();
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(Eval(*token, "exit:1").status().code(), absl::StatusCode::kAborted);
  // The pool tells the core, which forgets the token.
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (sessions_.size() != 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(Eval(*token, "x").status().code(), absl::StatusCode::kNotFound);
}

// A client that gives up on a Bind waiting for a worker must not leave a
// session behind (it would idle for its timeout, up to 24 h).
TEST(PyExecCoreBindTest, CancelledBindLeavesNoSession) {
  ContextPoolOptions options;
  options.workers = 1;
  options.max_workers = 3;
  auto launcher = std::make_unique<FakeWorkerLauncher>();
  FakeWorkerLauncher* fake = launcher.get();
  ContextPool pool(options, std::move(launcher));
  SessionTable sessions;
  PyExecCore core(CoreOptions{}, &sessions, &pool);
  ASSERT_TRUE(pool.Start().ok());
  ASSERT_TRUE(pool.WaitUntilWarm(absl::Seconds(10)));
  // No more workers for now: the second bind has to wait.
  fake->FailNextLaunches(1000000);
  auto bind = [&](v1::BindResponse* response, absl::Notification* done,
                  absl::Status* status) {
    return core.Bind("", v1::BindRequest(), absl::Now() + absl::Seconds(10),
                     response, [done, status](absl::Status s) {
                       *status = s;
                       done->Notify();
                     });
  };
  v1::BindResponse first_response, second_response;
  absl::Notification first_done, second_done;
  absl::Status first, second;
  bind(&first_response, &first_done, &first);
  first_done.WaitForNotification();
  ASSERT_TRUE(first.ok());

  std::shared_ptr<BindHandle> waiting =
      bind(&second_response, &second_done, &second);
  EXPECT_FALSE(second_done.HasBeenNotified());
  waiting->Cancel();
  fake->FailNextLaunches(0);
  second_done.WaitForNotification();
  EXPECT_EQ(second.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(sessions.size(), 1u);

  // Cancelled after the session was made: unbound at once.
  v1::BindResponse third_response;
  absl::Notification third_done;
  absl::Status third;
  std::shared_ptr<BindHandle> late = bind(&third_response, &third_done, &third);
  third_done.WaitForNotification();
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(sessions.size(), 2u);
  late->Cancel();
  EXPECT_EQ(sessions.size(), 1u);
  pool.Shutdown();
}

}  // namespace
}  // namespace pyexec

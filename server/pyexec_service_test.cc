// The service's unary reactors over real gRPC (in-process server, fake
// workers): PoolCallReactor is inlineable, so gRPC may run its OnDone and
// OnCancel on whatever thread completes the call, including one that is
// inside Finish. This races client cancels and deadlines with the pool's
// answers from many threads, with absl's lock-cycle detection set to abort:
// a reaction that blocked, took a lock held around Finish, or touched a
// deleted reactor would hang, abort or (under --config=asan) report.
#include "server/pyexec_service.h"

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "context_pool/fake_worker_launcher.h"
#include "gtest/gtest.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/server_builder.h"
#include "server/auth.h"
#include "server/pyexec_core.h"
#include "server/session_table.h"

namespace pyexec {
namespace {

class PyExecServiceTest : public ::testing::Test {
 protected:
  PyExecServiceTest() {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kAbort);
    auth_ = std::move(Authenticator::Create(AuthOptions{}).value());
    ContextPoolOptions options;
    options.workers = 4;
    options.max_workers = 4;
    options.kill_grace = absl::Seconds(5);
    pool_ = std::make_unique<ContextPool>(options, std::make_unique<FakeWorkerLauncher>());
    core_ = std::make_unique<PyExecCore>(CoreOptions{}, &sessions_, pool_.get());
    EXPECT_TRUE(pool_->Start().ok());
    EXPECT_TRUE(pool_->WaitUntilWarm(absl::Seconds(10)));
    service_ = std::make_unique<PyExecService>(core_.get(), auth_.get(), absl::Seconds(30),
                                               absl::Hours(1), nullptr, nullptr);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
  }
  ~PyExecServiceTest() override {
    pool_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }

  std::unique_ptr<Authenticator> auth_;
  SessionTable sessions_;
  std::unique_ptr<ContextPool> pool_;
  std::unique_ptr<PyExecCore> core_;
  std::unique_ptr<PyExecService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(PyExecServiceTest, CancelsAndDeadlinesRaceAnswersWithoutHangOrCrash) {
  constexpr int kThreads = 8;
  constexpr int kCallsPerThread = 150;
  std::atomic<int> ok{0}, cancelled{0}, deadline{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::PyExec::NewStub(channel_);
      std::mt19937 random(t);
      for (int i = 0; i < kCallsPerThread; ++i) {
        grpc::ClientContext context;
        const int choice = random() % 4;
        v1::EvalRequest request;
        // Answers take 0-3 ms; deadlines and cancels land around them.
        request.set_code(absl::StrCat("sleep:", random() % 4));
        if (choice == 1) {
          context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::microseconds(500 + random() % 3000));
        }
        std::thread canceller;
        if (choice == 2) {
          const int after_us = random() % 3000;
          canceller = std::thread([&context, after_us] {
            absl::SleepFor(absl::Microseconds(after_us));
            context.TryCancel();
          });
        }
        v1::EvalResponse response;
        grpc::Status status = stub->Eval(&context, request, &response);
        if (canceller.joinable()) canceller.join();
        switch (status.error_code()) {
          case grpc::StatusCode::OK: ++ok; break;
          case grpc::StatusCode::CANCELLED: ++cancelled; break;
          case grpc::StatusCode::DEADLINE_EXCEEDED: ++deadline; break;
          default:
            ++other;
            ADD_FAILURE() << status.error_code() << ": " << status.error_message();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok + cancelled + deadline + other, kThreads * kCallsPerThread);
  EXPECT_GT(ok, 0);
  EXPECT_GT(cancelled + deadline, 0);
  EXPECT_EQ(other, 0);
  // Every worker is free again: nothing was left running or leaked.
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (absl::Now() < until &&
         (pool_->GetStats().busy_workers != 0 || pool_->GetStats().pending_requests != 0)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(pool_->GetStats().busy_workers, 0);
  EXPECT_EQ(pool_->GetStats().pending_requests, 0);
}

TEST_F(PyExecServiceTest, TraceComesBackInTrailingMetadata) {
  auto stub = v1::PyExec::NewStub(channel_);
  grpc::ClientContext context;
  context.AddMetadata("x-pyexec-trace", "1");
  v1::EvalRequest request;
  request.set_code("1");
  v1::EvalResponse response;
  ASSERT_TRUE(stub->Eval(&context, request, &response).ok());
  auto trace = context.GetServerTrailingMetadata().find("x-pyexec-trace");
  ASSERT_NE(trace, context.GetServerTrailingMetadata().end());
  const std::string text(trace->second.data(), trace->second.size());
  EXPECT_EQ(text.rfind("entered=0 pool_sent=", 0), 0u) << text;
  // The pool's stages are stamped (the fake worker stamps none of its own).
  EXPECT_EQ(text.find("pool_sent=-"), std::string::npos) << text;
  EXPECT_EQ(text.find("pool_received=-"), std::string::npos) << text;
  // Without asking, no trace.
  grpc::ClientContext plain;
  ASSERT_TRUE(stub->Eval(&plain, request, &response).ok());
  EXPECT_EQ(plain.GetServerTrailingMetadata().count("x-pyexec-trace"), 0u);
}

}  // namespace
}  // namespace pyexec

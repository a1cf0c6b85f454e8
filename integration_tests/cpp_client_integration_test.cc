// Drives the real pyexecd, started on port 0, with the C++ client library
// and the `pyexec` CLI.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/pyexec/", path);
}

std::unique_ptr<bench::ServerProcess> StartServer(
    std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {Runfile("server/pyexecd"),
                                   "--listen=127.0.0.1:0", "--workers=2",
                                   "--max_workers=3"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const char* tmp = std::getenv("TEST_TMPDIR");
  auto server = bench::ServerProcess::Start(
      argv, absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/pyexecd.log"),
      absl::Seconds(60));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

v1::Value Int(int64_t n) {
  v1::Value v;
  v.set_int_(n);
  return v;
}

class CppClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer();
    ASSERT_NE(server_, nullptr);
    auto client = Client::Connect(server_->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::make_unique<Client>(std::move(*client));
  }

  // Waits until GetStats shows `available` idle workers.
  void ExpectPoolBackTo(uint32_t available) {
    absl::Time until = absl::Now() + absl::Seconds(20);
    uint32_t seen = 0;
    while (absl::Now() < until) {
      auto stats = client_->GetStats();
      ASSERT_TRUE(stats.ok());
      seen = stats->available_workers();
      if (seen == available) return;
      absl::SleepFor(absl::Milliseconds(20));
    }
    EXPECT_EQ(seen, available);
  }

  std::unique_ptr<bench::ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(CppClientTest, StatePersistsAndSessionsAreIsolated) {
  auto a = Session::Bind(*client_);
  auto b = Session::Bind(*client_);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(a->Exec("x = 'one'").ok());
  ASSERT_TRUE(b->Exec("x = 'two'").ok());
  EXPECT_EQ(a->Eval("x")->value.str(), "one");
  EXPECT_EQ(b->Eval("x")->value.str(), "two");
  auto stateless = client_->Eval("", "x");
  ASSERT_TRUE(stateless.ok());
  EXPECT_EQ(stateless->error->type(), "NameError");
}

TEST_F(CppClientTest, LocalsKwargsAndOutput) {
  auto s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok());
  auto r = s->Eval("a * b", {{"a", Int(6)}, {"b", Int(7)}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value.int_(), 42);
  ASSERT_TRUE(s->Exec("def f(x, y=1):\n    print('f called')\n    return x - y").ok());
  auto c = s->Call("__main__", "f", {Int(10)}, {{"y", Int(3)}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->value.int_(), 7);
  EXPECT_EQ(c->stdout_text, "f called\n");
}

TEST_F(CppClientTest, ExceptionsAreResults) {
  auto r = client_->Eval("", "1/0");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->error.has_value());
  EXPECT_EQ(r->error->type(), "ZeroDivisionError");
  EXPECT_EQ(r->error->message(), "division by zero");
  EXPECT_THAT(r->error->traceback(), HasSubstr("Traceback"));
  auto syntax = client_->Exec("", "def (");
  ASSERT_TRUE(syntax.ok());
  EXPECT_EQ(syntax->error->type(), "SyntaxError");
}

TEST_F(CppClientTest, UnbindIsIdempotentAndEndsTheSession) {
  auto bound = client_->Bind();
  ASSERT_TRUE(bound.ok());
  EXPECT_TRUE(client_->Unbind(bound->session).ok());
  EXPECT_TRUE(client_->Unbind(bound->session).ok());
  EXPECT_EQ(client_->Eval(bound->session, "1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CppClientTest, SessionDestructorUnbinds) {
  {
    auto s = Session::Bind(*client_);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(client_->GetStats()->checked_out(), 1u);
  }
  EXPECT_EQ(client_->GetStats()->checked_out(), 0u);
}

TEST_F(CppClientTest, ExhaustionThenStatelessStillWorks) {
  std::vector<Session> held;
  for (int i = 0; i < 3; ++i) {
    auto s = Session::Bind(*client_);
    ASSERT_TRUE(s.ok()) << s.status();
    held.push_back(std::move(*s));
  }
  auto fourth = client_->Bind();
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(fourth.status().message(), HasSubstr("no_workers_available"));
  auto r = client_->Eval("", "1 + 1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value.int_(), 2);
}

TEST_F(CppClientTest, KilledWorkerAbortsThenNotFoundAndThePoolHeals) {
  auto victim = Session::Bind(*client_);
  auto bystander = Session::Bind(*client_);
  ASSERT_TRUE(victim.ok() && bystander.ok());
  ASSERT_TRUE(bystander->Exec("kept = 1").ok());
  int64_t pid = victim->Eval("__import__('os').getpid()")->value.int_();
  ASSERT_GT(pid, 0);
  // SIGKILL the worker in the middle of a call.
  CallOptions slow;
  slow.timeout = absl::Seconds(20);
  std::thread killer([pid] {
    absl::SleepFor(absl::Milliseconds(200));
    kill(static_cast<pid_t>(pid), SIGKILL);
  });
  auto r = victim->Exec("import time\ntime.sleep(10)", {}, slow);
  killer.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(r.status().message(), HasSubstr("SIGKILL"));
  EXPECT_EQ(victim->Eval("1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(bystander->Eval("kept")->value.int_(), 1);
  ExpectPoolBackTo(2);
}

TEST_F(CppClientTest, DeadlineInterruptsAndKeepsTheSession) {
  auto s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(s->Exec("n = 5").ok());
  CallOptions quick;
  quick.timeout = absl::Milliseconds(300);
  absl::Time start = absl::Now();
  auto r = s->Exec("while True: pass", {}, quick);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(s->Eval("n")->value.int_(), 5);
}

TEST_F(CppClientTest, CliPrintsReprAndExitCodes) {
  auto run = [&](const std::string& args, int* status) {
    std::string command = absl::StrCat(Runfile("clients/cpp/pyexec"),
                                       " --addr=", server_->address(), " ",
                                       args, " 2>&1");
    FILE* pipe = popen(command.c_str(), "r");
    std::string out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
    *status = WEXITSTATUS(pclose(pipe));
    return out;
  };
  int status = -1;
  EXPECT_EQ(run("eval \"6*7\"", &status), "42\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(run("eval \"('a', b'b', {1}, None)\"", &status),
            "('a', b'b', {1}, None)\n");
  EXPECT_THAT(run("eval \"1/0\"", &status), HasSubstr("ZeroDivisionError"));
  EXPECT_NE(status, 0);
  EXPECT_THAT(run("--session=nope eval 1", &status), HasSubstr("NOT_FOUND"));
  EXPECT_NE(status, 0);
}

TEST(ServerLifecycleTest, NoWorkerOutlivesASigkilledServer) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  std::vector<pid_t> workers = bench::ChildPids(server->pid());
  ASSERT_GE(workers.size(), 2u);
  kill(server->pid(), SIGKILL);
  server->Stop(absl::Seconds(5));  // reaps it
  absl::Time until = absl::Now() + absl::Seconds(10);
  auto alive = [&] {
    int n = 0;
    for (pid_t w : workers) {
      if (kill(w, 0) == 0) ++n;
    }
    return n;
  };
  while (alive() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(alive(), 0);
}

TEST(ServerLifecycleTest, SigtermExitsZeroAndLeavesNoWorkers) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  std::vector<pid_t> workers = bench::ChildPids(server->pid());
  ASSERT_GE(workers.size(), 2u);
  EXPECT_EQ(server->Stop(absl::Seconds(30)), "exit 0");
  for (pid_t w : workers) EXPECT_NE(kill(w, 0), 0) << "worker " << w << " alive";
}

}  // namespace
}  // namespace pyexec

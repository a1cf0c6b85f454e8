// Drives the real pyexecd, started on port 0, with the C++ client library
// and the `pyexec` CLI.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "common/procfs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

using testing_util::Runfile;

std::unique_ptr<bench::ServerProcess> StartServer() {
  return testing_util::StartPyexecd({"--workers=2", "--max_workers=3"}, "pyexecd.log");
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

TEST_F(CppClientTest, StreamsRefsAndInterrupt) {
  auto s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok()) << s.status();
  const std::string token = s->token();

  // Output arrives while the code still runs.
  absl::Time start = absl::Now();
  auto stream = client_->ExecStream(token, "print('early')\nimport time\ntime.sleep(1)");
  v1::ExecEvent event;
  ASSERT_TRUE(stream->Next(&event));
  EXPECT_EQ(event.stdout(), "early\n");
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(900));
  ASSERT_TRUE(stream->Next(&event));
  EXPECT_TRUE(event.has_end());
  EXPECT_FALSE(event.end().has_error());
  EXPECT_FALSE(stream->Next(&event));
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));

  // A generator, item by item, through the handler form.
  ASSERT_TRUE(s->Exec("def gen(n):\n    for i in range(n):\n        yield i * 10\n"
                      "class Model:\n    w = 3\n    def predict(self, x):\n"
                      "        return self.w * x\n").ok());
  std::vector<int64_t> items;
  StreamHandlers handlers;
  handlers.on_value = [&](const v1::Value& v) { items.push_back(v.int_()); };
  auto done = client_->RunCallStream(token, "__main__", "gen", handlers, {Int(3)});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->ok());
  EXPECT_EQ(items, (std::vector<int64_t>{0, 10, 20}));

  // Refs: method call, attribute read, as an argument, release.
  auto made = s->Eval("Model()");
  ASSERT_TRUE(made.ok());
  std::optional<Ref> model = Ref::From(made->value);
  ASSERT_TRUE(model.has_value()) << made->value.DebugString();
  EXPECT_THAT(model->type, HasSubstr("Model"));
  auto predicted = client_->CallMethod(token, *model, "predict", {Int(5)});
  ASSERT_TRUE(predicted.ok());
  EXPECT_EQ(predicted->value.int_(), 15);
  auto w = client_->GetAttr(token, *model, "w");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->value.int_(), 3);
  auto same = s->Call("builtins", "getattr", {model->ToValue(), MakeStr("w")});
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->value.int_(), 3);
  CallOptions as_ref;
  as_ref.result_as_ref = true;
  auto list = client_->Eval(token, "[1, 2, 3]", {}, as_ref);
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(Ref::From(list->value).has_value());
  auto released = client_->ReleaseRefs(token, {model->id, "unknown"});
  ASSERT_TRUE(released.ok());
  EXPECT_EQ(*released, 1u);
  EXPECT_EQ(client_->GetAttr(token, *model, "w").status().code(),
            absl::StatusCode::kInvalidArgument);

  // Interrupt from another thread; the session keeps its state.
  ASSERT_TRUE(s->Exec("kept = 1").ok());
  auto idle = client_->Interrupt(token);
  ASSERT_TRUE(idle.ok());
  EXPECT_FALSE(*idle);
  auto busy = client_->ExecStream(token, "print('spinning', flush=True)\nwhile True: pass");
  ASSERT_TRUE(busy->Next(&event));
  EXPECT_EQ(event.stdout(), "spinning\n");
  auto interrupted = client_->Interrupt(token);
  ASSERT_TRUE(interrupted.ok());
  EXPECT_TRUE(*interrupted);
  while (busy->Next(&event)) {
  }
  EXPECT_EQ(busy->Finish().code(), absl::StatusCode::kCancelled);
  auto kept = s->Eval("kept");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->value.int_(), 1);
}

TEST_F(CppClientTest, CliExecStreamPrintsOutputLive) {
  std::string command = absl::StrCat(
      Runfile("clients/cpp/pyexec"), " --addr=", server_->address(),
      " exec --stream \"print('first')\nimport time\ntime.sleep(1)\nprint('second')\" 2>&1");
  absl::Time start = absl::Now();
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char line[256];
  ASSERT_NE(fgets(line, sizeof(line), pipe), nullptr);
  absl::Duration first = absl::Now() - start;
  EXPECT_STREQ(line, "first\n");
  ASSERT_NE(fgets(line, sizeof(line), pipe), nullptr);
  EXPECT_STREQ(line, "second\n");
  EXPECT_EQ(WEXITSTATUS(pclose(pipe)), 0);
  // The CLI starts in well under a second; without streaming the first line
  // would come after the 1 s sleep.
  EXPECT_LT(first, absl::Milliseconds(900));
}

TEST(ServerLifecycleTest, NoWorkerOutlivesASigkilledServer) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  std::vector<pid_t> workers = ChildPids(server->pid());
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
  std::vector<pid_t> workers = ChildPids(server->pid());
  ASSERT_GE(workers.size(), 2u);
  EXPECT_EQ(server->Stop(absl::Seconds(30)), "exit 0");
  for (pid_t w : workers) EXPECT_NE(kill(w, 0), 0) << "worker " << w << " alive";
}

}  // namespace
}  // namespace pyexec

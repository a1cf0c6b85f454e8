#include "clients/cpp/client.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "clients/cpp/fake_pyexec.h"
#include "clients/cpp/value.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Client> client = Client::Connect(server_.address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::make_unique<Client>(*std::move(client));
  }

  fakes::FakePyExecServer server_;
  fakes::FakePyExec& service_ = server_.service();
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, ConnectRejectsEmptyAddress) {
  EXPECT_EQ(Client::Connect("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientTest, EvalReturnsValueAndOutput) {
  absl::StatusOr<Result> r =
      client_->Eval("", "1+1", {{"x", MakeInt(5)}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(FormatValue(r->value), "('', '1+1', {'x': 5})");
  EXPECT_EQ(r->stdout_text, "out");
  EXPECT_EQ(r->stderr_text, "err");
}

TEST_F(ClientTest, PythonErrorIsAResultNotAStatus) {
  absl::StatusOr<Result> r = client_->Eval("", "raise");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->ok());
  EXPECT_EQ(r->error->type(), "ZeroDivisionError");
  EXPECT_EQ(r->error->message(), "division by zero");
  EXPECT_EQ(r->value.kind_case(), v1::Value::KIND_NOT_SET);
}

TEST_F(ClientTest, RpcErrorsBecomeStatuses) {
  absl::StatusOr<Result> r = client_->Eval("", "fail:5");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "scripted");
  r = client_->Eval("", "fail:10");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
}

TEST_F(ClientTest, TimeoutIsSentAsDeadline) {
  absl::StatusOr<Result> r =
      client_->Eval("", "deadline?", {}, CallOptions{absl::Seconds(7)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->value.float_(), 5.0);
  // gRPC sends the timeout rounded up, so allow a little over 7 s.
  EXPECT_LE(r->value.float_(), 7.5);
}

TEST_F(ClientTest, NoTimeoutSendsNoDeadline) {
  absl::StatusOr<Result> r = client_->Eval("", "deadline?");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value.float_(), -1.0);
}

TEST_F(ClientTest, ExecValueIsNoneOnSuccess) {
  absl::StatusOr<Result> r = client_->Exec("s9", "x = 1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(FormatValue(r->value), "None");
  EXPECT_EQ(r->stdout_text, "x = 1");
  r = client_->Exec("s9", "raise");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->error->type(), "ValueError");
}

TEST_F(ClientTest, CallSendsArgsAndKwargs) {
  absl::StatusOr<Result> r = client_->Call(
      "", "math", "fsum", {MakeInt(1), MakeStr("a")}, {{"k", MakeBool(true)}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(FormatValue(r->value), "['math', 'fsum', 1, 'a', ('k', True)]");
}

TEST_F(ClientTest, GetStats) {
  absl::StatusOr<v1::GetStatsResponse> stats = client_->GetStats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->num_workers(), 4u);
}

TEST_F(ClientTest, BindPassesIdleTimeout) {
  absl::StatusOr<BindResult> b = client_->Bind(absl::Seconds(30));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->session, "s1");
  EXPECT_EQ(b->idle_timeout, absl::Seconds(30));
}

TEST_F(ClientTest, UnreachableServerIsUnavailable) {
  absl::StatusOr<Client> c = Client::Connect("127.0.0.1:1");
  ASSERT_TRUE(c.ok());
  absl::StatusOr<Result> r = c->Eval("", "1", {}, CallOptions{absl::Seconds(5)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(ClientTest, SessionUnbindsOnDestruction) {
  {
    absl::StatusOr<Session> s = Session::Bind(*client_);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->token(), "s1");
    EXPECT_EQ(s->idle_timeout(), absl::Seconds(600));
    ASSERT_TRUE(s->Eval("1").ok());
    ASSERT_TRUE(s->Exec("x = 1").ok());
    ASSERT_TRUE(s->Call("m", "f").ok());
    EXPECT_TRUE(service_.unbound().empty());
  }
  EXPECT_THAT(service_.unbound(), ElementsAre("s1"));
  EXPECT_THAT(service_.sessions_seen(), ElementsAre("s1", "s1", "s1"));
}

TEST_F(ClientTest, MovedSessionUnbindsOnce) {
  {
    absl::StatusOr<Session> s = Session::Bind(*client_);
    ASSERT_TRUE(s.ok());
    Session moved = *std::move(s);
    EXPECT_EQ(moved.token(), "s1");
    // A moved-from session must not silently run on a pooled interpreter.
    EXPECT_EQ(s->Eval("1").status().code(),
              absl::StatusCode::kFailedPrecondition);
    Session other = std::move(Session::Bind(*client_).value());
    other = std::move(moved);  // Unbinds s2, takes over s1.
    EXPECT_THAT(service_.unbound(), ElementsAre("s2"));
  }
  EXPECT_THAT(service_.unbound(), ElementsAre("s2", "s1"));
}

TEST_F(ClientTest, ExplicitUnbindAndRelease) {
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->Unbind().ok());
  EXPECT_TRUE(s->token().empty());
  EXPECT_TRUE(s->Unbind().ok());  // Second time is a no-op.
  absl::StatusOr<Session> t = Session::Bind(*client_);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->Release(), "s2");
  t = absl::InternalError("drop");  // Destroys the Session: no Unbind.
  EXPECT_THAT(service_.unbound(), ElementsAre("s1"));
}

}  // namespace
}  // namespace pyexec

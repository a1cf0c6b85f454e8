#include "clients/cpp/client.h"

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "clients/cpp/fake_pyexec.h"
#include "clients/cpp/test_certs.h"
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
using ::testing::Not;

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

// The metadata every recorded call carried under `key`.
std::vector<std::string> ValuesOf(const std::vector<fakes::RecordedCall>& calls,
                                  const std::string& key) {
  std::vector<std::string> values;
  for (const fakes::RecordedCall& call : calls) {
    auto [begin, end] = call.metadata.equal_range(key);
    if (begin == end) values.push_back(absl::StrCat(call.method, ": none"));
    for (auto it = begin; it != end; ++it) {
      values.push_back(absl::StrCat(call.method, ": ", it->second));
    }
  }
  return values;
}

TEST(ClientMetadataTest, TokenAndMetadataGoWithEveryCall) {
  fakes::FakePyExecServer server;
  ChannelOptions options;
  options.token = "s3cret-T0ken";
  options.metadata = {{"x-team", "data"}, {"x-blob-bin", std::string("\0\xff", 2)}};
  absl::StatusOr<Client> client = Client::Connect(server.address(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  {
    absl::StatusOr<Session> s = Session::Bind(*client);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_TRUE(s->Eval("1").ok());
    ASSERT_TRUE(s->Exec("x = 1").ok());
    ASSERT_TRUE(s->Call("m", "f").ok());
  }
  ASSERT_TRUE(client->GetStats().ok());
  // A raw stub call (as the REPL makes) carries them too.
  grpc::ClientContext context;
  v1::EvalResponse response;
  v1::EvalRequest request;
  request.set_code("2");
  ASSERT_TRUE(client->stub().Eval(&context, request, &response).ok());

  const std::vector<fakes::RecordedCall> calls = server.service().calls();
  const std::string bearer = "Bearer s3cret-T0ken";
  EXPECT_THAT(ValuesOf(calls, "authorization"),
              ElementsAre("Bind: " + bearer, "Attach: " + bearer, "Eval: " + bearer,
                          "Exec: " + bearer, "Call: " + bearer, "Unbind: " + bearer,
                          "GetStats: " + bearer, "Eval: " + bearer));
  EXPECT_THAT(ValuesOf(calls, "x-team"),
              ElementsAre("Bind: data", "Attach: data", "Eval: data", "Exec: data", "Call: data",
                          "Unbind: data", "GetStats: data", "Eval: data"));
  for (const fakes::RecordedCall& call : calls) {
    auto it = call.metadata.find("x-blob-bin");
    ASSERT_NE(it, call.metadata.end()) << call.method;
    EXPECT_EQ(it->second, std::string("\0\xff", 2));
  }
}

TEST(ClientMetadataTest, NoTokenSendsNoAuthorization) {
  fakes::FakePyExecServer server;
  absl::StatusOr<Client> client = Client::Connect(server.address(), ChannelOptions());
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client->GetStats().ok());
  EXPECT_THAT(ValuesOf(server.service().calls(), "authorization"),
              ElementsAre("GetStats: none"));
}

TEST(ClientMetadataTest, BadTokenOrMetadataIsRefusedWithoutEchoingTheToken) {
  ChannelOptions options;
  options.token = "has a\nnewline";
  absl::StatusOr<Client> client = Client::Connect("127.0.0.1:1", options);
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(client.status().message(), Not(HasSubstr("newline")));
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{
           {"X-Upper", "v"}, {"grpc-timeout", "1S"}, {"", "v"}, {"x-ok", "caf\xc3\xa9"}}) {
    ChannelOptions bad;
    bad.metadata = {{key, value}};
    EXPECT_EQ(Client::Connect("127.0.0.1:1", bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << key;
  }
}

class ClientTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*std::move(certs));
  }

  static fakes::FakeTls ServerTls(bool mutual) {
    return {certs_->Pem("server.pem"), certs_->Pem("server.key"),
            mutual ? certs_->Pem("ca.pem") : ""};
  }

  // TLS options that trust the test CA and expect "pyexec.test".
  static ChannelOptions Trusting() {
    ChannelOptions options;
    options.root_ca_file = certs_->File("ca.pem");
    options.server_name_override = "pyexec.test";
    return options;
  }

  static absl::Status Stats(const std::string& address,
                            const ChannelOptions& options) {
    absl::StatusOr<Client> client = Client::Connect(address, options);
    if (!client.ok()) return client.status();
    return client->GetStats(CallOptions{absl::Seconds(10)}).status();
  }

  static testing::TestCerts* certs_;
};

testing::TestCerts* ClientTlsTest::certs_ = nullptr;

TEST_F(ClientTlsTest, TlsWithTokenReachesTheServer) {
  fakes::FakePyExecServer server(ServerTls(/*mutual=*/false));
  ChannelOptions options = Trusting();
  options.token = "tok";
  absl::StatusOr<Client> client = Client::Connect(server.address(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<Result> r = client->Eval("", "x");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(ValuesOf(server.service().calls(), "authorization"),
              ElementsAre("Eval: Bearer tok"));
  // The same CA given as PEM instead of a file.
  options.root_ca_file.clear();
  options.root_ca_pem = certs_->Pem("ca.pem");
  EXPECT_TRUE(Stats(server.address(), options).ok());
}

TEST_F(ClientTlsTest, ServerIdentityIsChecked) {
  fakes::FakePyExecServer server(ServerTls(/*mutual=*/false));
  // The certificate names pyexec.test, not 127.0.0.1.
  ChannelOptions no_override = Trusting();
  no_override.server_name_override.clear();
  EXPECT_EQ(Stats(server.address(), no_override).code(),
            absl::StatusCode::kUnavailable);
  ChannelOptions wrong_name = Trusting();
  wrong_name.server_name_override = "other.test";
  EXPECT_EQ(Stats(server.address(), wrong_name).code(),
            absl::StatusCode::kUnavailable);
  ChannelOptions wrong_ca = Trusting();
  wrong_ca.root_ca_file = certs_->File("rogue_ca.pem");
  EXPECT_EQ(Stats(server.address(), wrong_ca).code(),
            absl::StatusCode::kUnavailable);
  // Plaintext to a TLS server fails too.
  EXPECT_EQ(Stats(server.address(), ChannelOptions()).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(server.service().calls().empty());
}

TEST_F(ClientTlsTest, MutualTls) {
  fakes::FakePyExecServer server(ServerTls(/*mutual=*/true));
  ChannelOptions with_cert = Trusting();
  with_cert.client_cert_file = certs_->File("client.pem");
  with_cert.client_key_file = certs_->File("client.key");
  ASSERT_TRUE(Stats(server.address(), with_cert).ok());
  ChannelOptions as_pem = Trusting();
  as_pem.client_cert_pem = certs_->Pem("client.pem");
  as_pem.client_key_pem = certs_->Pem("client.key");
  ASSERT_TRUE(Stats(server.address(), as_pem).ok());
  std::vector<fakes::RecordedCall> calls = server.service().calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].peer_common_name, "client-1");
  EXPECT_EQ(calls[1].peer_common_name, "client-1");

  // No certificate, or one from another CA: refused.
  EXPECT_EQ(Stats(server.address(), Trusting()).code(),
            absl::StatusCode::kUnavailable);
  ChannelOptions rogue = Trusting();
  rogue.client_cert_file = certs_->File("rogue.pem");
  rogue.client_key_file = certs_->File("rogue.key");
  EXPECT_EQ(Stats(server.address(), rogue).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(server.service().calls().size(), 2u);
}

TEST_F(ClientTlsTest, BadTlsOptionsAreRefusedAtConnect) {
  ChannelOptions cert_only = Trusting();
  cert_only.client_cert_file = certs_->File("client.pem");
  EXPECT_EQ(Client::Connect("127.0.0.1:1", cert_only).status().code(),
            absl::StatusCode::kInvalidArgument);
  ChannelOptions missing = Trusting();
  missing.root_ca_file = certs_->File("no-such.pem");
  absl::Status status = Client::Connect("127.0.0.1:1", missing).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("no-such.pem"));
  ChannelOptions override_without_tls;
  override_without_tls.server_name_override = "pyexec.test";
  EXPECT_EQ(Client::Connect("127.0.0.1:1", override_without_tls).status().code(),
            absl::StatusCode::kInvalidArgument);
}


// Polls `done` until it holds or `timeout` passes; returns its last value.
template <typename Pred>
bool WaitUntil(Pred done, absl::Duration timeout = absl::Seconds(5)) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// The x-pyexec-call-id of every recorded call of `method`.
std::vector<std::string> CallIds(const fakes::FakePyExec& service, const std::string& method) {
  std::vector<std::string> ids;
  for (const fakes::RecordedCall& call : service.calls()) {
    if (call.method != method) continue;
    auto it = call.metadata.find("x-pyexec-call-id");
    ids.push_back(it == call.metadata.end() ? "" : it->second);
  }
  return ids;
}

TEST_F(ClientTest, BindLeasesTheSessionUntilUnbind) {
  absl::StatusOr<BindResult> b = client_->Bind();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->leased);
  EXPECT_EQ(service_.open_leases("s1"), 1);
  std::optional<LeaseState> lease = client_->GetLease("s1");
  ASSERT_TRUE(lease.has_value());
  EXPECT_TRUE(lease->held);
  EXPECT_EQ(lease->grace, absl::Seconds(1));
  ASSERT_TRUE(client_->Unbind("s1").ok());
  EXPECT_FALSE(client_->GetLease("s1").has_value());
  EXPECT_TRUE(WaitUntil([&] { return service_.open_leases("s1") == 0; }));
}

TEST_F(ClientTest, BindWithoutALease) {
  BindOptions bind;
  bind.lease = false;
  absl::StatusOr<BindResult> b = client_->Bind(bind);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(b->leased);
  EXPECT_EQ(service_.attaches("s1"), 0);
  EXPECT_FALSE(client_->GetLease("s1").has_value());
}

TEST_F(ClientTest, LeasesEndWithTheLastCopyOfTheClient) {
  std::optional<Client> client = Client::Connect(server_.address()).value();
  std::optional<Client> copy = *client;
  std::string token;
  {
    absl::StatusOr<Session> s = Session::Bind(*client);
    ASSERT_TRUE(s.ok());
    token = s->Release();  // no Unbind: the lease stays with the client
  }
  ASSERT_TRUE(client_->Lease("other").ok());  // another client's lease
  client.reset();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(service_.open_leases(token), 1) << "a copy still holds it";
  copy.reset();
  EXPECT_TRUE(WaitUntil([&] { return service_.open_leases(token) == 0; }));
  EXPECT_EQ(service_.open_leases("other"), 1);
  EXPECT_TRUE(service_.unbound().empty()) << "the server, not the client, unbinds";
}

TEST_F(ClientTest, LeaseIsAttachedAgainWhenItsStreamBreaks) {
  // "moved1": the first Attach stream ends UNAVAILABLE (the session moved).
  ASSERT_TRUE(client_->Lease("moved1").ok());
  EXPECT_TRUE(WaitUntil([&] {
    std::optional<LeaseState> lease = client_->GetLease("moved1");
    return lease.has_value() && lease->attaches == 2 && lease->held;
  }));
  EXPECT_EQ(service_.open_leases("moved1"), 1);
  // The session ends while leased: the lease is over, not attached again.
  ASSERT_TRUE(client_->Lease("ends1").ok());
  EXPECT_TRUE(WaitUntil([&] { return !client_->GetLease("ends1").has_value(); }));
  EXPECT_EQ(service_.attaches("ends1"), 1);
  EXPECT_EQ(client_->Lease("gone1").code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(client_->GetLease("gone1").has_value());
  client_->EndLease("moved1");
  EXPECT_TRUE(WaitUntil([&] { return service_.open_leases("moved1") == 0; }));
}

TEST_F(ClientTest, EveryCallIsNamedAndCallIdsAreUnique) {
  ASSERT_TRUE(client_->Eval("s1", "1").ok());
  ASSERT_TRUE(client_->Exec("s1", "x").ok());
  CallOptions named;
  named.call_id = "my-call";
  ASSERT_TRUE(client_->Eval("s1", "2", {}, named).ok());
  std::vector<std::string> ids = CallIds(service_, "Eval");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_FALSE(ids[0].empty());
  EXPECT_EQ(ids[1], "my-call");
  EXPECT_NE(CallIds(service_, "Exec")[0], ids[0]);
}

TEST_F(ClientTest, BareCancelledIsUnavailableAndASessionCallIsSentOnceMore) {
  // gRPC core's bare CANCELLED (a server shutting down): UNAVAILABLE, and a
  // session call goes once more, under the same call id.
  absl::StatusOr<Result> r = client_->Eval("s1", "once:1:a");
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> ids = CallIds(service_, "Eval");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], ids[1]);
  // A stateless call is not sent again.
  r = client_->Eval("", "once:1:b");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(CallIds(service_, "Eval").size(), 3u);
  // UNAVAILABLE twice: the second is the answer.
  r = client_->Eval("s1", "fail:14");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CallIds(service_, "Eval").size(), 5u);
  // The server's own CANCELLED (it says why) stays CANCELLED, once.
  r = client_->Eval("s1", "fail:1");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(CallIds(service_, "Eval").size(), 6u);
  // Other errors are not retried.
  r = client_->Eval("s1", "fail:5");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CallIds(service_, "Eval").size(), 7u);
}

TEST_F(ClientTest, PendingCallCancelIsTheClientsOwnCancel) {
  PendingCall call = client_->StartEval("s1", "sleep");
  EXPECT_FALSE(call.WaitFor(absl::Milliseconds(100)));
  call.Cancel();
  absl::StatusOr<Result> r = call.Wait();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_TRUE(call.Done());
  EXPECT_EQ(call.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(CallIds(service_, "Eval").size(), 1u) << "a cancelled call is not sent again";
  // Destroying a running PendingCall cancels it.
  absl::Time start = absl::Now();
  { PendingCall running = client_->StartEval("s1", "sleep"); }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(ClientTest, PendingCallInterruptNamesTheCall) {
  PendingCall call = client_->StartEval("busy1", "1");
  absl::StatusOr<bool> interrupted = call.Interrupt();
  ASSERT_TRUE(interrupted.ok()) << interrupted.status();
  EXPECT_TRUE(*interrupted);
  ASSERT_TRUE(call.Wait().ok());
  EXPECT_THAT(service_.interrupt_call_ids(), ElementsAre(call.call_id()));
  EXPECT_THAT(CallIds(service_, "Eval"), ElementsAre(call.call_id()));
  // The unnamed form (the CLI's `interrupt TOKEN`) names no call.
  ASSERT_TRUE(client_->Interrupt("busy1").ok());
  EXPECT_THAT(service_.interrupt_call_ids(), ElementsAre(call.call_id(), ""));
  PendingCall stateless = client_->StartEval("", "1");
  EXPECT_EQ(stateless.Interrupt().status().code(), absl::StatusCode::kFailedPrecondition);
  // A released session's call fails at once.
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok());
  s->Release();
  PendingCall released = s->StartEval("1");
  EXPECT_TRUE(released.Done());
  EXPECT_EQ(released.Wait().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClientTest, RegisteredFunctionsAnswerCallbacksOverRun) {
  client_->RegisterFunction(
      "double", [](CallbackContext& ctx, const std::vector<v1::Value>& args,
                   const ValueMap&) -> absl::StatusOr<v1::Value> {
        EXPECT_EQ(ctx.name(), "double");
        EXPECT_EQ(ctx.session(), "s7");
        return MakeInt(2 * args.at(0).int_());
      });
  client_->RegisterFunction("fails", [](CallbackContext&, const std::vector<v1::Value>&,
                                         const ValueMap&) -> absl::StatusOr<v1::Value> {
    return absl::NotFoundError("no such user");
  });
  client_->RegisterFunction("throws", [](CallbackContext&, const std::vector<v1::Value>&,
                                          const ValueMap&) -> absl::StatusOr<v1::Value> {
    throw std::runtime_error("boom");
  });
  absl::StatusOr<Result> r =
      client_->Eval("s7", "cb double fails throws nope", {{"x", MakeInt(21)}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(FormatValue(r->value),
            "[42, 'error NOT_FOUND: no such user', 'error std::runtime_error: boom', "
            "\"error LookupError: no function is registered as 'nope' in this client\"]");
  EXPECT_EQ(service_.run_half_closes(), 1);
  // Plain calls go over Run too while functions are registered...
  ASSERT_TRUE(client_->Exec("s7", "x = 1").ok());
  ASSERT_TRUE(client_->Call("s7", "m", "f").ok());
  int runs = 0;
  for (const fakes::RecordedCall& call : service_.calls()) runs += call.method == "Run";
  EXPECT_EQ(runs, 3);
  EXPECT_EQ(service_.run_half_closes(), 3);
  // ...and not once none is.
  EXPECT_TRUE(client_->UnregisterFunction("double"));
  EXPECT_TRUE(client_->UnregisterFunction("fails"));
  EXPECT_TRUE(client_->UnregisterFunction("throws"));
  EXPECT_FALSE(client_->UnregisterFunction("throws"));
  ASSERT_TRUE(client_->Eval("s7", "1").ok());
  EXPECT_EQ(service_.calls().back().method, "Eval");
}

TEST_F(ClientTest, PerCallFunctionsGoFirstAndForceRun) {
  auto constant = [](std::string text) {
    return [text](CallbackContext&, const std::vector<v1::Value>&,
                  const ValueMap&) -> absl::StatusOr<v1::Value> { return MakeStr(text); };
  };
  CallOptions options;
  options.functions.emplace();
  // No function anywhere, but a Run all the same: the name is unknown.
  absl::StatusOr<Result> r = client_->Eval("", "cb f", {}, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(FormatValue(r->value), HasSubstr("LookupError"));
  client_->RegisterFunction("f", constant("registered"));
  client_->RegisterFunction("g", constant("registered g"));
  (*options.functions)["f"] = constant("per call");
  r = client_->Eval("", "cb f g", {}, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(FormatValue(r->value), "['per call', 'registered g']");
  // Started calls keep their functions.
  PendingCall call = client_->StartEval("", "cb f", {}, options);
  r = call.Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(FormatValue(r->value), "['per call']");
}

TEST_F(ClientTest, CallbacksRunConcurrently) {
  absl::Notification second_ran;
  client_->RegisterFunction("first", [&](CallbackContext&, const std::vector<v1::Value>&,
                                         const ValueMap&) -> absl::StatusOr<v1::Value> {
    // Waits for the second callback: only possible if they run at once.
    if (!second_ran.WaitForNotificationWithTimeout(absl::Seconds(5))) {
      return absl::DeadlineExceededError("ran alone");
    }
    return MakeStr("first");
  });
  client_->RegisterFunction("second", [&](CallbackContext&, const std::vector<v1::Value>&,
                                          const ValueMap&) -> absl::StatusOr<v1::Value> {
    second_ran.Notify();
    return MakeStr("second");
  });
  absl::StatusOr<Result> r = client_->Eval("", "cb first second");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(FormatValue(r->value), "['first', 'second']");
}

TEST_F(ClientTest, CallsMadeFromACallbackNameIt) {
  Client& client = *client_;
  client_->RegisterFunction("nested", [&client](CallbackContext& ctx,
                                                const std::vector<v1::Value>&,
                                                const ValueMap&) -> absl::StatusOr<v1::Value> {
    // The captured client, on the callback's thread, and ctx.client() from
    // another thread both name the callback; a fresh thread on the plain
    // client does not.
    if (!client.Exec("s1", "implicit").ok()) return absl::InternalError("implicit");
    std::thread([&ctx] { (void)ctx.client().Exec("s1", "explicit"); }).join();
    std::thread([&client] { (void)client.Exec("s1", "other thread"); }).join();
    EXPECT_FALSE(ctx.cancelled());
    return MakeNone();
  });
  ASSERT_TRUE(client_->Eval("s1", "cb nested").ok());
  std::vector<std::string> named;
  for (const fakes::RecordedCall& call : service_.calls()) {
    if (call.method != "Run" && call.method != "Exec") continue;
    auto it = call.metadata.find("x-pyexec-callback");
    named.push_back(absl::StrCat(call.method, ": ", it == call.metadata.end() ? "-" : it->second));
  }
  // Run (the outer Eval), then the three Execs (sent as Runs too).
  EXPECT_THAT(named, ElementsAre("Run: -", "Run: cb1", "Exec: cb1", "Run: cb1", "Exec: cb1",
                                 "Run: -", "Exec: -"));
}

TEST_F(ClientTest, AFunctionThatNeverAnswersIsToldWhenTheCallEnds) {
  std::atomic<bool> saw_cancel{false};
  client_->RegisterFunction("never", [&](CallbackContext& ctx, const std::vector<v1::Value>&,
                                         const ValueMap&) -> absl::StatusOr<v1::Value> {
    saw_cancel = ctx.WaitForCancellation(absl::Seconds(30));
    return absl::CancelledError("too late");
  });
  // The fake waits for the answer; the deadline ends the call.
  absl::Time start = absl::Now();
  absl::StatusOr<Result> r = client_->Eval("", "cb never", {}, CallOptions{absl::Seconds(1)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_TRUE(saw_cancel);
}

TEST_F(ClientTest, SnapshotAndRestore) {
  absl::StatusOr<Session> s = Session::Bind(*client_);
  ASSERT_TRUE(s.ok());
  absl::StatusOr<v1::SnapshotResponse> snap = s->Snapshot();
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->blob(), "snap:s1");
  ASSERT_EQ(snap->lost_size(), 1);
  EXPECT_EQ(snap->lost(0).name(), "sock");
  BindOptions restore;
  restore.restore = snap->blob();
  absl::StatusOr<Session> restored = Session::Bind(*client_, restore);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->token(), "s2");
  ASSERT_EQ(restored->bound().restore_lost.size(), 1u);
  EXPECT_EQ(restored->bound().restore_lost[0].name(), "gone_module");
  restore.restore = "forged";
  EXPECT_EQ(client_->Bind(restore).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClientRoutingTest, SessionCallsGoToTheOwnerAndFallBack) {
  fakes::FakePyExecServer balancer;
  auto owner = std::make_unique<fakes::FakePyExecServer>();
  balancer.service().set_owner(owner->address());
  ChannelOptions options;
  options.route_to_owner = true;
  options.token = "t0k";
  Client client = Client::Connect(balancer.address(), options).value();
  absl::StatusOr<Session> s = Session::Bind(client);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->bound().owner, owner->address());
  EXPECT_EQ(client.OwnerOf("s1"), owner->address());
  ASSERT_TRUE(s->Eval("1").ok());
  ASSERT_TRUE(s->Exec("x").ok());
  EXPECT_THAT(owner->service().sessions_seen(), ElementsAre("s1", "s1"));
  EXPECT_TRUE(balancer.service().sessions_seen().empty());
  // The owner's channel carries the client's credentials.
  for (const fakes::RecordedCall& call : owner->service().calls()) {
    EXPECT_EQ(call.metadata.find("authorization")->second, "Bearer t0k") << call.method;
  }
  EXPECT_EQ(owner->service().open_leases("s1"), 1) << "the lease is held on the owner";
  // Stateless calls stay on the target.
  ASSERT_TRUE(client.Eval("", "1").ok());
  EXPECT_THAT(balancer.service().sessions_seen(), ElementsAre(""));
  // The owner goes away: calls fall back to the target, the lease too.
  owner.reset();
  absl::StatusOr<Result> r = s->Eval("2");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(balancer.service().sessions_seen(), ElementsAre("", "s1"));
  EXPECT_TRUE(WaitUntil([&] { return balancer.service().open_leases("s1") == 1; }));
}

TEST(ClientRoutingTest, AnUnreachableOwnerIsSkipped) {
  fakes::FakePyExecServer balancer;
  balancer.service().set_owner("127.0.0.1:1");  // nothing listens there
  ChannelOptions options;
  options.route_to_owner = true;
  Client client = Client::Connect(balancer.address(), options).value();
  absl::StatusOr<Session> s = Session::Bind(client);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->bound().leased);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->Eval("1").ok());
  EXPECT_THAT(balancer.service().sessions_seen(), ElementsAre("s1", "s1", "s1"));
}

TEST(ClientRoutingTest, OwnerLearnedFromAForwardedAnswer) {
  fakes::FakePyExecServer balancer;
  fakes::FakePyExecServer owner;
  balancer.service().set_owner_header(owner.address());
  ChannelOptions options;
  options.route_to_owner = true;
  Client client = Client::Connect(balancer.address(), options).value();
  ASSERT_TRUE(client.Eval("tok", "1").ok());
  ASSERT_TRUE(client.Eval("tok", "2").ok());
  EXPECT_THAT(balancer.service().sessions_seen(), ElementsAre("tok"));
  EXPECT_THAT(owner.service().sessions_seen(), ElementsAre("tok"));
  // Without route_to_owner everything goes to the target.
  Client plain = Client::Connect(balancer.address()).value();
  ASSERT_TRUE(plain.Eval("tok", "1").ok());
  ASSERT_TRUE(plain.Eval("tok", "2").ok());
  EXPECT_THAT(balancer.service().sessions_seen(), ElementsAre("tok", "tok", "tok"));
  EXPECT_EQ(plain.OwnerOf("tok"), "");
}

}  // namespace
}  // namespace pyexec

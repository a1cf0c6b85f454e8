#include "clients/cpp/client.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
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
              ElementsAre("Bind: " + bearer, "Eval: " + bearer, "Exec: " + bearer,
                          "Call: " + bearer, "Unbind: " + bearer,
                          "GetStats: " + bearer, "Eval: " + bearer));
  EXPECT_THAT(ValuesOf(calls, "x-team"),
              ElementsAre("Bind: data", "Eval: data", "Exec: data", "Call: data",
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

}  // namespace
}  // namespace pyexec

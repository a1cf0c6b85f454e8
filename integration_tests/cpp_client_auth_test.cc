// The C++ client library, the `pyexec` CLI and its REPL against the real
// pyexecd with authentication: bearer tokens (--auth_tokens_file), TLS and
// mutual TLS, with certificates made per run by
// clients/cpp/make_test_certs.sh.

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "clients/cpp/test_certs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAliceToken[] = "alice-token-0123456789";
constexpr char kBobToken[] = "bob-token-9876543210";

using testing_util::Runfile;
using testing_util::TmpPath;

std::string WriteTmp(const std::string& name, const std::string& contents) {
  const std::string path = TmpPath(name);
  std::ofstream(path) << contents;
  return path;
}

const CallOptions kCall{absl::Seconds(20)};

class CppClientAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts();
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*std::move(certs));
    tokens_file_ = new std::string(WriteTmp(
        "tokens", absl::StrCat("# principal token\nalice ", kAliceToken,
                               "\nbob ", kBobToken, "\n")));
  }

  // Starts pyexecd with authentication and `extra` flags.
  void Start(std::vector<std::string> extra) {
    std::vector<std::string> flags = {"--workers=1", "--max_workers=4"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    server_ = testing_util::StartPyexecd(flags, "pyexecd.log");
    ASSERT_NE(server_, nullptr);
  }

  std::string TokensFlag() const {
    return absl::StrCat("--auth_tokens_file=", *tokens_file_);
  }
  std::vector<std::string> TlsFlags() const {
    return {absl::StrCat("--tls_cert_file=", certs_->File("server.pem")),
            absl::StrCat("--tls_key_file=", certs_->File("server.key"))};
  }

  // TLS that trusts the test CA and checks the name "pyexec.test".
  static ChannelOptions Trusting() {
    ChannelOptions options;
    options.root_ca_file = certs_->File("ca.pem");
    options.server_name_override = "pyexec.test";
    return options;
  }

  Client Connect(const ChannelOptions& options) const {
    absl::StatusOr<Client> client = Client::Connect(server_->address(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  absl::StatusCode StatsCode(const ChannelOptions& options) const {
    return Connect(options).GetStats(kCall).status().code();
  }

  // Runs the CLI with `args` (and `env`, e.g. "PYEXEC_TOKEN=..."): its
  // combined output; the exit status goes to *status. `stdin_text` is a
  // printf format (use "\\n" for newlines).
  std::string Cli(const std::string& args, int* status,
                  const std::string& env = "",
                  const std::string& stdin_text = "") const {
    std::string command = absl::StrCat(env, " ", Runfile("clients/cpp/pyexec"),
                                       " --addr=", server_->address(),
                                       " --timeout=20s ", args, " 2>&1");
    if (!stdin_text.empty()) {
      // printf interprets the \n escapes in `stdin_text`.
      command = absl::StrCat("printf '", stdin_text, "' | ", command);
    } else {
      command += " </dev/null";
    }
    FILE* pipe = popen(command.c_str(), "r");
    std::string out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
    *status = WEXITSTATUS(pclose(pipe));
    return out;
  }

  static testing::TestCerts* certs_;
  static std::string* tokens_file_;
  std::unique_ptr<bench::ServerProcess> server_;
};

testing::TestCerts* CppClientAuthTest::certs_ = nullptr;
std::string* CppClientAuthTest::tokens_file_ = nullptr;

TEST_F(CppClientAuthTest, BearerTokens) {
  Start({TokensFlag()});
  EXPECT_EQ(StatsCode(ChannelOptions()), absl::StatusCode::kUnauthenticated);
  ChannelOptions wrong;
  wrong.token = "not-a-token";
  EXPECT_EQ(StatsCode(wrong), absl::StatusCode::kUnauthenticated);

  ChannelOptions alice_options;
  alice_options.token = kAliceToken;
  Client alice = Connect(alice_options);
  ChannelOptions bob_options;
  bob_options.token = kBobToken;
  Client bob = Connect(bob_options);
  absl::StatusOr<Session> session = Session::Bind(alice, absl::ZeroDuration(), kCall);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE(session->Exec("x = 41", {}, kCall).ok());
  absl::StatusOr<Result> r = session->Eval("x + 1", {}, kCall);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value.int_(), 42);
  // Bob cannot use Alice's session: it does not exist for him.
  EXPECT_EQ(bob.Eval(session->token(), "x", {}, kCall).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(bob.GetStats(kCall).ok());
}

TEST_F(CppClientAuthTest, CliAndReplTokens) {
  Start({TokensFlag()});
  const std::string token_file = WriteTmp("alice.token", absl::StrCat(kAliceToken, "\n"));
  int status = -1;
  EXPECT_EQ(Cli(absl::StrCat("--token_file=", token_file, " eval 6*7"), &status), "42\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(Cli("eval 6*7", &status, absl::StrCat("PYEXEC_TOKEN=", kAliceToken)), "42\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(Cli(absl::StrCat("--token=", kBobToken, " eval 6*7"), &status), "42\n");
  EXPECT_EQ(status, 0);
  std::string out = Cli("eval 6*7", &status);
  EXPECT_EQ(status, 2);
  EXPECT_THAT(out, HasSubstr("pyexec: UNAUTHENTICATED: "));
  out = Cli("--token=wrong-secret eval 6*7", &status);
  EXPECT_EQ(status, 2);
  EXPECT_THAT(out, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(out, Not(HasSubstr("wrong-secret")));

  // The REPL binds, evaluates and unbinds with the token (stdin is a pipe,
  // which libedit reads line by line).
  out = Cli(absl::StrCat("--history_file=none --token_file=", token_file, " repl"),
            &status, "", "x = 6*7\\nx\\n");
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("42\n"));
  out = Cli("--history_file=none repl", &status, "", "1\\n");
  EXPECT_NE(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("UNAUTHENTICATED"));
}

TEST_F(CppClientAuthTest, TlsWithTokens) {
  std::vector<std::string> flags = TlsFlags();
  flags.push_back(TokensFlag());
  Start(flags);
  ChannelOptions options = Trusting();
  options.token = kAliceToken;
  EXPECT_EQ(StatsCode(options), absl::StatusCode::kOk);
  Client client = Connect(options);
  absl::StatusOr<Result> r = client.Eval("", "'over tls'", {}, kCall);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value.str(), "over tls");

  ChannelOptions no_token = Trusting();
  EXPECT_EQ(StatsCode(no_token), absl::StatusCode::kUnauthenticated);
  ChannelOptions plaintext;
  plaintext.token = kAliceToken;
  EXPECT_EQ(StatsCode(plaintext), absl::StatusCode::kUnavailable);
  ChannelOptions wrong_ca = Trusting();
  wrong_ca.root_ca_file = certs_->File("rogue_ca.pem");
  wrong_ca.token = kAliceToken;
  EXPECT_EQ(StatsCode(wrong_ca), absl::StatusCode::kUnavailable);

  int status = -1;
  const std::string tls = absl::StrCat("--tls_ca_file=", certs_->File("ca.pem"),
                                       " --tls_server_name=pyexec.test");
  EXPECT_EQ(Cli(absl::StrCat(tls, " eval 6*7"), &status,
                absl::StrCat("PYEXEC_TOKEN=", kAliceToken)),
            "42\n");
  EXPECT_EQ(status, 0);
  std::string out = Cli(absl::StrCat("--token=", kAliceToken, " eval 1"), &status);
  EXPECT_EQ(status, 2) << out;  // plaintext to a TLS server
  EXPECT_THAT(out, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(out, Not(HasSubstr(kAliceToken)));
}

TEST_F(CppClientAuthTest, MutualTls) {
  std::vector<std::string> flags = TlsFlags();
  flags.push_back(absl::StrCat("--tls_client_ca_file=", certs_->File("ca.pem")));
  Start(flags);
  ChannelOptions with_cert = Trusting();
  with_cert.client_cert_file = certs_->File("client.pem");
  with_cert.client_key_file = certs_->File("client.key");
  Client client = Connect(with_cert);
  absl::StatusOr<Session> session = Session::Bind(client, absl::ZeroDuration(), kCall);
  ASSERT_TRUE(session.ok()) << session.status();
  absl::StatusOr<Result> r = session->Eval("2 ** 10", {}, kCall);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value.int_(), 1024);

  EXPECT_EQ(StatsCode(Trusting()), absl::StatusCode::kUnavailable);
  ChannelOptions rogue = Trusting();
  rogue.client_cert_file = certs_->File("rogue.pem");
  rogue.client_key_file = certs_->File("rogue.key");
  EXPECT_EQ(StatsCode(rogue), absl::StatusCode::kUnavailable);

  int status = -1;
  EXPECT_EQ(Cli(absl::StrCat("--tls_ca_file=", certs_->File("ca.pem"),
                             " --tls_server_name=pyexec.test --tls_cert_file=",
                             certs_->File("client.pem"), " --tls_key_file=",
                             certs_->File("client.key"), " eval 6*7"),
                &status),
            "42\n");
  EXPECT_EQ(status, 0);
  Cli(absl::StrCat("--tls_ca_file=", certs_->File("ca.pem"),
                   " --tls_server_name=pyexec.test eval 6*7"),
      &status);
  EXPECT_EQ(status, 2);
}

}  // namespace
}  // namespace pyexec

#include "clients/cpp/cli.h"

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clients/cpp/fake_pyexec.h"
#include "clients/cpp/test_certs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class CliTest : public ::testing::Test {
 protected:
  // Runs the CLI against the fake server; returns the exit code.
  int Run(std::vector<std::string> args, const std::string& stdin_text = "") {
    out_.str("");
    err_.str("");
    options_.addr = server_.address();
    std::istringstream in(stdin_text);
    return RunCli(options_, args, in, out_, err_);
  }

  fakes::FakePyExecServer server_;
  CliOptions options_;
  std::ostringstream out_;
  std::ostringstream err_;
};

std::string TmpFile(const std::string& name, const std::string& contents) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
  std::ofstream(path) << contents;
  return path;
}

TEST_F(CliTest, EvalPrintsRepr) {
  EXPECT_EQ(Run({"eval", "1+1"}), kExitOk);
  EXPECT_EQ(out_.str(), "out('', '1+1', {})\n");
  EXPECT_EQ(err_.str(), "err");
}

TEST_F(CliTest, EvalPrintsCapturedOutputFirst) {
  EXPECT_EQ(Run({"eval", "print"}), kExitOk);
  EXPECT_EQ(out_.str(), "hello\nNone\n");
  EXPECT_EQ(err_.str(), "warn\n");
}

TEST_F(CliTest, SessionFlagIsSent) {
  options_.session = "tok";
  EXPECT_EQ(Run({"exec", "x = 1"}), kExitOk);
  EXPECT_EQ(out_.str(), "x = 1");
  EXPECT_THAT(server_.service().sessions_seen(), ElementsAre("tok"));
}

TEST_F(CliTest, PythonErrorPrintsTracebackAndExits1) {
  EXPECT_EQ(Run({"eval", "raise"}), kExitPythonError);
  EXPECT_THAT(err_.str(), StartsWith("Traceback (most recent call last):\n"));
  EXPECT_THAT(err_.str(), HasSubstr("ZeroDivisionError: division by zero\n"));
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CliTest, ErrorWithoutTracebackPrintsTypeAndMessage) {
  EXPECT_EQ(Run({"exec", "raise"}), kExitPythonError);
  EXPECT_EQ(err_.str(), "ValueError: bad\n");
}

TEST_F(CliTest, RpcErrorExits2) {
  EXPECT_EQ(Run({"eval", "fail:5"}), kExitRpcError);
  EXPECT_EQ(err_.str(), "pyexec: NOT_FOUND: scripted\n");
  EXPECT_EQ(Run({"eval", "fail:4"}), kExitRpcError);
  EXPECT_EQ(err_.str(), "pyexec: DEADLINE_EXCEEDED: scripted\n");
}

TEST_F(CliTest, TimeoutBecomesDeadline) {
  options_.timeout = absl::Seconds(3);
  EXPECT_EQ(Run({"eval", "deadline?"}), kExitOk);
  double remaining = std::stod(out_.str());
  EXPECT_GT(remaining, 1.0);
  EXPECT_LE(remaining, 3.5);  // The wire timeout is rounded up.
}

TEST_F(CliTest, CallParsesLiteralArgs) {
  EXPECT_EQ(Run({"call", "math", "fsum", "1", "2.5", "'x'", "None", "word",
                 "b'\\x00'", "99999999999999999999"}),
            kExitOk);
  EXPECT_EQ(out_.str(),
            "['math', 'fsum', 1, 2.5, 'x', None, 'word', b'\\x00', "
            "99999999999999999999]\n");
}

TEST_F(CliTest, CallArgsAreLiteralsWithStrForVerbatim) {
  EXPECT_EQ(Run({"call", "builtins", "sorted", "[3,1]"}), kExitOk);
  EXPECT_EQ(out_.str(), "['builtins', 'sorted', [3, 1]]\n");
  EXPECT_EQ(Run({"call", "operator", "add", "2**64", "1"}), kExitOk);
  EXPECT_EQ(out_.str(), "['operator', 'add', 18446744073709551616, 1]\n");
  EXPECT_EQ(Run({"call", "m", "f", "--str", "[3,1]", "--str", "42", "42", "1,2", "{'k': {1}}"}),
            kExitOk);
  EXPECT_EQ(out_.str(), "['m', 'f', '[3,1]', '42', 42, (1, 2), {'k': {1}}]\n");
  EXPECT_EQ(Run({"call", "math", "gcd", "12", "18"}), kExitOk);
  EXPECT_EQ(out_.str(), "['math', 'gcd', 12, 18]\n");
  EXPECT_EQ(Run({"call", "builtins", "len", "hello"}), kExitOk);
  EXPECT_EQ(out_.str(), "['builtins', 'len', 'hello']\n");
}

TEST_F(CliTest, BadCallArgIsAUsageErrorAndSendsNothing) {
  EXPECT_EQ(Run({"call", "re", "match", "[a-z]+", "abc"}), kExitUsage);
  EXPECT_THAT(err_.str(), StartsWith("pyexec: argument 1 ([a-z]+) is not a valid Python "
                                     "literal: name 'a' is not a literal (column 2); put "
                                     "--str before it to pass it as a str\n"));
  EXPECT_EQ(Run({"call", "m", "f", "1", "--str"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--str must be followed by"));
  EXPECT_TRUE(server_.service().sessions_seen().empty());
}

TEST_F(CliTest, ExecReadsCodeFromStdin) {
  EXPECT_EQ(Run({"exec", "-"}, "x = 1\nprint(x)\n"), kExitOk);
  EXPECT_EQ(out_.str(), "x = 1\nprint(x)\n");  // the fake echoes the code
  EXPECT_EQ(Run({"eval", "-"}, "1+1"), kExitOk);
  EXPECT_EQ(out_.str(), "out('', '1+1', {})\n");
  // Empty input runs nothing and succeeds, as python3 < /dev/null does.
  EXPECT_EQ(Run({"exec", "-"}, ""), kExitOk);
  EXPECT_EQ(out_.str(), "pass");
}

TEST_F(CliTest, ExecReadsCodeFromAFile) {
  const std::string file = TmpFile("code.py", "\xef\xbb\xbfimport sys\nprint(sys)\n");
  EXPECT_EQ(Run({"exec", "@" + file}), kExitOk);
  EXPECT_EQ(out_.str(), "import sys\nprint(sys)\n");  // without the BOM
  EXPECT_EQ(Run({"eval", "@" + TmpFile("expr.py", "6*7")}), kExitOk);
  EXPECT_EQ(out_.str(), "out('', '6*7', {})\n");
  // Code that starts with '@' and spans lines is code (a decorator).
  EXPECT_EQ(Run({"exec", "@dec\ndef f(): pass"}), kExitOk);
  EXPECT_EQ(out_.str(), "@dec\ndef f(): pass");
  EXPECT_EQ(Run({"exec", "@" + TmpFile("empty.py", "")}), kExitOk);
  EXPECT_EQ(out_.str(), "pass");
}

TEST_F(CliTest, UnreadableCodeIsAUsageError) {
  EXPECT_EQ(Run({"exec", "@/nonexistent/code.py"}), kExitUsage);
  EXPECT_THAT(err_.str(), StartsWith("pyexec: cannot read /nonexistent/code.py: No such file"));
  const char* tmp = std::getenv("TEST_TMPDIR");
  EXPECT_EQ(Run({"exec", absl::StrCat("@", tmp != nullptr ? tmp : "/tmp")}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("Is a directory"));
  EXPECT_EQ(Run({"exec", "@" + TmpFile("latin1.py", "s = '\xe9'\n")}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("latin1.py is not UTF-8"));
  EXPECT_EQ(Run({"exec", "-"}, "\xff"), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("the code in stdin is not UTF-8"));
  EXPECT_TRUE(server_.service().sessions_seen().empty());
}

TEST_F(CliTest, InterruptSaysWhetherSomethingRan) {
  EXPECT_EQ(Run({"interrupt", "busy-1"}), kExitOk);
  EXPECT_EQ(out_.str(), "interrupted\n");
  EXPECT_EQ(Run({"interrupt", "idle-1"}), kExitOk);
  EXPECT_EQ(out_.str(), "nothing was running\n");
  EXPECT_EQ(Run({"interrupt", "gone-1"}), kExitRpcError);
  EXPECT_EQ(err_.str(), "pyexec: NOT_FOUND: unknown session\n");
  EXPECT_THAT(server_.service().sessions_seen(), ElementsAre("busy-1", "idle-1", "gone-1"));
  EXPECT_EQ(Run({"interrupt"}), kExitUsage);
  EXPECT_EQ(Run({"interrupt", "a", "b"}), kExitUsage);
  options_.json = true;
  EXPECT_EQ(Run({"interrupt", "busy-2"}), kExitOk);
  EXPECT_EQ(out_.str(), "{\"interrupted\":true}\n");
}

TEST_F(CliTest, ReleasePrintsHowManyWereLive) {
  EXPECT_EQ(Run({"release", "s1", "live-a", "dead-b", "live-c"}), kExitOk);
  EXPECT_EQ(out_.str(), "2\n");
  EXPECT_EQ(Run({"release", "gone-1", "live-a"}), kExitRpcError);
  EXPECT_EQ(err_.str(), "pyexec: NOT_FOUND: unknown session\n");
  EXPECT_EQ(Run({"release", "s1"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("release takes TOKEN REF_ID..."));
  options_.json = true;
  EXPECT_EQ(Run({"release", "s1", "live-a"}), kExitOk);
  EXPECT_EQ(out_.str(), "{\"released\":1}\n");
}

TEST_F(CliTest, BindPrintsTokenAndUnbindSendsIt) {
  options_.idle_timeout = absl::Seconds(42);
  EXPECT_EQ(Run({"bind"}), kExitOk);
  EXPECT_EQ(out_.str(), "s1\n");
  EXPECT_EQ(Run({"unbind", "s1"}), kExitOk);
  EXPECT_EQ(out_.str(), "");
  EXPECT_THAT(server_.service().unbound(), ElementsAre("s1"));
}

TEST_F(CliTest, BindDoesNotLeaseTheSession) {
  // The printed token is for later commands: the CLI process ends at once.
  EXPECT_EQ(Run({"bind"}), kExitOk);
  EXPECT_EQ(server_.service().attaches("s1"), 0);
}

TEST_F(CliTest, SnapshotToAFileAndRestore) {
  const std::string file = TmpFile("snap.bin", "");
  EXPECT_EQ(Run({"snapshot", "s4", file}), kExitOk);
  EXPECT_EQ(out_.str(), "7 bytes, 1 modules, 0 refs\n");
  EXPECT_EQ(err_.str(), "pyexec: not saved: sock (socket.socket): cannot pickle 'socket' object\n");
  std::ifstream saved(file);
  std::string blob((std::istreambuf_iterator<char>(saved)), std::istreambuf_iterator<char>());
  EXPECT_EQ(blob, "snap:s4");
  EXPECT_EQ(Run({"restore", file}), kExitOk);
  EXPECT_EQ(out_.str(), "s1\n");
  EXPECT_EQ(err_.str(), "pyexec: not restored: gone_module\n");
  EXPECT_EQ(server_.service().attaches("s1"), 0) << "a restored session is not leased either";
  // Through stdin and stdout.
  EXPECT_EQ(Run({"snapshot", "s4", "-"}), kExitOk);
  EXPECT_EQ(out_.str(), "snap:s4");
  EXPECT_THAT(err_.str(), StartsWith("7 bytes"));
  EXPECT_EQ(Run({"restore", "-"}, "snap:s4"), kExitOk);
  EXPECT_EQ(out_.str(), "s2\n");
  // A bad blob is the server's INVALID_ARGUMENT; an unknown session NOT_FOUND.
  EXPECT_EQ(Run({"restore", "-"}, "forged"), kExitRpcError);
  EXPECT_EQ(err_.str(), "pyexec: INVALID_ARGUMENT: not a snapshot\n");
  EXPECT_EQ(Run({"snapshot", "gone1", file}), kExitRpcError);
  EXPECT_EQ(Run({"restore", "-"}, ""), kExitUsage);
  EXPECT_EQ(Run({"restore", "/nonexistent/snap"}), kExitUsage);
  EXPECT_EQ(Run({"snapshot", "s4"}), kExitUsage);
  EXPECT_EQ(Run({"snapshot", "s4", "/nonexistent/dir/x"}), kExitUsage);
}

TEST_F(CliTest, JsonSnapshotAndRestore) {
  options_.json = true;
  const std::string file = TmpFile("snap.json.bin", "");
  EXPECT_EQ(Run({"snapshot", "s4", file}), kExitOk);
  EXPECT_EQ(out_.str(),
            R"({"bytes":7,"lost":[{"name":"sock","reason":"cannot pickle 'socket' object",)"
            R"("type":"socket.socket"}],"modules":["json"],"refs":0})" "\n");
  EXPECT_EQ(Run({"restore", file}), kExitOk);
  EXPECT_EQ(out_.str(), R"({"idle_timeout_seconds":600,"restore_lost":[{"name":"gone_module",)"
                        R"("reason":"","type":""}],"session":"s1"})" "\n");
  EXPECT_EQ(Run({"snapshot", "s4", "-"}), kExitUsage);
}

TEST_F(CliTest, StatsPrintsEveryField) {
  EXPECT_EQ(Run({"stats"}), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith("num_workers: 4\navailable_workers: 3\n"));
  EXPECT_THAT(out_.str(), HasSubstr("\npending_requests: 0\n"));
}

TEST_F(CliTest, UsageErrorsExit64) {
  EXPECT_EQ(Run({}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("usage: pyexec"));
  EXPECT_EQ(Run({"frobnicate"}), kExitUsage);
  EXPECT_EQ(Run({"eval"}), kExitUsage);
  EXPECT_EQ(Run({"eval", "1", "2"}), kExitUsage);
  EXPECT_EQ(Run({"call", "math"}), kExitUsage);
  EXPECT_EQ(Run({"call", "m", "f", "'unterminated"}), kExitUsage);
  EXPECT_EQ(Run({"unbind"}), kExitUsage);
  EXPECT_EQ(Run({"bind", "x"}), kExitUsage);
  EXPECT_TRUE(server_.service().sessions_seen().empty());
}

TEST_F(CliTest, JsonEvalPrintsTaggedValueAndOutput) {
  options_.json = true;
  EXPECT_EQ(Run({"eval", "print"}), kExitOk);
  EXPECT_EQ(out_.str(), R"({"stderr":"warn\n","stdout":"hello\n","value":{"none":null}})" "\n");
  EXPECT_EQ(err_.str(), "");
  EXPECT_EQ(Run({"call", "m", "f", "1", "b'\\x00'", "99999999999999999999"}), kExitOk);
  EXPECT_EQ(out_.str(),
            R"({"stderr":"","stdout":"","value":{"list":[{"str":"m"},{"str":"f"},)"
            R"({"int":"1"},{"bytes":"AA=="},{"int":"99999999999999999999"}]}})" "\n");
  EXPECT_EQ(Run({"exec", "x = 1"}), kExitOk);
  EXPECT_EQ(out_.str(), R"({"stderr":"","stdout":"x = 1"})" "\n");
}

TEST_F(CliTest, JsonErrorsAreObjectsOnStdout) {
  options_.json = true;
  EXPECT_EQ(Run({"eval", "raise"}), kExitPythonError);
  EXPECT_THAT(out_.str(), StartsWith(R"({"error":{"kind":"python_error","message":)"
                                     R"("division by zero","traceback":"Traceback)"));
  EXPECT_THAT(out_.str(), HasSubstr(R"("type":"ZeroDivisionError"})"));
  EXPECT_EQ(err_.str(), "");
  EXPECT_EQ(Run({"eval", "fail:5"}), kExitRpcError);
  EXPECT_EQ(out_.str(),
            R"({"error":{"code":"NOT_FOUND","kind":"status","message":"scripted"}})" "\n");
  EXPECT_EQ(Run({"eval"}), kExitUsage);
  EXPECT_EQ(out_.str(),
            R"({"error":{"kind":"usage","message":"eval takes exactly one CODE argument"}})"
            "\n");
}

TEST_F(CliTest, JsonBindUnbindStats) {
  options_.json = true;
  options_.idle_timeout = absl::Seconds(42);
  EXPECT_EQ(Run({"bind"}), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith(R"({"idle_timeout_seconds":)"));
  EXPECT_THAT(out_.str(), HasSubstr(R"("session":"s1"})"));
  EXPECT_EQ(Run({"unbind", "s1"}), kExitOk);
  EXPECT_EQ(out_.str(), "{}\n");
  EXPECT_EQ(Run({"stats"}), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith("{\"available_workers\":3,"));
  EXPECT_THAT(out_.str(), HasSubstr("\"num_workers\":4,"));
}

TEST_F(CliTest, UnreachableServerExits2) {
  options_.timeout = absl::Seconds(5);
  std::ostringstream out, err;
  CliOptions options = options_;
  options.addr = "127.0.0.1:1";
  std::istringstream in;
  EXPECT_EQ(RunCli(options, {"stats"}, in, out, err), kExitRpcError);
  EXPECT_THAT(err.str(), StartsWith("pyexec: UNAVAILABLE: "));
}

TEST(ResolveTokenTest, FlagThenFileThenEnvironment) {
  const std::string file = TmpFile("token", "  from-file\n");
  EXPECT_EQ(*ResolveToken("from-flag", "", "from-env"), "from-flag");
  EXPECT_EQ(*ResolveToken("", file, "from-env"), "from-file");
  EXPECT_EQ(*ResolveToken("", "", "from-env"), "from-env");
  EXPECT_EQ(*ResolveToken("", "", nullptr), "");
}

TEST(ResolveTokenTest, ErrorsDoNotShowTheToken) {
  const std::string file = TmpFile("token2", "secret-in-file\n");
  absl::StatusOr<std::string> both = ResolveToken("secret-flag", file, nullptr);
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.status().message(), Not(HasSubstr("secret")));
  absl::StatusOr<std::string> missing =
      ResolveToken("", TmpFile("x", "") + ".missing", "secret-env");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), Not(HasSubstr("secret")));
  EXPECT_EQ(ResolveToken("", TmpFile("blank", " \n"), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CliTlsTest, MutualTlsAndTokenReachTheServer) {
  absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts();
  ASSERT_TRUE(certs.ok()) << certs.status();
  fakes::FakePyExecServer server(fakes::FakeTls{
      certs->Pem("server.pem"), certs->Pem("server.key"), certs->Pem("ca.pem")});
  CliOptions options;
  options.addr = server.address();
  options.timeout = absl::Seconds(10);
  options.channel.root_ca_file = certs->File("ca.pem");
  options.channel.client_cert_file = certs->File("client.pem");
  options.channel.client_key_file = certs->File("client.key");
  options.channel.server_name_override = "pyexec.test";
  options.channel.token = "cli-token";
  std::ostringstream out, err;
  std::istringstream in;
  ASSERT_EQ(RunCli(options, {"stats"}, in, out, err), kExitOk) << err.str();
  std::vector<fakes::RecordedCall> calls = server.service().calls();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].peer_common_name, "client-1");
  auto auth = calls[0].metadata.find("authorization");
  ASSERT_NE(auth, calls[0].metadata.end());
  EXPECT_EQ(auth->second, "Bearer cli-token");

  // Without the client certificate the handshake fails: an RPC error that
  // does not show the token.
  options.channel.client_cert_file.clear();
  options.channel.client_key_file.clear();
  std::ostringstream out2, err2;
  EXPECT_EQ(RunCli(options, {"stats"}, in, out2, err2), kExitRpcError);
  EXPECT_THAT(err2.str(), StartsWith("pyexec: UNAVAILABLE: "));
  EXPECT_THAT(err2.str(), Not(HasSubstr("cli-token")));

  // A missing CA file is a usage error.
  options.channel.root_ca_file = certs->File("missing.pem");
  std::ostringstream out3, err3;
  EXPECT_EQ(RunCli(options, {"stats"}, in, out3, err3), kExitUsage);
  EXPECT_THAT(err3.str(), HasSubstr("missing.pem"));
}

}  // namespace
}  // namespace pyexec

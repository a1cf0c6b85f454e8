// Leases of the C++ client and the `pyexec` REPL against the real pyexecd
// (--lease_grace=1s): a process that binds and is SIGKILLed loses its
// session within the grace plus a little, one bound without a lease keeps
// it, a leased session outlives its idle timeout, and the REPL leases the
// session it binds (not one it attaches to), and a lease is taken again
// on the replica a draining peer moved the session to. Prints the measured
// clean-up times.

#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "clients/cpp/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using testing_util::Child;
using testing_util::Runfile;
using testing_util::WaitUntil;

constexpr absl::Duration kGrace = absl::Seconds(1);
// What the issue allows between the end of the grace and NOT_FOUND.
constexpr absl::Duration kSlack = absl::Seconds(2);

class LeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = testing_util::StartPyexecd(
        {"--workers=2", "--max_workers=6", "--lease_grace=1s"}, "pyexecd_lease.log");
    ASSERT_NE(server_, nullptr);
    client_.emplace(Client::Connect(server_->address()).value());
  }

  bool Gone(const std::string& token) {
    absl::StatusOr<Result> r = client_->Eval(token, "1", {}, CallOptions{absl::Seconds(5)});
    return !r.ok() && r.status().code() == absl::StatusCode::kNotFound;
  }

  // Waits for `token` to be NOT_FOUND; returns how long it took, or nothing
  // after grace + slack.
  std::optional<absl::Duration> TimeUntilGone(const std::string& token, absl::Time since) {
    if (!WaitUntil([&] { return Gone(token); }, kGrace + kSlack + absl::Milliseconds(200))) {
      return std::nullopt;
    }
    return absl::Now() - since;
  }

  // The token in a line "... session TOKEN ..." or "token TOKEN ...".
  static std::string TokenAfter(const std::string& line, const std::string& word) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (parts[i] == word) return std::string(absl::StripSuffix(parts[i + 1], "."));
    }
    return "";
  }

  std::unique_ptr<bench::ServerProcess> server_;
  std::optional<Client> client_;
};

TEST_F(LeaseTest, ASigkilledHolderLosesItsSessionWithinTheGrace) {
  auto holder = Child::Start({Runfile("integration_tests/cpp_client_lease_holder"),
                              server_->address(), "lease"});
  ASSERT_TRUE(holder.ok()) << holder.status();
  absl::StatusOr<std::string> line = (*holder)->WaitForLine("token ", absl::Seconds(20), false);
  ASSERT_TRUE(line.ok()) << line.status() << (*holder)->Output();
  EXPECT_THAT(*line, HasSubstr("leased=1"));
  const std::string token = TokenAfter(*line, "token");
  absl::StatusOr<Result> held = client_->Eval(token, "held");
  ASSERT_TRUE(held.ok()) << held.status();
  // The lease, not the idle timeout, keeps it: still there after the grace.
  absl::SleepFor(kGrace + absl::Milliseconds(500));
  ASSERT_FALSE(Gone(token));
  const absl::Time killed = absl::Now();
  (*holder)->Kill(SIGKILL);
  std::optional<absl::Duration> took = TimeUntilGone(token, killed);
  ASSERT_TRUE(took.has_value()) << "session still there after grace + 2 s";
  EXPECT_GE(*took, kGrace * 0.8) << "the grace was not honoured";
  std::cout << "lease clean-up after SIGKILL of the holder: " << absl::FormatDuration(*took)
            << " (grace " << absl::FormatDuration(kGrace) << ")" << std::endl;
}

TEST_F(LeaseTest, WithoutALeaseTheSessionOutlivesItsHolder) {
  auto holder = Child::Start({Runfile("integration_tests/cpp_client_lease_holder"),
                              server_->address(), "no_lease"});
  ASSERT_TRUE(holder.ok()) << holder.status();
  absl::StatusOr<std::string> line = (*holder)->WaitForLine("token ", absl::Seconds(20), false);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("leased=0"));
  const std::string token = TokenAfter(*line, "token");
  (*holder)->Kill(SIGKILL);
  absl::SleepFor(kGrace + kSlack);
  absl::StatusOr<Result> r = client_->Eval(token, "held");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->value.bool_());
  EXPECT_TRUE(client_->Unbind(token).ok());
}

TEST_F(LeaseTest, ALeasedSessionOutlivesItsIdleTimeout) {
  BindOptions leased;
  leased.idle_timeout = absl::Seconds(1);
  BindOptions unleased = leased;
  unleased.lease = false;
  absl::StatusOr<Session> a = Session::Bind(*client_, leased);
  absl::StatusOr<Session> b = Session::Bind(*client_, unleased);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->bound().leased);
  EXPECT_FALSE(b->bound().leased);
  absl::SleepFor(absl::Milliseconds(2500));
  EXPECT_TRUE(a->Eval("1").ok());
  EXPECT_EQ(b->Eval("1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(LeaseTest, EndLeaseAndDestroyingTheClientEndTheSession) {
  absl::StatusOr<BindResult> bound = client_->Bind();
  ASSERT_TRUE(bound.ok());
  ASSERT_TRUE(bound->leased);
  std::optional<LeaseState> lease = client_->GetLease(bound->session);
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->grace, kGrace);
  absl::Time ended = absl::Now();
  client_->EndLease(bound->session);
  EXPECT_TRUE(TimeUntilGone(bound->session, ended).has_value());

  // Lease() takes over a session bound without one, until the client goes.
  std::string token;
  {
    BindOptions unleased;
    unleased.lease = false;
    token = client_->Bind(unleased)->session;
    Client other = Client::Connect(server_->address()).value();
    ASSERT_TRUE(other.Lease(token).ok());
    EXPECT_EQ(other.Lease("0000000000000000deadbeefdeadbeef").code(),
              absl::StatusCode::kNotFound);
    ended = absl::Now();
  }
  std::optional<absl::Duration> took = TimeUntilGone(token, ended);
  ASSERT_TRUE(took.has_value());
  std::cout << "lease clean-up after the Client was destroyed: " << absl::FormatDuration(*took)
            << std::endl;
}

TEST_F(LeaseTest, TheReplLeasesTheSessionItBinds) {
  auto repl = Child::Start({Runfile("clients/cpp/pyexec"), "--addr=" + server_->address(),
                            "--history_file=none", "repl"});
  ASSERT_TRUE(repl.ok()) << repl.status();
  absl::StatusOr<std::string> banner = (*repl)->WaitForLine("session ", absl::Seconds(20));
  ASSERT_TRUE(banner.ok()) << banner.status();
  EXPECT_THAT(*banner, HasSubstr("(leased)"));
  const std::string token = TokenAfter(*banner, "session");
  ASSERT_TRUE(client_->Eval(token, "1").ok());
  absl::SleepFor(kGrace + absl::Milliseconds(500));
  ASSERT_FALSE(Gone(token));
  const absl::Time killed = absl::Now();
  (*repl)->Kill(SIGKILL);
  std::optional<absl::Duration> took = TimeUntilGone(token, killed);
  ASSERT_TRUE(took.has_value()) << "the REPL's session is still there after grace + 2 s";
  std::cout << "lease clean-up after SIGKILL of the REPL: " << absl::FormatDuration(*took)
            << std::endl;

  // A session the REPL attaches to (--session) is not its own: it stays.
  BindOptions unleased;
  unleased.lease = false;
  const std::string mine = client_->Bind(unleased)->session;
  auto attached = Child::Start({Runfile("clients/cpp/pyexec"), "--addr=" + server_->address(),
                                "--history_file=none", "--session=" + mine, "repl"});
  ASSERT_TRUE(attached.ok());
  banner = (*attached)->WaitForLine("session ", absl::Seconds(20));
  ASSERT_TRUE(banner.ok()) << banner.status();
  EXPECT_THAT(*banner, HasSubstr("(attached)"));
  (*attached)->Kill(SIGKILL);
  absl::SleepFor(kGrace + kSlack);
  EXPECT_TRUE(client_->Eval(mine, "1").ok());
  EXPECT_TRUE(client_->Unbind(mine).ok());
}

// Replica A drains (SIGTERM) and moves the session to its peer B; the
// lease stream to A ends and the client attaches again through the
// balancer, now in front of B, so the session outlives the grace on B. Then
// the client goes, and B ends the session after the grace.
TEST(LeaseMoveTest, ALeaseIsTakenAgainAfterTheSessionMoved) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string secret = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/peer-secret");
  {
    std::ofstream out(secret);
    out << "cpp-lease-move-" << absl::ToUnixNanos(absl::Now()) << "\n";
  }
  ASSERT_EQ(chmod(secret.c_str(), 0600), 0);
  const std::string addr_a = absl::StrCat("127.0.0.1:", testing_util::FreePort());
  const std::string addr_b = absl::StrCat("127.0.0.1:", testing_util::FreePort());
  const std::string peers = absl::StrCat("--peers=", addr_a, ",", addr_b);
  const std::vector<std::string> common = {"--workers=1", "--max_workers=3",
                                           "--lease_grace=1s", "--drain_timeout=2s",
                                           "--kill_grace=1s", peers,
                                           "--peer_secret_file=" + secret};
  std::vector<std::string> flags_a = common, flags_b = common;
  flags_a.push_back("--listen=" + addr_a);
  flags_b.push_back("--listen=" + addr_b);
  auto a = testing_util::StartPyexecd(flags_a, "pyexecd_move_a.log");
  auto b = testing_util::StartPyexecd(flags_b, "pyexecd_move_b.log");
  ASSERT_TRUE(a != nullptr && b != nullptr);
  testing_util::TcpProxy balancer(addr_a);
  Client direct_b = Client::Connect(addr_b).value();

  std::string token;
  std::optional<Client> client;
  client.emplace(Client::Connect(balancer.address()).value());
  {
    absl::StatusOr<Session> session = Session::Bind(*client);
    ASSERT_TRUE(session.ok()) << session.status();
    ASSERT_TRUE(session->Exec("x = 1").ok());
    token = session->Release();  // the lease stays with the Client
  }
  ASSERT_TRUE(WaitUntil([&] { return client->GetLease(token)->held; }, absl::Seconds(10)));
  const int attaches_before = client->GetLease(token)->attaches;

  // The balancer fails over to B; A drains and moves the session there.
  balancer.SetBackend(addr_b);
  const absl::Time drained = absl::Now();
  EXPECT_EQ(a->Stop(absl::Seconds(20)), "exit 0");
  std::cout << "replica A drained and exited in " << absl::FormatDuration(absl::Now() - drained)
            << std::endl;
  // The session answers through the balancer (B) with its state...
  absl::StatusOr<Result> x = client->Eval(token, "x", {}, CallOptions{absl::Seconds(10)});
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->value.int_(), 1);
  // ...and the client's lease was taken again on B: past the grace after A
  // is gone, the session still lives.
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::optional<LeaseState> lease = client->GetLease(token);
        return lease.has_value() && lease->held && lease->attaches > attaches_before;
      },
      absl::Seconds(10)))
      << "the lease was not taken again after the move";
  absl::SleepFor(kGrace + absl::Milliseconds(700));
  x = direct_b.Eval(token, "x");
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->value.int_(), 1);
  std::cout << "lease attaches across the move: " << client->GetLease(token)->attaches
            << std::endl;

  // The client goes: B ends the session after the grace. (A call with the
  // token is no proof: the token names A, and B answers UNAVAILABLE "the
  // session's replica cannot be reached" for a session it no longer holds.
  // B's count of bound sessions is.)
  auto bound_on_b = [&] {
    absl::StatusOr<v1::GetStatsResponse> stats = direct_b.GetStats();
    return stats.ok() ? static_cast<int>(stats->checked_out()) : -1;
  };
  ASSERT_EQ(bound_on_b(), 1);
  const absl::Time ended = absl::Now();
  client.reset();
  const bool gone =
      WaitUntil([&] { return bound_on_b() == 0; }, kGrace + kSlack + absl::Milliseconds(200));
  ASSERT_TRUE(gone) << "the moved session outlived its client by more than grace + 2 s";
  std::cout << "moved session ended " << absl::FormatDuration(absl::Now() - ended)
            << " after its client was destroyed" << std::endl;
}

}  // namespace
}  // namespace pyexec

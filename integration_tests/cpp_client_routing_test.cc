// Owner routing of the C++ client (ChannelOptions::route_to_owner) against
// two real pyexecd replicas with --peers, A and B. B advertises the address
// of a TCP proxy in front of it (`owner`), so the test sees, and can cut,
// what the client sends B as a session's owner; the balancers in front of
// A and B are TCP proxies too, and count what they carry. And calls refused
// by a draining server are UNAVAILABLE, never CANCELLED.

#include <atomic>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "clients/cpp/client.h"
#include "clients/cpp/value.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"

namespace pyexec {
namespace {

using testing_util::TcpProxy;

const CallOptions kTimeout{absl::Seconds(10)};

std::string FreeAddress() { return absl::StrCat("127.0.0.1:", testing_util::FreePort()); }

std::vector<std::string> ReplicaFlags(std::vector<std::string> more) {
  std::vector<std::string> flags = {"--workers=1", "--max_workers=4", "--lease_grace=1s",
                                    "--drain_timeout=1s", "--kill_grace=1s"};
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

ChannelOptions Routed() {
  ChannelOptions options;
  options.route_to_owner = true;
  return options;
}

// `n` Evals of x on `session` through `client`, each 1.
void Evals(const Client& client, const std::string& session, int n) {
  for (int i = 0; i < n; ++i) {
    absl::StatusOr<Result> r = client.Eval(session, "x", {}, kTimeout);
    ASSERT_TRUE(r.ok()) << "Eval " << i << ": " << r.status();
    ASSERT_TRUE(r->ok()) << r->error->message();
    ASSERT_EQ(r->value.int_(), 1);
  }
}

class RoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string addr_a = FreeAddress(), addr_b = FreeAddress();
    owner_.emplace(addr_b);
    const std::string peers = absl::StrCat("--peers=", addr_a, ",", owner_->address());
    a_ = testing_util::StartPyexecd(ReplicaFlags({"--listen=" + addr_a, peers}), "pyexecd_a.log");
    b_ = testing_util::StartPyexecd(
        ReplicaFlags({"--listen=" + addr_b, "--advertise_address=" + owner_->address(), peers}),
        "pyexecd_b.log");
    ASSERT_TRUE(a_ != nullptr && b_ != nullptr);
    lb_a_.emplace(addr_a);
    lb_b_.emplace(addr_b);
    addr_b_ = addr_b;
  }

  std::unique_ptr<bench::ServerProcess> a_, b_;
  std::optional<TcpProxy> owner_, lb_a_, lb_b_;
  std::string addr_b_;
};

TEST_F(RoutingTest, CallsGoStraightToTheOwnerAndFallBackWhenItIsUnreachable) {
  absl::StatusOr<Client> client = Client::Connect(lb_b_->address(), Routed());
  ASSERT_TRUE(client.ok()) << client.status();
  client->RegisterFunction("f", [](CallbackContext&, const std::vector<v1::Value>& args,
                                   const ValueMap&) -> absl::StatusOr<v1::Value> {
    return args.at(0);
  });
  absl::StatusOr<Session> s = Session::Bind(*client, BindOptions{}, kTimeout);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->bound().owner, owner_->address());
  EXPECT_EQ(client->OwnerOf(s->token()), owner_->address());
  ASSERT_TRUE(s->Exec("x = 1").ok());

  // Bound through the balancer; every call after goes to the owner.
  const int64_t lb = lb_b_->SettledBytes();
  const int64_t own = owner_->bytes();
  Evals(*client, s->token(), 20);
  absl::StatusOr<Result> called = s->Eval("pyexec.call('f', x)", {}, kTimeout);
  ASSERT_TRUE(called.ok()) << called.status();
  EXPECT_EQ(called->value.int_(), 1);
  int items = 0;
  StreamHandlers handlers;
  handlers.on_value = [&](const v1::Value&) { ++items; };
  ASSERT_TRUE(client->RunCallStream(s->token(), "builtins", "range", handlers, {MakeInt(3)}).ok());
  EXPECT_EQ(items, 3);
  PendingCall spin = s->StartExec("while True: pass", {}, kTimeout);
  ASSERT_TRUE(spin.Interrupt().ok());
  EXPECT_EQ(spin.Wait().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(lb_b_->SettledBytes(), lb) << "the balancer carried some of the session's calls";
  const int64_t to_owner = owner_->bytes() - own;
  EXPECT_GT(to_owner, 1000);
  ASSERT_TRUE(client->GetLease(s->token()).has_value());
  EXPECT_TRUE(client->GetLease(s->token())->held);
  std::cout << "24 calls went to the owner (" << to_owner
            << " bytes), none through the balancer" << std::endl;

  // The owner becomes unreachable: calls, and the lease, go through the
  // balancer.
  owner_->Stop();
  const int64_t before = lb_b_->SettledBytes();
  const absl::Time start = absl::Now();
  Evals(*client, s->token(), 20);
  const absl::Duration took = absl::Now() - start;
  EXPECT_GT(lb_b_->SettledBytes(), before) << "the calls did not go through the balancer";
  EXPECT_LT(took, absl::Seconds(5));
  // Past the grace: the session lives only if its lease was taken again.
  absl::SleepFor(absl::Milliseconds(1500));
  Evals(*client, s->token(), 1);
  ASSERT_TRUE(testing_util::WaitUntil([&] { return client->GetLease(s->token())->held; },
                                      absl::Seconds(5)));
  std::cout << "20 calls through the balancer after the owner became unreachable: "
            << absl::FormatDuration(took) << std::endl;
}

TEST_F(RoutingTest, AClientLearnsTheOwnerFromAForwardedAnswer) {
  // Bound on B without a lease, by another client.
  Client plain = Client::Connect(addr_b_).value();
  BindOptions unleased;
  unleased.lease = false;
  absl::StatusOr<Session> other = Session::Bind(plain, unleased, kTimeout);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE(other->Exec("x = 1").ok());

  // Through A with routing: A forwards the first call and names the owner.
  absl::StatusOr<Client> via_a = Client::Connect(lb_a_->address(), Routed());
  ASSERT_TRUE(via_a.ok());
  EXPECT_EQ(via_a->OwnerOf(other->token()), "");
  Evals(*via_a, other->token(), 1);
  EXPECT_EQ(via_a->OwnerOf(other->token()), owner_->address());
  const int64_t lb = lb_a_->SettledBytes();
  const int64_t own = owner_->bytes();
  Evals(*via_a, other->token(), 20);
  EXPECT_EQ(lb_a_->SettledBytes(), lb) << "balancer A carried calls after the owner was known";
  EXPECT_GT(owner_->bytes() - own, 1000);

  // Without routing, every call goes through A (which forwards it).
  absl::StatusOr<Client> unrouted = Client::Connect(lb_a_->address());
  ASSERT_TRUE(unrouted.ok());
  const int64_t lb2 = lb_a_->SettledBytes();
  Evals(*unrouted, other->token(), 5);
  EXPECT_GT(lb_a_->SettledBytes(), lb2);
  EXPECT_EQ(unrouted->OwnerOf(other->token()), "");
}

// A replica whose advertised address nobody can reach: the client keeps
// working through its target.
TEST(RoutingDeadOwnerTest, ADeadAdvertisedAddressFallsBackToTheTarget) {
  const std::string dead = FreeAddress();
  auto replica = testing_util::StartPyexecd(
      ReplicaFlags({"--advertise_address=" + dead, "--peers=" + dead}), "pyexecd_dead.log");
  ASSERT_NE(replica, nullptr);
  absl::StatusOr<Client> client = Client::Connect(replica->address(), Routed());
  ASSERT_TRUE(client.ok());
  const absl::Time start = absl::Now();
  absl::StatusOr<Session> s = Session::Bind(*client, BindOptions{}, kTimeout);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->bound().owner, dead);
  ASSERT_TRUE(s->Exec("x = 1").ok());
  Evals(*client, s->token(), 20);
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(4));
  ASSERT_TRUE(testing_util::WaitUntil([&] { return client->GetLease(s->token())->held; },
                                      absl::Seconds(5)));
  std::cout << "Bind and 21 calls with a dead owner address: " << absl::FormatDuration(took)
            << std::endl;
}

// A server that drains (SIGTERM) refuses new calls; the client reports each
// refusal as UNAVAILABLE, never as the bare CANCELLED gRPC core may give
// (grpc/grpc#41785), so retry logic keyed on UNAVAILABLE sees them all.
TEST(DrainTest, CallsRefusedWhileDrainingAreUnavailableNeverCancelled) {
  auto server = testing_util::StartPyexecd(
      {"--workers=2", "--max_workers=4", "--drain_timeout=2s", "--kill_grace=1s"},
      "pyexecd_drain.log");
  ASSERT_NE(server, nullptr);
  const std::string address = server->address();
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  absl::Mutex mu;
  std::map<absl::StatusCode, int> outcomes;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      Client client = Client::Connect(address).value();
      while (!stop) {
        absl::StatusOr<Result> r = client.Eval("", "1", {}, CallOptions{absl::Seconds(5)});
        {
          absl::MutexLock lock(&mu);
          ++outcomes[r.status().code()];
        }
        absl::SleepFor(absl::Milliseconds(2));
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(server->Stop(absl::Seconds(20)), "exit 0");
  absl::SleepFor(absl::Milliseconds(300));
  stop = true;
  for (std::thread& t : threads) t.join();
  absl::MutexLock lock(&mu);
  std::string summary;
  for (const auto& [code, n] : outcomes) {
    absl::StrAppend(&summary, absl::StatusCodeToString(code), " ", n, "; ");
  }
  std::cout << "stateless Evals across a drain: " << summary << std::endl;
  int others = 0;  // neither OK nor UNAVAILABLE: CANCELLED, say
  for (const auto& [code, n] : outcomes) {
    if (code != absl::StatusCode::kOk && code != absl::StatusCode::kUnavailable) others += n;
  }
  EXPECT_EQ(others, 0) << summary;
  EXPECT_GT(outcomes[absl::StatusCode::kOk], 0);
  EXPECT_GT(outcomes[absl::StatusCode::kUnavailable], 0);
}

}  // namespace
}  // namespace pyexec

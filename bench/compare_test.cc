#include "bench/compare.h"

#include "absl/strings/str_cat.h"
#include "bench/echo_server.h"
#include "clients/cpp/fake_pyexec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

PhaseResult Phase(int p50_us, int p99_us, double throughput) {
  PhaseResult r;
  r.latency.p50 = absl::Microseconds(p50_us);
  r.latency.p99 = absl::Microseconds(p99_us);
  r.throughput = throughput;
  r.ok = 1;
  return r;
}

TEST(FormatCompareTableTest, PassWhenWithinTargets) {
  // The issue-18 targets: 1.35x echo at 1 client, 0.85x at N.
  CompareReport r{Phase(100, 200, 0), Phase(135, 300, 0), Phase(0, 0, 1000),
                  Phase(0, 0, 850)};
  std::string table = FormatCompareTable(r, CompareOptions());
  EXPECT_THAT(table, HasSubstr("1.35x"));
  EXPECT_THAT(table, HasSubstr("0.85x"));
  EXPECT_THAT(table, HasSubstr("PASS"));
  EXPECT_THAT(table, Not(HasSubstr("MISS")));
}

TEST(FormatCompareTableTest, MissJustOutside) {
  CompareReport r{Phase(100, 200, 0), Phase(136, 300, 0), Phase(0, 0, 1000),
                  Phase(0, 0, 900)};
  std::string table = FormatCompareTable(r, CompareOptions());
  EXPECT_THAT(table, HasSubstr("MISS"));
  EXPECT_THAT(table, HasSubstr("PASS"));  // the throughput
}

TEST(FormatCompareTableTest, MissWhenOutside) {
  CompareReport r{Phase(100, 200, 0), Phase(200, 300, 0), Phase(0, 0, 1000),
                  Phase(0, 0, 100)};
  r.eval_throughput.errors["ABORTED"] = 3;
  std::string table = FormatCompareTable(r, CompareOptions());
  EXPECT_THAT(table, HasSubstr("2.00x"));
  EXPECT_THAT(table, HasSubstr("0.10x"));
  EXPECT_THAT(table, HasSubstr("MISS"));
  EXPECT_THAT(table, Not(HasSubstr("PASS")));
  EXPECT_THAT(table, HasSubstr("errors in eval, N clients: ABORTED x3"));
}

TEST(FormatCompareTableTest, RelayFloorRatios) {
  CompareReport r{Phase(100, 200, 0), Phase(180, 300, 0), Phase(0, 0, 1000),
                  Phase(0, 0, 400)};
  r.relay_latency = Phase(150, 250, 0);
  r.relay_throughput = Phase(0, 0, 500);
  std::string table = FormatCompareTable(r, CompareOptions());
  EXPECT_THAT(table, HasSubstr("Eval x relay"));
  EXPECT_THAT(table, HasSubstr("1.50x"));  // relay p50 / echo p50
  EXPECT_THAT(table, HasSubstr("1.20x"));  // Eval p50 / relay p50
  EXPECT_THAT(table, HasSubstr("0.50x"));  // relay throughput / echo's
  EXPECT_THAT(table, HasSubstr("0.80x"));  // Eval throughput / relay's
}

TEST(FormatCompareTableTest, NoRelayNoFloorSection) {
  CompareReport r{Phase(100, 200, 0), Phase(180, 300, 0), Phase(0, 0, 1000),
                  Phase(0, 0, 400)};
  EXPECT_THAT(FormatCompareTable(r, CompareOptions()), Not(HasSubstr("Eval x relay")));
}

// Short phases and no trace (the fake sends none), for the plumbing tests.
CompareOptions QuickOptions() {
  CompareOptions options;
  options.phase.warmup = absl::Milliseconds(10);
  options.phase.duration = absl::Milliseconds(100);
  options.concurrency = 3;
  options.traced_calls = 0;
  return options;
}

// The whole comparison against the in-process echo server and a fake PyExec
// (whose Eval of "1+1" does not return 2, so every Eval call counts as an
// error): checks the plumbing, binding and unbinding, not the figures.
TEST(RunCompareTest, RunsAllPhases) {
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0");
  ASSERT_TRUE(echo.ok()) << echo.status();
  fakes::FakePyExecServer pyexec;
  CompareOptions options = QuickOptions();
  absl::StatusOr<CompareReport> r =
      RunCompare(pyexec.address(), echo->address, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->echo_latency.ok, 0);
  EXPECT_GT(r->echo_throughput.ok, 0);
  EXPECT_TRUE(r->echo_throughput.errors.empty());
  EXPECT_GT(r->eval_throughput.errors["INTERNAL"], 0);
  // 1 session for latency + 3 for throughput, all unbound.
  EXPECT_EQ(pyexec.service().unbound().size(), 4u);
  echo->server->Shutdown();
}

TEST(RunCompareTest, RelayTakesPartInEveryPhase) {
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0");
  ASSERT_TRUE(echo.ok()) << echo.status();
  absl::StatusOr<std::unique_ptr<ProcessRelay>> helpers = ProcessRelay::Start(4);
  ASSERT_TRUE(helpers.ok()) << helpers.status();
  absl::StatusOr<EchoServer> relay = StartEchoServer("127.0.0.1:0", *std::move(helpers));
  ASSERT_TRUE(relay.ok()) << relay.status();
  fakes::FakePyExecServer pyexec;
  CompareOptions options = QuickOptions();
  options.relay_address = relay->address;
  absl::StatusOr<CompareReport> r = RunCompare(pyexec.address(), echo->address, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->relay_latency.ok, 0);
  EXPECT_TRUE(r->relay_latency.errors.empty());
  EXPECT_GT(r->relay_throughput.ok, 0);
  EXPECT_TRUE(r->relay_throughput.errors.empty());
  EXPECT_THAT(FormatCompareTable(*r, options), HasSubstr("Eval x relay"));
  relay->server->Shutdown();
  echo->server->Shutdown();
}

TEST(RunCompareTest, SaysWhenTheServerSendsNoTrace) {
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0");
  ASSERT_TRUE(echo.ok()) << echo.status();
  fakes::FakePyExecServer pyexec;
  CompareOptions options;
  options.phase.warmup = absl::Milliseconds(10);
  options.phase.duration = absl::Milliseconds(50);
  options.concurrency = 1;
  options.traced_calls = 5;
  absl::StatusOr<CompareReport> r = RunCompare(pyexec.address(), echo->address, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  echo->server->Shutdown();
}

TEST(RunCompareTest, UnreachableServer) {
  CompareOptions options;
  absl::StatusOr<CompareReport> r = RunCompare("127.0.0.1:1", "127.0.0.1:1", options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

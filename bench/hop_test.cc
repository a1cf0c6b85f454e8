#include "bench/hop.h"

#include "clients/cpp/fake_pyexec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

using ::testing::HasSubstr;

PhaseResult Phase(int p50_us, int p99_us, double throughput) {
  PhaseResult r;
  r.latency.p50 = absl::Microseconds(p50_us);
  r.latency.p99 = absl::Microseconds(p99_us);
  r.throughput = throughput;
  r.ok = 1;
  return r;
}

TEST(FormatHopTableTest, RatiosAndExtraHop) {
  HopReport r{Phase(100, 200, 0),  Phase(150, 300, 0),   Phase(105, 210, 0),
              Phase(80, 0, 1000), Phase(120, 0, 800), Phase(84, 0, 970)};
  r.forwarded_latency.errors["UNAVAILABLE"] = 2;
  r.routed_throughput.errors["DEADLINE_EXCEEDED"] = 1;
  std::string table = FormatHopTable(r, HopOptions());
  EXPECT_THAT(table, HasSubstr("1.50x"));
  EXPECT_THAT(table, HasSubstr("0.80x"));
  EXPECT_THAT(table, HasSubstr("1.05x"));
  EXPECT_THAT(table, HasSubstr("0.97x"));
  EXPECT_THAT(table, HasSubstr("extra hop, p50 of 1 client: 50"));
  EXPECT_THAT(table, HasSubstr("errors in forwarded, 1 client: UNAVAILABLE x2"));
  EXPECT_THAT(table,
              HasSubstr("errors in client-routed, N clients: DEADLINE_EXCEEDED x1"));
}

// Plumbing only: both "replicas" are one fake PyExec (whose Eval of "1+1"
// does not return 2, so calls count as errors); sessions are all unbound.
TEST(RunHopTest, RunsAllPhasesAndUnbinds) {
  fakes::FakePyExecServer pyexec;
  HopOptions options;
  options.phase.warmup = absl::Milliseconds(10);
  options.phase.duration = absl::Milliseconds(100);
  options.concurrency = 3;
  absl::StatusOr<HopReport> r = RunHop(pyexec.address(), pyexec.address(), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->direct_latency.errors["INTERNAL"], 0);
  EXPECT_GT(r->forwarded_throughput.errors["INTERNAL"], 0);
  EXPECT_GT(r->routed_throughput.errors["INTERNAL"], 0);
  EXPECT_EQ(pyexec.service().unbound().size(), 4u);
}

TEST(RunHopTest, UnreachableReplica) {
  HopOptions options;
  options.connect_timeout = absl::Milliseconds(300);
  absl::StatusOr<HopReport> r = RunHop("127.0.0.1:1", "127.0.0.1:1", options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

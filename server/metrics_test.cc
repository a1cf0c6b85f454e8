#include "server/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

MetricsSnapshot Fixed() {
  MetricsSnapshot s;
  s.idle_workers = 3;
  s.bound_workers = 2;
  s.sessions = 2;
  s.draining = true;
  s.peers = 3;
  s.workers_spawned = 7;
  s.worker_deaths = {{"signal", 4}};
  return s;
}

TEST(MetricsTest, CountsCallsByRpcAndCode) {
  Metrics m(Fixed);
  m.RecordCall(Rpc::kEval, grpc::StatusCode::OK, absl::Microseconds(300));
  m.RecordCall(Rpc::kEval, grpc::StatusCode::OK, absl::Milliseconds(3));
  m.RecordCall(Rpc::kEval, grpc::StatusCode::NOT_FOUND, absl::Seconds(100));
  std::string out = m.Render();
  EXPECT_THAT(out, HasSubstr("pyexec_rpcs_total{rpc=\"Eval\",code=\"OK\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpcs_total{rpc=\"Eval\",code=\"NOT_FOUND\"} 1\n"));
  // Unused codes are left out, OK is always there.
  EXPECT_THAT(out, HasSubstr("pyexec_rpcs_total{rpc=\"Bind\",code=\"OK\"} 0\n"));
  EXPECT_THAT(out, Not(HasSubstr("rpc=\"Bind\",code=\"NOT_FOUND\"")));
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Metrics m(Fixed);
  m.RecordCall(Rpc::kCall, grpc::StatusCode::OK, absl::Microseconds(300));
  m.RecordCall(Rpc::kCall, grpc::StatusCode::OK, absl::Milliseconds(3));
  m.RecordCall(Rpc::kCall, grpc::StatusCode::OK, absl::Seconds(100));
  std::string out = m.Render();
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_bucket{rpc=\"Call\",le=\"0.0005\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_bucket{rpc=\"Call\",le=\"0.0025\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_bucket{rpc=\"Call\",le=\"0.005\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_bucket{rpc=\"Call\",le=\"30\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_bucket{rpc=\"Call\",le=\"+Inf\"} 3\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_count{rpc=\"Call\"} 3\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_rpc_duration_seconds_sum{rpc=\"Call\"} 100.0033\n"));
}

TEST(MetricsTest, ForwardsAndGauges) {
  Metrics m(Fixed);
  m.RecordForward(Rpc::kExec, ForwardOutcome::kUnreachable);
  std::string out = m.Render();
  EXPECT_THAT(out, HasSubstr("pyexec_forwarded_calls_total{rpc=\"Exec\",outcome=\"unreachable\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_forwarded_calls_total{rpc=\"Exec\",outcome=\"answered\"} 0\n"));
  EXPECT_THAT(out, Not(HasSubstr("pyexec_forwarded_calls_total{rpc=\"Bind\"")));
  EXPECT_THAT(out, HasSubstr("pyexec_workers{state=\"idle\"} 3\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_workers{state=\"bound\"} 2\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_worker_deaths_total{reason=\"signal\"} 4\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_worker_spawns_total 7\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_draining 1\n"));
  EXPECT_THAT(out, HasSubstr("pyexec_peers 3\n"));
  EXPECT_THAT(out, HasSubstr("# TYPE pyexec_rpc_duration_seconds histogram\n"));
}

}  // namespace
}  // namespace pyexec

#include "bench/soak.h"

#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

TEST(IsExpectedFailureTest, RunawayDeadlineOnly) {
  FailureContext runaway;
  runaway.runaway = true;
  EXPECT_TRUE(IsExpectedFailure(absl::DeadlineExceededError(""), runaway));
  EXPECT_FALSE(IsExpectedFailure(absl::DeadlineExceededError(""), FailureContext()));
  EXPECT_FALSE(IsExpectedFailure(absl::NotFoundError(""), runaway));
}

TEST(IsExpectedFailureTest, AbortedNeedsAFault) {
  EXPECT_FALSE(IsExpectedFailure(absl::AbortedError(""), FailureContext()));
  FailureContext c;
  c.exit = true;
  EXPECT_TRUE(IsExpectedFailure(absl::AbortedError(""), c));
  c = FailureContext();
  c.kill_nearby = true;
  EXPECT_TRUE(IsExpectedFailure(absl::AbortedError(""), c));
  EXPECT_FALSE(IsExpectedFailure(absl::NotFoundError(""), c));
}

TEST(IsExpectedFailureTest, NotFoundOnlyOnLostSession) {
  FailureContext c;
  c.session_lost = true;
  EXPECT_TRUE(IsExpectedFailure(absl::NotFoundError(""), c));
  EXPECT_TRUE(IsExpectedFailure(absl::AbortedError(""), c));
  EXPECT_FALSE(IsExpectedFailure(absl::UnavailableError(""), c));
  EXPECT_FALSE(IsExpectedFailure(absl::ResourceExhaustedError(""), c));
}

TEST(KillLogTest, RecordsPidsAndTimes) {
  KillLog log;
  const absl::Time t = absl::FromUnixSeconds(1000);
  log.Record(42, t);
  log.Record(43, t + absl::Seconds(10));
  EXPECT_TRUE(log.WasKilled(42));
  EXPECT_FALSE(log.WasKilled(44));
  EXPECT_EQ(log.count(), 2);
  EXPECT_TRUE(log.AnyBetween(t - absl::Seconds(1), t));
  EXPECT_TRUE(log.AnyBetween(t + absl::Seconds(5), t + absl::Seconds(10)));
  EXPECT_FALSE(log.AnyBetween(t + absl::Seconds(1), t + absl::Seconds(9)));
  EXPECT_FALSE(log.AnyBetween(t + absl::Seconds(11), t + absl::Seconds(20)));
}

TEST(FormatSoakReportTest, ListsFigures) {
  SoakReport r;
  r.answered = 10;
  r.ok = 7;
  r.expected["bound eval ABORTED"] = 2;
  r.unexpected["stateless eval UNAVAILABLE"] = 1;
  r.start.rss_kb = 100;
  r.end.rss_kb = 120;
  const std::string s = FormatSoakReport(r);
  EXPECT_NE(s.find("calls answered: 10 (ok 7)"), std::string::npos) << s;
  EXPECT_NE(s.find("expected failures: 2"), std::string::npos) << s;
  EXPECT_NE(s.find("unexpected failures: 1"), std::string::npos) << s;
  EXPECT_NE(s.find("rss=120KiB"), std::string::npos) << s;
  EXPECT_EQ(r.unexpected_total(), 1);
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

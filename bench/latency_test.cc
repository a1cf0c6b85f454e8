#include "bench/latency.h"

#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

std::vector<absl::Duration> Micros(std::vector<int> us) {
  std::vector<absl::Duration> out;
  for (int u : us) out.push_back(absl::Microseconds(u));
  return out;
}

TEST(PercentileTest, NearestRank) {
  std::vector<absl::Duration> v = Micros({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  EXPECT_EQ(Percentile(v, 50), absl::Microseconds(5));
  EXPECT_EQ(Percentile(v, 90), absl::Microseconds(9));
  EXPECT_EQ(Percentile(v, 99), absl::Microseconds(10));
  EXPECT_EQ(Percentile(v, 100), absl::Microseconds(10));
  EXPECT_EQ(Percentile(v, 1), absl::Microseconds(1));
  EXPECT_EQ(Percentile({}, 50), absl::ZeroDuration());
}

TEST(PercentileTest, P99OfHundredIsNinetyNinth) {
  std::vector<int> us;
  for (int i = 1; i <= 100; ++i) us.push_back(i);
  std::vector<absl::Duration> v = Micros(us);
  EXPECT_EQ(Percentile(v, 99), absl::Microseconds(99));
  EXPECT_EQ(Percentile(v, 50), absl::Microseconds(50));
}

TEST(SummarizeTest, SortsAndSummarizes) {
  std::vector<absl::Duration> v = Micros({30, 10, 20, 40});
  LatencySummary s = Summarize(v);
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.min, absl::Microseconds(10));
  EXPECT_EQ(s.max, absl::Microseconds(40));
  EXPECT_EQ(s.p50, absl::Microseconds(20));
  EXPECT_EQ(s.mean, absl::Microseconds(25));
}

TEST(SummarizeTest, Empty) {
  std::vector<absl::Duration> v;
  LatencySummary s = Summarize(v);
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.p99, absl::ZeroDuration());
}

TEST(FormatMicrosTest, OneDecimal) {
  EXPECT_EQ(FormatMicros(absl::Nanoseconds(123456)), "123.5us");
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

#include "bench/load.h"

#include <algorithm>
#include <atomic>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

PhaseOptions Short() {
  PhaseOptions o;
  o.warmup = absl::Milliseconds(20);
  o.duration = absl::Milliseconds(200);
  return o;
}

TEST(RunPhaseTest, SequentialCallerMeasuresLatency) {
  std::atomic<int64_t> calls{0};
  PhaseResult r = RunPhase({[&] {
                             ++calls;
                             absl::SleepFor(absl::Milliseconds(2));
                             return absl::OkStatus();
                           }},
                           Short());
  EXPECT_GT(r.ok, 10);
  EXPECT_LE(r.ok, calls.load());
  EXPECT_GE(r.latency.p50, absl::Milliseconds(2));
  EXPECT_LT(r.latency.p50, absl::Milliseconds(50));
  // At most one call per 2ms over ~200ms.
  EXPECT_LT(r.throughput, 600);
  EXPECT_TRUE(r.errors.empty());
}

TEST(RunPhaseTest, ConcurrentCallersAddUp) {
  std::vector<CallFn> fns(4, [] {
    absl::SleepFor(absl::Milliseconds(5));
    return absl::OkStatus();
  });
  PhaseResult r = RunPhase(fns, Short());
  // Four sleeping callers overlap: clearly more than one caller could do.
  EXPECT_GT(r.throughput, 300);
  EXPECT_EQ(r.latency.count, r.ok);
}

TEST(RunPhaseTest, ErrorsAreCountedByCode) {
  std::atomic<int> i{0};
  PhaseResult r = RunPhase({[&] {
                             absl::SleepFor(absl::Microseconds(100));
                             return (++i % 2) ? absl::OkStatus()
                                              : absl::UnavailableError("x");
                           }},
                           Short());
  ASSERT_EQ(r.errors.count("UNAVAILABLE"), 1u);
  EXPECT_GT(r.errors["UNAVAILABLE"], 0);
  EXPECT_NEAR(static_cast<double>(r.errors["UNAVAILABLE"]),
              static_cast<double>(r.ok), 2.0);
}

TEST(RunInterleavedTest, VariantsTakeTurnsAndKeepTheirOwnFigures) {
  std::vector<int> order;
  std::vector<PhaseResult> r = RunInterleaved(
      {[&] {
         order.push_back(0);
         absl::SleepFor(absl::Milliseconds(1));
         return absl::OkStatus();
       },
       [&] {
         order.push_back(1);
         absl::SleepFor(absl::Milliseconds(4));
         return absl::OkStatus();
       },
       [&] {
         order.push_back(2);
         return absl::DeadlineExceededError("x");
       }},
      Short());
  ASSERT_EQ(r.size(), 3u);
  // Every round of three calls has each variant once, in changing orders,
  // and every variant was measured as often.
  ASSERT_EQ(order.size() % 3, 0u);
  std::set<std::vector<int>> orders;
  for (size_t i = 0; i < order.size(); i += 3) {
    std::vector<int> round(order.begin() + i, order.begin() + i + 3);
    orders.insert(round);
    std::sort(round.begin(), round.end());
    EXPECT_EQ(round, (std::vector<int>{0, 1, 2}));
  }
  EXPECT_GT(orders.size(), 1u);
  EXPECT_GT(r[0].ok, 10);
  EXPECT_EQ(r[0].ok, r[1].ok);
  EXPECT_EQ(r[2].ok, 0);
  EXPECT_EQ(r[2].errors["DEADLINE_EXCEEDED"], r[1].ok);
  EXPECT_GE(r[1].latency.p50, absl::Milliseconds(4));
  EXPECT_GT(r[1].latency.p50, r[0].latency.p50);
  // Each one's rate is over its own time: at most 1 call per 1 ms, 4 ms.
  EXPECT_LE(r[0].throughput, 1000);
  EXPECT_LE(r[1].throughput, 250);
  EXPECT_GT(r[0].throughput, r[1].throughput);
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

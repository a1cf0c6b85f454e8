#include "bench/load.h"

#include <atomic>

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

}  // namespace
}  // namespace bench
}  // namespace pyexec

#include "common/background_job.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

// Every wait below is bounded by a long interval that the test would notice
// only as a timeout; nothing depends on a short sleep.
constexpr absl::Duration kLong = absl::Seconds(60);

TEST(BackgroundJobTest, WakeRunsTheJobAtOnce) {
  std::atomic<int> runs{0};
  absl::Notification ran;
  BackgroundJob job("test-job", kLong, [&] {
    if (++runs == 1) ran.Notify();
    return absl::InfiniteDuration();
  });
  job.Wake();
  EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(runs.load(), 1);
}

TEST(BackgroundJobTest, RunsAgainWhenTheTimeItAskedForComes) {
  std::atomic<int> runs{0};
  absl::Notification second;
  BackgroundJob job("test-job", kLong, [&] {
    if (++runs == 2) second.Notify();
    // Asks for the next run 10 ms from now, far sooner than the interval.
    return absl::Milliseconds(10);
  });
  job.Wake();
  EXPECT_TRUE(second.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST(BackgroundJobTest, IntervalBoundsWhatTheJobAsks) {
  std::atomic<int> runs{0};
  absl::Notification second;
  BackgroundJob job("test-job", absl::Milliseconds(10), [&] {
    if (++runs == 2) second.Notify();
    return absl::InfiniteDuration();
  });
  EXPECT_TRUE(second.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST(BackgroundJobTest, DestructorStopsWithoutWaitingForTheInterval) {
  const absl::Time start = absl::Now();
  {
    BackgroundJob job("test-job", kLong, [] { return absl::InfiniteDuration(); });
  }
  EXPECT_LT(absl::Now() - start, kLong);
}

TEST(BackgroundJobTest, WakeFromInsideTheJobRunsItAgain) {
  std::atomic<int> runs{0};
  absl::Notification third;
  BackgroundJob* self = nullptr;
  absl::Notification ready;
  BackgroundJob job("test-job", kLong, [&] {
    ready.WaitForNotification();
    if (++runs == 3) third.Notify();
    if (runs < 3) self->Wake();  // its own mutex is not held while it runs
    return absl::InfiniteDuration();
  });
  self = &job;
  ready.Notify();
  job.Wake();
  EXPECT_TRUE(third.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

// The regression of a job that asked for a time on another clock and ran back
// to back: a job that asks for a pause gets it.
TEST(BackgroundJobTest, RunsNoSoonerThanItAsked) {
  std::atomic<int> runs{0};
  absl::Notification first;
  BackgroundJob job("test-job", kLong, [&] {
    if (++runs == 1) first.Notify();
    return absl::Seconds(30);
  });
  job.Wake();
  ASSERT_TRUE(first.WaitForNotificationWithTimeout(absl::Seconds(30)));
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(runs.load(), 1);
}

}  // namespace
}  // namespace pyexec

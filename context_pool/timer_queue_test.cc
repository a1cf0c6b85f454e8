#include "context_pool/timer_queue.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(TimerQueueTest, FiresDueTimersInTimeOrder) {
  TimerQueue q;
  std::vector<std::string> fired;
  TimerQueue::Timer b = q.Schedule(kT0 + absl::Seconds(2), [&] { fired.push_back("b"); });
  TimerQueue::Timer a = q.Schedule(kT0 + absl::Seconds(1), [&] { fired.push_back("a"); });
  TimerQueue::Timer c = q.Schedule(kT0 + absl::Seconds(3), [&] { fired.push_back("c"); });
  EXPECT_EQ(q.next(), kT0 + absl::Seconds(1));
  q.FireDue(kT0 + absl::Seconds(2));
  EXPECT_EQ(fired, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(a.armed());
  EXPECT_TRUE(c.armed());
  EXPECT_EQ(q.next(), kT0 + absl::Seconds(3));
}

TEST(TimerQueueTest, ADestroyedOrReassignedTimerNeverFires) {
  TimerQueue q;
  int fired = 0;
  {
    TimerQueue::Timer t = q.Schedule(kT0, [&] { ++fired; });
  }
  TimerQueue::Timer t = q.Schedule(kT0, [&] { fired += 10; });
  t = q.Schedule(kT0 + absl::Seconds(1), [&] { fired += 100; });  // replaces
  TimerQueue::Timer cancelled = q.Schedule(kT0, [&] { fired += 1000; });
  cancelled.Cancel();
  EXPECT_EQ(q.size(), 1u);
  q.FireDue(kT0 + absl::Seconds(5));
  EXPECT_EQ(fired, 100);
  EXPECT_EQ(q.next(), absl::InfiniteFuture());
}

TEST(TimerQueueTest, CallbacksMayScheduleAndCancel) {
  TimerQueue q;
  std::vector<int> fired;
  TimerQueue::Timer later;
  TimerQueue::Timer victim = q.Schedule(kT0 + absl::Seconds(2), [&] { fired.push_back(99); });
  TimerQueue::Timer first = q.Schedule(kT0, [&] {
    fired.push_back(1);
    later = q.Schedule(kT0, [&] { fired.push_back(2); });  // due now: runs too
    victim.Cancel();
  });
  q.FireDue(kT0 + absl::Seconds(3));
  EXPECT_EQ(fired, (std::vector<int>{1, 2}));
  // A moved timer carries its registration.
  TimerQueue::Timer moved = q.Schedule(kT0, [&] { fired.push_back(3); });
  TimerQueue::Timer owner(std::move(moved));
  EXPECT_FALSE(moved.armed());
  EXPECT_TRUE(owner.armed());
  q.FireDue(kT0);
  EXPECT_EQ(fired.back(), 3);
}

}  // namespace
}  // namespace pyexec

#include "context_pool/scheduler.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

TEST(SchedulerTest, SessionsGetOnlyFreshWorkersMostRecentFirst) {
  Scheduler s(4);
  s.AddIdle(1, false);
  s.AddIdle(2, true, "alice");
  s.AddIdle(3, false);
  EXPECT_EQ(s.TakeForSession(), 3u);
  EXPECT_EQ(s.TakeForSession(), 1u);
  EXPECT_EQ(s.TakeForSession(), 0u);  // only alice's used worker is left
  EXPECT_TRUE(s.IsIdle(2));
}

TEST(SchedulerTest, StatelessCallsPreferTheirPrincipalsWorkersThenFreshOnes) {
  Scheduler s(4);
  s.AddIdle(1, true, "alice");
  s.AddIdle(2, false);
  s.AddIdle(3, true, "bob");
  s.AddIdle(4, true, "alice");
  EXPECT_EQ(s.TakeForStateless("alice"), 4u);
  EXPECT_EQ(s.TakeForStateless("alice"), 1u);
  EXPECT_EQ(s.TakeForStateless("alice"), 2u);  // a fresh one
  EXPECT_EQ(s.TakeForStateless("alice"), 0u);  // never bob's
  EXPECT_EQ(s.RunningStateless("alice"), 3);
  s.StatelessEnded("alice");
  EXPECT_EQ(s.RunningStateless("alice"), 2);
  EXPECT_EQ(s.running_stateless(), 2);
}

TEST(SchedulerTest, APrincipalWithNothingRunningGoesFirst) {
  Scheduler s(4);
  // alice already runs two calls; bob none.
  s.AddIdle(1, false);
  s.AddIdle(2, false);
  ASSERT_NE(s.TakeForStateless("alice"), 0u);
  ASSERT_NE(s.TakeForStateless("alice"), 0u);
  s.AddIdle(3, false);
  Scheduler::Plan plan = s.PlanStateless({"alice", "alice", "bob"}, 0);
  ASSERT_EQ(plan.starts.size(), 1u);
  EXPECT_EQ(plan.starts[0].waiting_index, 2u);  // bob's, though it came last
  EXPECT_EQ(plan.starts[0].worker, 3u);
  EXPECT_THAT(plan.recycle, IsEmpty());
}

TEST(SchedulerTest, EqualShareGoesToTheLeastRecentlyServedThenTheOldest) {
  Scheduler s(4);
  for (uint64_t k : {1, 2, 3, 4}) s.AddIdle(k, false);
  // bob was served before alice; both now run nothing.
  ASSERT_EQ(s.TakeForStateless("bob"), 4u);
  ASSERT_EQ(s.TakeForStateless("alice"), 3u);
  s.StatelessEnded("bob");
  s.StatelessEnded("alice");
  s.AddIdle(4, true, "bob");
  s.AddIdle(3, true, "alice");
  Scheduler::Plan plan = s.PlanStateless({"alice", "bob", "alice"}, 0);
  ASSERT_EQ(plan.starts.size(), 3u);
  EXPECT_EQ(plan.starts[0].waiting_index, 1u);  // bob: served longest ago
  EXPECT_EQ(plan.starts[1].waiting_index, 0u);  // then alice's oldest
  EXPECT_EQ(plan.starts[2].waiting_index, 2u);
}

TEST(SchedulerTest, AStarvedPrincipalGetsAnotherPrincipalsIdleWorkerRecycled) {
  Scheduler s(2);
  s.AddIdle(1, true, "alice");
  s.AddIdle(2, true, "alice");
  Scheduler::Plan plan = s.PlanStateless({"bob"}, /*spare_starting=*/0);
  EXPECT_THAT(plan.starts, IsEmpty());
  EXPECT_THAT(plan.recycle, ElementsAre(1u));  // the least recently idle
  EXPECT_FALSE(s.IsIdle(1));
  // With a fresh worker already on its way, nothing is recycled.
  Scheduler t(2);
  t.AddIdle(1, true, "alice");
  plan = t.PlanStateless({"bob"}, /*spare_starting=*/1);
  EXPECT_THAT(plan.recycle, IsEmpty());
  EXPECT_TRUE(t.IsIdle(1));
}

TEST(SchedulerTest, SharesMoveTowardsEqualOnly) {
  Scheduler s(8);
  // alice runs three calls and has an idle worker; bob runs one.
  for (uint64_t k : {1, 2, 3, 4}) s.AddIdle(k, true, "alice");
  for (int i = 0; i < 3; ++i) ASSERT_NE(s.TakeForStateless("alice"), 0u);
  s.AddIdle(5, false);
  ASSERT_EQ(s.TakeForStateless("bob"), 5u);
  Scheduler::Plan plan = s.PlanStateless({"bob"}, 0);
  EXPECT_THAT(plan.recycle, ElementsAre(1u));  // 3 > 1 + 1
  // One more for bob: 2 against alice's 3 is close enough; no recycling.
  s.AddIdle(6, false);
  ASSERT_EQ(s.TakeForStateless("bob"), 6u);
  s.AddIdle(7, true, "alice");
  plan = s.PlanStateless({"bob"}, 0);
  EXPECT_THAT(plan.recycle, IsEmpty());
}

TEST(SchedulerTest, TrimRetiresUsedWorkersPastTheWarmSize) {
  Scheduler s(2);
  s.AddIdle(1, true, "alice");
  s.AddIdle(2, false);
  s.AddIdle(3, true, "bob");
  s.AddIdle(4, false);
  EXPECT_THAT(s.Trim(/*starting=*/0, /*waiting_binds=*/0), ElementsAre(1u, 3u));
  EXPECT_EQ(s.idle_count(), 2u);
  // Fresh workers are never retired, and waiting binds keep room.
  s.AddIdle(5, false);
  EXPECT_THAT(s.Trim(0, 0), IsEmpty());
  s.AddIdle(6, true, "alice");
  EXPECT_THAT(s.Trim(0, 2), IsEmpty());
}

TEST(SchedulerTest, SpawnsKeepTheWarmPoolAndServeWaitingBinds) {
  Scheduler s(4);
  EXPECT_EQ(s.SpawnsNeeded(0, 0, 0), 4);
  EXPECT_EQ(s.SpawnsNeeded(1, 1, 0), 2);  // two on their way
  s.AddIdle(1, false);
  s.AddIdle(2, true, "alice");
  EXPECT_EQ(s.SpawnsNeeded(0, 0, 0), 2);
  // Three binds wait: the fresh idle worker and the two spawns for the pool
  // serve them; no more.
  EXPECT_EQ(s.SpawnsNeeded(0, 0, 3), 2);
  EXPECT_EQ(s.SpawnsNeeded(0, 0, 5), 4);
}

}  // namespace
}  // namespace pyexec

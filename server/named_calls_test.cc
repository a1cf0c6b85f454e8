#include "server/named_calls.h"

#include <vector>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

class NamedCallsTest : public ::testing::Test {
 protected:
  absl::Time now_ = absl::FromUnixSeconds(1000);
  NamedCalls calls_{[this] { return now_; }};
  std::vector<CallId> interrupted_;
  std::function<void(CallId)> record_ = [this](CallId id) { interrupted_.push_back(id); };
};

TEST_F(NamedCallsTest, AnInterruptReachesTheRunningCall) {
  ASSERT_TRUE(calls_.Arrive("s", "c1"));
  calls_.Started("s", "c1", 7, record_);
  EXPECT_TRUE(calls_.Interrupt("s", "c1", record_));
  EXPECT_EQ(interrupted_, std::vector<CallId>{7});
  calls_.Ended("s", "c1");
  // Once ended, nothing to interrupt: false, and nothing is held for it.
  EXPECT_FALSE(calls_.Interrupt("s", "c1", record_));
  EXPECT_TRUE(calls_.Arrive("s", "c1"));
}

TEST_F(NamedCallsTest, AnInterruptThatArrivesFirstCancelsTheCallOnArrival) {
  EXPECT_TRUE(calls_.Interrupt("s", "early", record_));
  EXPECT_TRUE(interrupted_.empty());
  EXPECT_FALSE(calls_.Arrive("s", "early"));  // ends CANCELLED at once
  EXPECT_TRUE(calls_.Arrive("s", "early"));   // the hold was used up
}

TEST_F(NamedCallsTest, AHeldInterruptExpires) {
  EXPECT_TRUE(calls_.Interrupt("s", "late", record_));
  now_ += NamedCalls::kHoldFor + absl::Seconds(1);
  EXPECT_TRUE(calls_.Arrive("s", "late"));
}

// The Interrupt lands after the call arrived but before the pool gave it an
// id: it is kept and applied the moment the call starts.
TEST_F(NamedCallsTest, AnInterruptBetweenArrivalAndStartIsApplied) {
  ASSERT_TRUE(calls_.Arrive("s", "c"));
  EXPECT_TRUE(calls_.Interrupt("s", "c", record_));
  EXPECT_TRUE(interrupted_.empty());
  calls_.Started("s", "c", 42, record_);
  EXPECT_EQ(interrupted_, std::vector<CallId>{42});
}

TEST_F(NamedCallsTest, SessionsAreApart) {
  ASSERT_TRUE(calls_.Arrive("a", "c"));
  calls_.Started("a", "c", 1, record_);
  EXPECT_TRUE(calls_.Interrupt("b", "c", record_));  // held for b's "c"
  EXPECT_TRUE(interrupted_.empty());
  calls_.ForgetSession("b");
  EXPECT_TRUE(calls_.Arrive("b", "c"));
}

}  // namespace
}  // namespace pyexec

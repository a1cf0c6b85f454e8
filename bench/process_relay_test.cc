#include "bench/process_relay.h"

#include <signal.h>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

// Sends and waits for the answer.
absl::StatusOr<std::string> RelayOnce(ProcessRelay& relay, const std::string& payload) {
  absl::Notification answered;
  absl::StatusOr<std::string> answer;
  relay.Send(payload, [&](absl::StatusOr<std::string> got) {
    answer = std::move(got);
    answered.Notify();
  });
  answered.WaitForNotification();
  return answer;
}

TEST(ProcessRelayTest, HelpersEchoEachMessageWhole) {
  absl::StatusOr<std::unique_ptr<ProcessRelay>> relay = ProcessRelay::Start(2);
  ASSERT_TRUE(relay.ok()) << relay.status();
  for (const std::string& payload :
       {std::string("x"), std::string("\0ab\0", 4), std::string(ProcessRelay::kMaxPayload, 'y')}) {
    absl::StatusOr<std::string> answer = RelayOnce(**relay, payload);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(*answer, payload);
  }
}

TEST(ProcessRelayTest, TooLargeIsInvalidArgument) {
  absl::StatusOr<std::unique_ptr<ProcessRelay>> relay = ProcessRelay::Start(1);
  ASSERT_TRUE(relay.ok()) << relay.status();
  absl::StatusOr<std::string> answer =
      RelayOnce(**relay, std::string(ProcessRelay::kMaxPayload + 1, 'z'));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*RelayOnce(**relay, "still here"), "still here");
}

TEST(ProcessRelayTest, EveryHelperBusyIsResourceExhaustedAtOnce) {
  absl::StatusOr<std::unique_ptr<ProcessRelay>> relay = ProcessRelay::Start(1);
  ASSERT_TRUE(relay.ok()) << relay.status();
  // The first answer's callback holds the I/O thread, so the next relay's
  // answer is not read and the only helper stays taken.
  absl::Notification first_answered, release;
  (*relay)->Send("first", [&](absl::StatusOr<std::string> got) {
    EXPECT_EQ(*got, "first");
    first_answered.Notify();
    release.WaitForNotification();
  });
  first_answered.WaitForNotification();
  absl::Notification second_answered;
  (*relay)->Send("second", [&](absl::StatusOr<std::string> got) {
    EXPECT_EQ(*got, "second");
    second_answered.Notify();
  });
  absl::StatusOr<std::string> third = RelayOnce(**relay, "third");
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  release.Notify();
  second_answered.WaitForNotification();
  EXPECT_EQ(*RelayOnce(**relay, "fourth"), "fourth");
}

TEST(ProcessRelayTest, DeadHelperIsUnavailableAndTheOthersCarryOn) {
  absl::StatusOr<std::unique_ptr<ProcessRelay>> relay = ProcessRelay::Start(2);
  ASSERT_TRUE(relay.ok()) << relay.status();
  const std::vector<pid_t> pids = (*relay)->helper_pids();
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
  // Until the I/O thread has seen it go, a relay may still pick the dead
  // helper and get UNAVAILABLE; the live one answers, and keeps answering.
  int answered = 0;
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::string> answer = RelayOnce(**relay, "ping");
    if (answer.ok()) {
      EXPECT_EQ(*answer, "ping");
      ++answered;
    } else {
      EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable) << answer.status();
    }
  }
  EXPECT_GE(answered, 19);
  ASSERT_EQ(kill(pids[1], SIGKILL), 0);
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> answer = RelayOnce(**relay, "ping");
    EXPECT_FALSE(answer.ok());
    EXPECT_TRUE(answer.status().code() == absl::StatusCode::kUnavailable ||
                answer.status().code() == absl::StatusCode::kResourceExhausted)
        << answer.status();
  }
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

#include "server/session_table.h"

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

class SessionTableTest : public ::testing::Test {
 protected:
  absl::Time now_ = absl::FromUnixSeconds(1000);
  SessionTable table_{[this] { return now_; }};
};

TEST_F(SessionTableTest, TokensAre128BitHexAndUnique) {
  absl::flat_hash_set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    std::string token = NewSessionToken();
    EXPECT_EQ(token.size(), 32u);
    EXPECT_EQ(token.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_TRUE(seen.insert(token).second);
  }
}

TEST_F(SessionTableTest, LookupAndRemove) {
  std::string token = table_.Add(7, absl::Minutes(1));
  auto worker = table_.BeginCall(token);
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ(*worker, 7u);
  table_.EndCall(token);
  EXPECT_EQ(table_.BeginCall("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(table_.Remove(token), 7u);
  EXPECT_FALSE(table_.Remove(token).has_value());
  EXPECT_EQ(table_.BeginCall(token).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionTableTest, IdleSessionsExpireButNotWhileACallRuns) {
  std::string idle = table_.Add(1, absl::Seconds(10));
  std::string busy = table_.Add(2, absl::Seconds(10));
  ASSERT_TRUE(table_.BeginCall(busy).ok());
  now_ += absl::Seconds(9);
  EXPECT_TRUE(table_.TakeExpired().empty());
  now_ += absl::Seconds(2);
  auto expired = table_.TakeExpired();
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].token, idle);
  EXPECT_EQ(expired[0].why, SessionTable::Expiry::kIdle);
  // The idle clock restarts when the call ends.
  table_.EndCall(busy);
  now_ += absl::Seconds(9);
  EXPECT_TRUE(table_.TakeExpired().empty());
  now_ += absl::Seconds(1);
  EXPECT_EQ(table_.TakeExpired().size(), 1u);
  EXPECT_EQ(table_.size(), 0u);
}

TEST_F(SessionTableTest, ForeignTokensActLikeUnknownOnes) {
  std::string token = table_.Add(3, absl::Minutes(1), "alice");
  EXPECT_EQ(table_.BeginCall(token, "bob").status(),
            table_.BeginCall("unknown", "bob").status());
  EXPECT_FALSE(table_.Remove(token, "bob").has_value());
  EXPECT_TRUE(table_.BeginCall(token, "alice").ok());
  table_.EndCall(token);
  EXPECT_EQ(table_.Remove(token, "alice"), 3u);
}

TEST_F(SessionTableTest, ReservedAndLiveSessionsCountTowardsTheLimit) {
  ASSERT_TRUE(table_.ReserveSlot("alice", 2).ok());
  std::string token = table_.Add(1, absl::Minutes(1), "alice");
  table_.ReleaseSlot("alice");
  ASSERT_TRUE(table_.ReserveSlot("alice", 2).ok());  // pending bind
  EXPECT_EQ(table_.ReserveSlot("alice", 2).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(table_.ReserveSlot("bob", 2).ok());
  table_.ReleaseSlot("alice");  // the pending bind failed
  EXPECT_TRUE(table_.ReserveSlot("alice", 2).ok());
  table_.ReleaseSlot("alice");
  EXPECT_EQ(table_.CountOwnedBy("alice"), 1);
  // Expiry and worker loss free the slot too.
  table_.RemoveByWorker(1);
  EXPECT_TRUE(table_.ReserveSlot("alice", 1).ok());
  EXPECT_EQ(table_.CountOwnedBy("alice"), 0);
  (void)token;
}

TEST_F(SessionTableTest, RemoveByWorker) {
  std::string token = table_.Add(5, absl::Minutes(1));
  EXPECT_EQ(table_.RemoveByWorker(5), token);
  EXPECT_FALSE(table_.RemoveByWorker(5).has_value());
  EXPECT_EQ(table_.BeginCall(token).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionTableTest, ALeasedSessionLivesUntilTheGraceAfterItsLastLease) {
  SessionTable table([this] { return now_; }, "", absl::Seconds(5));
  std::string leased = table.Add(1, absl::Seconds(10), "alice");
  EXPECT_EQ(table.AddLease(leased, "bob").code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(table.AddLease(leased, "alice").ok());
  ASSERT_TRUE(table.AddLease(leased, "alice").ok());
  now_ += absl::Minutes(30);  // idle far past its timeout: leased, it stays
  EXPECT_TRUE(table.TakeExpired().empty());
  table.DropLease(leased);  // one lease left
  now_ += absl::Minutes(1);
  EXPECT_TRUE(table.TakeExpired().empty());
  table.DropLease(leased);  // the last: the grace starts
  now_ += absl::Seconds(4);
  EXPECT_TRUE(table.TakeExpired().empty());
  // A new lease within the grace keeps it.
  ASSERT_TRUE(table.AddLease(leased, "alice").ok());
  now_ += absl::Seconds(2);
  EXPECT_TRUE(table.TakeExpired().empty());
  table.DropLease(leased);
  now_ += absl::Seconds(5);
  auto expired = table.TakeExpired();
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].token, leased);
  EXPECT_EQ(expired[0].why, SessionTable::Expiry::kLeaseEnded);
}

TEST_F(SessionTableTest, TheLastLeaseEndingWakesTheExpiryForItsGrace) {
  SessionTable table([this] { return now_; }, "", absl::Seconds(5));
  int wakes = 0;
  table.SetExpiryWake([&wakes] { ++wakes; });
  EXPECT_EQ(table.TimeToNextExpiry(), absl::InfiniteDuration());
  std::string leased = table.Add(1, absl::Minutes(10), "alice");
  // The idle timeout is the only thing due: the table woke the job for it.
  EXPECT_EQ(table.TimeToNextExpiry(), absl::Minutes(10));
  EXPECT_EQ(wakes, 1);
  ASSERT_TRUE(table.AddLease(leased, "alice").ok());
  now_ += absl::Seconds(30);
  table.DropLease(leased);
  // The grace ends long before the idle timeout: the job is woken for it and
  // sleeps until then, not until its next tick.
  EXPECT_EQ(wakes, 2);
  EXPECT_EQ(table.TimeToNextExpiry(), absl::Seconds(5));
  // A later due time does not wake it again.
  table.Add(2, absl::Minutes(20), "alice");
  EXPECT_EQ(wakes, 2);
  now_ += absl::Seconds(5);
  // Due now: no wait, never a negative one.
  EXPECT_EQ(table.TimeToNextExpiry(), absl::ZeroDuration());
  now_ += absl::Seconds(1);
  EXPECT_EQ(table.TimeToNextExpiry(), absl::ZeroDuration());
  ASSERT_EQ(table.TakeExpired().size(), 1u);
  // What is left is due by the table's clock, whatever the wall clock says:
  // the first session's old idle entry (it is gone; the job wakes for it and
  // drops it), then the second session's.
  EXPECT_EQ(table.TimeToNextExpiry(), absl::Minutes(10) - absl::Seconds(36));
  now_ += absl::Minutes(10);
  EXPECT_TRUE(table.TakeExpired().empty());
  EXPECT_EQ(table.TimeToNextExpiry(), absl::Minutes(10) - absl::Seconds(6));
}

TEST_F(SessionTableTest, ExpiryLooksOnlyAtDueSessions) {
  // Many sessions, used again and again: each check finds the one due.
  std::vector<std::string> tokens;
  for (int i = 0; i < 1000; ++i) tokens.push_back(table_.Add(i + 1, absl::Seconds(10)));
  for (int round = 0; round < 5; ++round) {
    now_ += absl::Seconds(3);
    for (int i = 1; i < 1000; ++i) {
      ASSERT_TRUE(table_.BeginCall(tokens[i]).ok());
      table_.EndCall(tokens[i]);
    }
    auto expired = table_.TakeExpired();
    if (round < 3) EXPECT_TRUE(expired.empty()) << round;
    if (round == 3) {
      ASSERT_EQ(expired.size(), 1u);
      EXPECT_EQ(expired[0].token, tokens[0]);
    }
  }
  EXPECT_EQ(table_.size(), 999u);
}

}  // namespace
}  // namespace pyexec

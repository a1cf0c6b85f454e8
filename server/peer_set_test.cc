#include "server/peer_set.h"

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "grpcpp/create_channel.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

PeerSetOptions Options(std::vector<std::string> entries, std::string self) {
  PeerSetOptions o;
  o.entries = std::move(entries);
  o.self_address = std::move(self);
  // Channels are lazy: nothing is dialled by these tests.
  o.make_channel = [](const std::string& address) {
    return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  };
  return o;
}

TEST(ReplicaIdTest, StableShortAndDistinct) {
  EXPECT_EQ(ReplicaId("10.0.0.1:50051"), ReplicaId("10.0.0.1:50051"));
  EXPECT_NE(ReplicaId("10.0.0.1:50051"), ReplicaId("10.0.0.2:50051"));
  EXPECT_EQ(ReplicaId("10.0.0.1:50051").size(), 16u);
  EXPECT_EQ(ReplicaId(""), "cbf29ce484222325");  // FNV-1a 64 offset basis
}

TEST(ReplicaIdTest, OfToken) {
  EXPECT_EQ(ReplicaIdOfToken("abc.0123"), "abc");
  EXPECT_EQ(ReplicaIdOfToken("0123456789abcdef0123456789abcdef"), "");
  EXPECT_EQ(ReplicaIdOfToken(""), "");
}

TEST(PeerSetTest, RejectsBadEntries) {
  for (const char* bad : {"nohost", ":50051", "host:0", "host:x", "::1:50051",
                          "http://host:1", "dns:host:1", "dns:///host"}) {
    auto set = PeerSet::Create(Options({bad}, "a:1"));
    ASSERT_FALSE(set.ok()) << bad;
    EXPECT_THAT(set.status().message(), HasSubstr(bad));
  }
  EXPECT_FALSE(PeerSet::Create(Options({}, "a:1")).ok());
  EXPECT_TRUE(PeerSet::Create(Options({"[::1]:50051", "h:1"}, "h:1")).ok());
}

TEST(PeerSetTest, StaticPeersAreFoundByIdOnly) {
  auto set = PeerSet::Create(Options({"10.0.0.1:50051", "10.0.0.2:50051"},
                                     "10.0.0.1:50051"));
  ASSERT_TRUE(set.ok());
  (*set)->Start();
  EXPECT_EQ((*set)->size(), 2);
  EXPECT_EQ((*set)->self_id(), ReplicaId("10.0.0.1:50051"));
  auto other = (*set)->Find(ReplicaId("10.0.0.2:50051"));
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->address, "10.0.0.2:50051");
  EXPECT_NE(other->stub, nullptr);
  // Ourselves: listed, but never given a channel.
  EXPECT_EQ((*set)->Find((*set)->self_id())->stub, nullptr);
  // An address a client might put in a token is not a peer.
  EXPECT_EQ((*set)->Find(ReplicaId("evil.example:443")), nullptr);
  EXPECT_EQ((*set)->Find("10.0.0.2:50051"), nullptr);
}

TEST(PeerSetTest, DnsEntriesAreResolvedAgainAndKeepChannels) {
  absl::Mutex mu;
  std::vector<std::string> answer = {"10.0.0.1", "10.0.0.2"};
  bool fail = false;
  int channels = 0;
  PeerSetOptions o = Options({"dns:///pyexec-peers:50051"}, "10.0.0.1:50051");
  o.refresh_interval = absl::Hours(1);  // refreshed by hand below
  o.resolve = [&](const std::string& host) -> absl::StatusOr<std::vector<std::string>> {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(host, "pyexec-peers");
    if (fail) return absl::UnavailableError("no DNS");
    return answer;
  };
  o.make_channel = [&, inner = o.make_channel](const std::string& address) {
    absl::MutexLock lock(&mu);
    ++channels;
    return inner(address);
  };
  auto set = PeerSet::Create(std::move(o));
  ASSERT_TRUE(set.ok());
  (*set)->Start();
  EXPECT_EQ((*set)->size(), 2);
  auto second = (*set)->Find(ReplicaId("10.0.0.2:50051"));
  ASSERT_NE(second, nullptr);

  {
    absl::MutexLock lock(&mu);
    answer = {"10.0.0.1", "10.0.0.2", "10.0.0.3"};
  }
  (*set)->Refresh();
  EXPECT_EQ((*set)->size(), 3);
  // The long-lived channel of a peer that stays is kept.
  EXPECT_EQ((*set)->Find(ReplicaId("10.0.0.2:50051")), second);
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(channels, 2);  // 10.0.0.2, then 10.0.0.3; never ourselves
    fail = true;
  }
  // A failed lookup keeps the last answer.
  (*set)->Refresh();
  EXPECT_EQ((*set)->size(), 3);
  {
    absl::MutexLock lock(&mu);
    fail = false;
    answer = {"10.0.0.1", "10.0.0.3"};
  }
  (*set)->Refresh();
  EXPECT_EQ((*set)->size(), 2);
  EXPECT_EQ((*set)->Find(ReplicaId("10.0.0.2:50051")), nullptr);
  // A caller still holding the removed peer can finish its call.
  EXPECT_NE(second->stub, nullptr);
}

TEST(PeerSetTest, RefreshThreadPicksUpChanges) {
  absl::Mutex mu;
  std::vector<std::string> answer = {"10.0.0.1"};
  PeerSetOptions o = Options({"dns:///peers:7"}, "10.0.0.1:7");
  o.refresh_interval = absl::Milliseconds(20);
  o.resolve = [&](const std::string&) -> absl::StatusOr<std::vector<std::string>> {
    absl::MutexLock lock(&mu);
    return answer;
  };
  auto set = PeerSet::Create(std::move(o));
  ASSERT_TRUE(set.ok());
  (*set)->Start();
  EXPECT_EQ((*set)->size(), 1);
  {
    absl::MutexLock lock(&mu);
    answer = {"10.0.0.1", "10.0.0.9"};
  }
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while ((*set)->Find(ReplicaId("10.0.0.9:7")) == nullptr && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_NE((*set)->Find(ReplicaId("10.0.0.9:7")), nullptr);
}

TEST(PeerSetTest, SystemResolverFindsLocalhost) {
  auto ips = ResolveHost("localhost");
  ASSERT_TRUE(ips.ok()) << ips.status();
  EXPECT_FALSE(ips->empty());
}

}  // namespace
}  // namespace pyexec

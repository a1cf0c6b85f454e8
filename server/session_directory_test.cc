// What a replica remembers of sessions it moved, learned of or ended, as the
// forwarder reads it in one lookup.
#include "server/session_directory.h"

#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

class SessionDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PeerSetOptions options;
    options.entries = {"127.0.0.1:1", "127.0.0.1:2"};
    options.self_address = "127.0.0.1:1";
    // Channels are lazy: nothing is dialled here.
    options.make_channel = [](const std::string& address) {
      return grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    };
    peers_ = std::move(PeerSet::Create(std::move(options)).value());
    peers_->Start();
    other_ = ReplicaId("127.0.0.1:2");
    ASSERT_NE(peers_->Find(other_), nullptr);
    directory_ = std::make_unique<SessionDirectory>(peers_.get(), nullptr);
  }

  std::unique_ptr<PeerSet> peers_;
  std::string other_;
  std::unique_ptr<SessionDirectory> directory_;
};

TEST_F(SessionDirectoryTest, UnknownTokenIsNeitherEndedNorHeldElsewhere) {
  SessionDirectory::Whereabouts known = directory_->Lookup("abc.123");
  EXPECT_FALSE(known.ended_here);
  EXPECT_EQ(known.holder, nullptr);
}

TEST_F(SessionDirectoryTest, MovedTokenNamesItsHolder) {
  directory_->Moved("abc.123", other_);
  SessionDirectory::Whereabouts known = directory_->Lookup("abc.123");
  EXPECT_FALSE(known.ended_here);
  ASSERT_NE(known.holder, nullptr);
  EXPECT_EQ(known.holder->id, other_);
  EXPECT_EQ(directory_->moved_count(), 1u);
}

TEST_F(SessionDirectoryTest, EndedTokenIsEndedHereEvenAfterAMove) {
  directory_->Moved("abc.123", other_);
  directory_->Ended("abc.123");  // it came back, then ended here
  SessionDirectory::Whereabouts known = directory_->Lookup("abc.123");
  EXPECT_TRUE(known.ended_here);
  EXPECT_EQ(known.holder, nullptr);
  EXPECT_FALSE(directory_->Lookup("abc.456").ended_here);
}

TEST_F(SessionDirectoryTest, HolderThatLeftThePeersIsNotNamed) {
  directory_->Moved("abc.123", ReplicaId("127.0.0.1:3"));
  SessionDirectory::Whereabouts known = directory_->Lookup("abc.123");
  EXPECT_FALSE(known.ended_here);
  EXPECT_EQ(known.holder, nullptr);
}

}  // namespace
}  // namespace pyexec

#include "context_pool/worker_connection.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "gtest/gtest.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {
namespace {

class WorkerConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeSocketPair(&pool_end_, &worker_end_).ok());
    fcntl(pool_end_.get(), F_SETFL, O_NONBLOCK);
  }
  void WorkerSends(uint64_t id, int partials = 0) {
    std::string bytes;
    for (int i = 0; i < partials; ++i) {
      internal::WorkerResponse p;
      p.set_id(id);
      p.set_partial(true);
      p.mutable_value()->set_int_(i);
      AppendFrame(p, &bytes);
    }
    internal::WorkerResponse r;
    r.set_id(id);
    AppendFrame(r, &bytes);
    ASSERT_EQ(write(worker_end_.get(), bytes.data(), bytes.size()),
              static_cast<ssize_t>(bytes.size()));
  }
  UniqueFd pool_end_, worker_end_;
};

TEST_F(WorkerConnectionTest, SendsFramesAndReadsThemBack) {
  WorkerConnection c(pool_end_.get(), 1 << 20);
  internal::WorkerRequest request;
  request.set_id(7);
  ASSERT_TRUE(c.Send(request).ok());
  EXPECT_FALSE(c.wants_write());
  std::string payload;
  ASSERT_TRUE(ReadFrame(worker_end_.get(), 1 << 20, &payload).value());
  internal::WorkerRequest got;
  ASSERT_TRUE(ParseFramePayload(payload, &got));
  EXPECT_EQ(got.id(), 7u);

  WorkerSends(7, 2);
  std::vector<uint64_t> ids;
  ASSERT_TRUE(c.Read([&](const std::string& p) {
                 internal::WorkerResponse r;
                 EXPECT_TRUE(ParseFramePayload(p, &r));
                 ids.push_back(r.partial() ? r.value().int_() + 100 : r.id());
                 return true;
               }).ok());
  EXPECT_EQ(ids, (std::vector<uint64_t>{100, 101, 7}));
}

TEST_F(WorkerConnectionTest, APauseKeepsFramesUntilResume) {
  WorkerConnection c(pool_end_.get(), 1 << 20);
  WorkerSends(1, 4);
  int handled = 0;
  WorkerConnection::FrameHandler pause_after_two = [&](const std::string&) {
    if (++handled == 2) c.Pause();
    return true;
  };
  ASSERT_TRUE(c.Read(pause_after_two).ok());
  EXPECT_EQ(handled, 2);
  EXPECT_TRUE(c.paused());
  EXPECT_EQ(c.epoll_events() & EPOLLIN, 0u);
  ASSERT_TRUE(c.Read(pause_after_two).ok());  // paused: reads nothing
  EXPECT_EQ(handled, 2);
  ASSERT_TRUE(c.Resume([&](const std::string&) {
                 ++handled;
                 return true;
               }).ok());
  EXPECT_EQ(handled, 5);
  EXPECT_NE(c.epoll_events() & EPOLLIN, 0u);
}

TEST_F(WorkerConnectionTest, EofAndGarbageAreErrors) {
  WorkerConnection c(pool_end_.get(), 1 << 20);
  const char junk[] = "\xff\xff\xff\xffgarbage";
  ASSERT_EQ(write(worker_end_.get(), junk, sizeof(junk)), static_cast<ssize_t>(sizeof(junk)));
  EXPECT_FALSE(c.Read([](const std::string&) { return true; }).ok());
  UniqueFd a, b;
  ASSERT_TRUE(MakeSocketPair(&a, &b).ok());
  fcntl(a.get(), F_SETFL, O_NONBLOCK);
  WorkerConnection closed(a.get(), 1 << 20);
  b.reset();
  absl::Status s = closed.Read([](const std::string&) { return true; });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("closed its socket"), std::string::npos);
}

}  // namespace
}  // namespace pyexec

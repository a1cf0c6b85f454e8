#include "common/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include "gtest/gtest.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {
namespace {

internal::WorkerRequest Request(int id, const std::string& code) {
  internal::WorkerRequest r;
  r.set_id(id);
  r.mutable_eval()->set_code(code);
  return r;
}

TEST(FrameTest, HeaderIsBigEndianLength) {
  std::string out;
  AppendFrame(Request(1, "x"), &out);
  size_t payload = out.size() - kFrameHeaderBytes;
  EXPECT_EQ(static_cast<unsigned char>(out[0]), 0);
  EXPECT_EQ(static_cast<unsigned char>(out[3]), payload);
}

TEST(FrameTest, DecoderReassemblesFramesSplitAnywhere) {
  std::string stream;
  for (int i = 0; i < 5; ++i) AppendFrame(Request(i, std::string(i * 100, 'a')), &stream);
  FrameDecoder decoder(1 << 20);
  int got = 0;
  // Feed one byte at a time: every split point is exercised.
  for (char c : stream) {
    decoder.Append(&c, 1);
    while (true) {
      auto frame = decoder.Next();
      ASSERT_TRUE(frame.ok());
      if (!frame->has_value()) break;
      internal::WorkerRequest r;
      ASSERT_TRUE(ParseFramePayload(**frame, &r));
      EXPECT_EQ(r.id(), got);
      EXPECT_EQ(r.eval().code().size(), got * 100u);
      ++got;
    }
  }
  EXPECT_EQ(got, 5);
  EXPECT_EQ(decoder.buffered_bytes(), 0u);
}

TEST(FrameTest, OversizedHeaderIsAnError) {
  FrameDecoder decoder(10);
  const char header[] = {0, 0, 0, 11};
  decoder.Append(header, 4);
  EXPECT_EQ(decoder.Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST(FrameTest, GarbagePayloadDoesNotParse) {
  internal::WorkerResponse r;
  EXPECT_FALSE(ParseFramePayload("\xff\xff\xff\xff garbage", &r));
}

TEST(FrameTest, DeepNestingParsesUpToTheFrameLimit) {
  auto nested = [](int depth) {
    internal::WorkerResponse r;
    pyexec::v1::Value* v = r.mutable_value();
    for (int i = 0; i < depth; ++i) {
      v->set_list(true);
      v = v->add_items();
    }
    v->set_int_(1);
    return r.SerializeAsString();
  };
  internal::WorkerResponse r;
  EXPECT_TRUE(ParseFramePayload(nested(120), &r));
  EXPECT_FALSE(ParseFramePayload(nested(kFrameParseRecursionLimit + 5), &r));
}

// A request too deep to parse still names its id, so that the worker can
// answer it with an error instead of leaving the call hanging.
TEST(FrameTest, RequestIdIsReadWithoutParsingTheRest) {
  internal::WorkerRequest r = Request(4242, "x");
  pyexec::v1::Value* v = &(*r.mutable_eval()->mutable_locals())["deep"];
  for (int i = 0; i < kFrameParseRecursionLimit + 20; ++i) {
    v->set_list(true);
    v = v->add_items();
  }
  const std::string payload = r.SerializeAsString();
  internal::WorkerRequest parsed;
  EXPECT_FALSE(ParseFramePayload(payload, &parsed));
  EXPECT_EQ(FrameRequestId(payload), 4242u);
  EXPECT_EQ(FrameRequestId(Request(7, "y").SerializeAsString()), 7u);
  EXPECT_EQ(FrameRequestId(""), 0u);
  EXPECT_EQ(FrameRequestId("\xff\xff garbage"), 0u);
}

TEST(FrameTest, BlockingReadAndWriteOverASocket) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ASSERT_TRUE(WriteFrame(fds[0], Request(7, "hello")).ok());
  std::string payload;
  auto got = ReadFrame(fds[1], 1 << 20, &payload);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got);
  internal::WorkerRequest r;
  ASSERT_TRUE(ParseFramePayload(payload, &r));
  EXPECT_EQ(r.id(), 7u);
  // A partial header then EOF is a truncated frame; EOF alone is clean.
  ASSERT_EQ(write(fds[0], "\0\0", 2), 2);
  close(fds[0]);
  EXPECT_EQ(ReadFrame(fds[1], 1 << 20, &payload).status().code(),
            absl::StatusCode::kDataLoss);
  close(fds[1]);
}

TEST(FrameTest, CleanEofIsFalse) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  close(fds[0]);
  std::string payload;
  auto got = ReadFrame(fds[1], 1 << 20, &payload);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(*got);
  close(fds[1]);
}

}  // namespace
}  // namespace pyexec

#include "context_pool/worker_output.h"

#include <unistd.h>

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Captured {
  absl::Mutex mu;
  std::vector<std::string> lines ABSL_GUARDED_BY(mu);
};

std::unique_ptr<WorkerOutputLog> StartCapturing(Captured* captured,
                                                size_t bytes_per_second = 64 << 10) {
  WorkerOutputLog::Options options;
  options.max_line_bytes = 16;
  options.bytes_per_second = bytes_per_second;
  options.sink = [captured](absl::string_view line) {
    absl::MutexLock lock(&captured->mu);
    captured->lines.emplace_back(line);
  };
  absl::StatusOr<std::unique_ptr<WorkerOutputLog>> log = WorkerOutputLog::Start(options);
  EXPECT_TRUE(log.ok()) << log.status();
  return *std::move(log);
}

void Write(int fd, const std::string& text) {
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
}

TEST(WorkerOutputLogTest, LogsLinesWithControlCharactersEscapedAndCut) {
  Captured captured;
  {
    std::unique_ptr<WorkerOutputLog> log = StartCapturing(&captured);
    Write(log->write_fd(), "hello\n\x1b[2Jforged\rline\n");
    Write(log->write_fd(), "a line that is much too long\nno newline at the end");
  }  // the destructor drains what is left
  absl::MutexLock lock(&captured.mu);
  EXPECT_THAT(captured.lines,
              ElementsAre("hello", "\\x1b[2Jforged\\x0dline", "a line that is m [cut]",
                          "no newline at th [cut]"));
}

TEST(WorkerOutputLogTest, DropsPastItsBudgetAndSaysHowMuch) {
  Captured captured;
  {
    // 10 bytes a second, a burst of 40: four of these lines fit.
    std::unique_ptr<WorkerOutputLog> log = StartCapturing(&captured, 10);
    for (int i = 0; i < 20; ++i) Write(log->write_fd(), "123456789\n");
  }
  absl::MutexLock lock(&captured.mu);
  ASSERT_GE(captured.lines.size(), 5u);
  EXPECT_LT(captured.lines.size(), 10u);
  EXPECT_EQ(captured.lines[0], "123456789");
  EXPECT_THAT(captured.lines.back(), HasSubstr("bytes dropped"));
}

}  // namespace
}  // namespace pyexec

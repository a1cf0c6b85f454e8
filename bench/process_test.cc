#include "bench/process.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

using ::testing::HasSubstr;

TEST(ParseListeningLineTest, Parses) {
  EXPECT_EQ(ParseListeningLine("listening on 127.0.0.1:4242\n"), "127.0.0.1:4242");
  EXPECT_EQ(ParseListeningLine("listening on [::1]:1"), "[::1]:1");
  EXPECT_EQ(ParseListeningLine("starting"), "");
  EXPECT_EQ(ParseListeningLine("listening on "), "");
}

// A fake server: a shell script that prints noise, then the line, then
// keeps printing until stopped.
std::string WriteScript(const std::string& body) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/server.sh";
  FILE* f = fopen(path.c_str(), "w");
  fprintf(f, "#!/bin/sh\n%s\n", body.c_str());
  fclose(f);
  chmod(path.c_str(), 0755);
  return path;
}

TEST(ServerProcessTest, ReadsListeningLineAndStops) {
  const std::string script = WriteScript(
      "echo booting; echo listening on 127.0.0.1:5555; sleep 0.5 & wait; "
      "exec sleep 60");
  absl::StatusOr<std::unique_ptr<ServerProcess>> p =
      ServerProcess::Start({script}, "", absl::Seconds(10));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->address(), "127.0.0.1:5555");
  EXPECT_GT(RssKb((*p)->pid()), 0);
  EXPECT_GE(FdCount((*p)->pid()), 3);
  EXPECT_EQ((*p)->Stop(), "signal 15");
  EXPECT_EQ((*p)->Stop(), "signal 15");  // Idempotent.
}

TEST(ServerProcessTest, SilentServerTimesOut) {
  const std::string script = WriteScript("exec sleep 60");
  absl::StatusOr<std::unique_ptr<ServerProcess>> p =
      ServerProcess::Start({script}, "", absl::Milliseconds(300));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ServerProcessTest, ExitingServerFailsFast) {
  const std::string script = WriteScript("echo oops; exit 3");
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<ServerProcess>> p =
      ServerProcess::Start({script}, "", absl::Seconds(30));
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(p.status().message(), HasSubstr("exit 3"));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

TEST(ServerProcessTest, MissingBinary) {
  EXPECT_EQ(ServerProcess::Start({"/nonexistent/x"}, "", absl::Seconds(1))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

// (ChildPids itself is tested in common/procfs_test.)
TEST(ProcessFiguresTest, AGoneProcessHasNone) {
  const pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  EXPECT_GT(RssKb(child), 0);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(RssKb(child), -1);
  EXPECT_EQ(FdCount(child), -1);
}

void Spin(absl::Duration d) {
  const absl::Time end = absl::Now() + d;
  volatile uint64_t x = 0;
  while (absl::Now() < end) x = x + 1;
}

TEST(ProcessTest, CpuClocksAdvanceWithWork) {
  absl::StatusOr<absl::Duration> self0 = ProcessTreeCpuTime(getpid());
  absl::StatusOr<absl::Duration> machine0 = MachineBusyTime();
  ASSERT_TRUE(self0.ok()) << self0.status();
  ASSERT_TRUE(machine0.ok()) << machine0.status();
  Spin(absl::Milliseconds(200));
  absl::StatusOr<absl::Duration> self1 = ProcessTreeCpuTime(getpid());
  absl::StatusOr<absl::Duration> machine1 = MachineBusyTime();
  ASSERT_TRUE(self1.ok() && machine1.ok());
  // Clock ticks are 10 ms; 200 ms of spinning shows as at least 100 ms.
  EXPECT_GE(*self1 - *self0, absl::Milliseconds(100));
  EXPECT_GE(*machine1 - *machine0, absl::Milliseconds(100));
  EXPECT_FALSE(ProcessTreeCpuTime(-1).ok());
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

#include "context_pool/orphan_reaper.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

// The state letter of `pid` from /proc, or '?' if it is gone.
char StateOf(pid_t pid) {
  FILE* f = fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return '?';
  char buf[512] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  std::string text(buf, n);
  size_t close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() ? '?' : text[close + 2];
}

// Waits until `pid` is a zombie (or gone); true if it became a zombie.
bool WaitZombie(pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    char s = StateOf(pid);
    if (s == 'Z') return true;
    if (s == '?') return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

// This test process stands in for pyexecd as PID 1 of a container: a child
// subreaper, to which orphans are re-parented.
class OrphanReaperTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0); }
  void TearDown() override { prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

TEST_F(OrphanReaperTest, ReapsAProcessLeftBehindByItsWorker) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  // "worker": leads its own group, starts "user code" in that group, tells
  // us its pid and exits, so the user process is re-parented to us.
  pid_t worker = fork();
  ASSERT_GE(worker, 0);
  if (worker == 0) {
    setpgid(0, 0);
    pid_t user = fork();
    if (user == 0) {
      pause();
      _exit(0);
    }
    (void)!write(fds[1], &user, sizeof(user));
    _exit(0);
  }
  close(fds[1]);
  pid_t user = 0;
  ASSERT_EQ(read(fds[0], &user, sizeof(user)), static_cast<ssize_t>(sizeof(user)));
  close(fds[0]);
  ASSERT_EQ(waitpid(worker, nullptr, 0), worker);
  // The pool kills the dead worker's group; the orphan becomes our zombie.
  kill(user, SIGKILL);
  ASSERT_TRUE(WaitZombie(user));
  EXPECT_EQ(ReapOrphanedChildren(), 1);
  EXPECT_EQ(StateOf(user), '?');
  EXPECT_EQ(ReapOrphanedChildren(), 0);
}

TEST_F(OrphanReaperTest, WithExitsWatchedItScansOnlyAfterAnExit) {
  WatchChildExits();
  EXPECT_EQ(ReapOrphanedChildren(), 0);  // the first call scans
  // A child that is not a group leader dies: its SIGCHLD makes the next call
  // scan and reap it, and the one after that scans nothing.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  ASSERT_TRUE(WaitZombie(child));
  EXPECT_EQ(ReapOrphanedChildren(), 1);
  EXPECT_EQ(StateOf(child), '?');
  EXPECT_EQ(ReapOrphanedChildren(), 0);
  signal(SIGCHLD, SIG_DFL);
}

TEST_F(OrphanReaperTest, NothingToDoWhereOrphansGoElsewhere) {
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  ASSERT_TRUE(WaitZombie(child));
  EXPECT_EQ(ReapOrphanedChildren(), 0);  // not PID 1, not a subreaper
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
}

TEST_F(OrphanReaperTest, LeavesGroupLeadersToThePool) {
  // A worker (its own group leader) that died: the pool reaps it, to read
  // its exit status; the reaper must not take it.
  pid_t worker = fork();
  ASSERT_GE(worker, 0);
  if (worker == 0) {
    setpgid(0, 0);
    _exit(3);
  }
  ASSERT_TRUE(WaitZombie(worker));
  EXPECT_EQ(ReapOrphanedChildren(), 0);
  int status = 0;
  ASSERT_EQ(waitpid(worker, &status, 0), worker);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
}

}  // namespace
}  // namespace pyexec

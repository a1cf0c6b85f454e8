#include "worker/worker_guard.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

// Forks a child that leads its own process group and waits forever; it
// writes the pid of a grandchild in its group (also waiting) to `pipe_w`.
pid_t ForkGroupLeader(int pipe_w) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    pid_t grandchild = fork();
    if (grandchild == 0) {
      pause();
      _exit(0);
    }
    if (write(pipe_w, &grandchild, sizeof(grandchild)) != sizeof(grandchild)) _exit(1);
    pause();
    _exit(0);
  }
  return pid;
}

bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

// The grandchild is not our child: poll until it is gone (or 5 s).
bool GoneWithin5s(pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    if (!Alive(pid)) return true;
    usleep(10000);
  }
  return false;
}

class WorkerGuardTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(pipe(pipe_), 0); }
  void TearDown() override {
    close(pipe_[0]);
    close(pipe_[1]);
  }
  pid_t ReadGrandchild() {
    pid_t grandchild = 0;
    EXPECT_EQ(read(pipe_[0], &grandchild, sizeof(grandchild)),
              static_cast<ssize_t>(sizeof(grandchild)));
    return grandchild;
  }
  int pipe_[2];
};

TEST_F(WorkerGuardTest, KillsAGuardedWorkerWithItsGroup) {
  WorkerGuard guard;
  const uint64_t before = WorkerGuard::BootTicksNow();
  pid_t worker = ForkGroupLeader(pipe_[1]);
  ASSERT_GT(worker, 0);
  guard.Add(worker, before, WorkerGuard::BootTicksNow());
  pid_t grandchild = ReadGrandchild();
  ASSERT_TRUE(Alive(grandchild));

  EXPECT_EQ(guard.KillAll(), 1);
  int status = 0;
  ASSERT_EQ(waitpid(worker, &status, 0), worker);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(GoneWithin5s(grandchild)) << "the worker's group survived";
}

TEST_F(WorkerGuardTest, KillsTheGroupOfAWorkerAlreadyReaped) {
  // Once pyexecd is dead, a worker whose socket closed may exit and be
  // reaped by init before the zygote kills it; what its user code started
  // still runs in its group (found by test_zygote under load in CI).
  WorkerGuard guard;
  const uint64_t before = WorkerGuard::BootTicksNow();
  pid_t worker = ForkGroupLeader(pipe_[1]);
  ASSERT_GT(worker, 0);
  guard.Add(worker, before, WorkerGuard::BootTicksNow());
  pid_t grandchild = ReadGrandchild();
  ASSERT_EQ(kill(worker, SIGKILL), 0);
  ASSERT_EQ(waitpid(worker, nullptr, 0), worker);
  ASSERT_TRUE(Alive(grandchild));

  EXPECT_EQ(guard.KillAll(), 1);
  EXPECT_TRUE(GoneWithin5s(grandchild)) << "the reaped worker's group survived";
}

TEST_F(WorkerGuardTest, KeepsWatchingAnExitedWorkerWhileItsGroupLives) {
  WorkerGuard guard;
  const uint64_t before = WorkerGuard::BootTicksNow();
  pid_t worker = ForkGroupLeader(pipe_[1]);
  ASSERT_GT(worker, 0);
  guard.Add(worker, before, WorkerGuard::BootTicksNow());
  pid_t grandchild = ReadGrandchild();
  ASSERT_EQ(kill(worker, SIGKILL), 0);
  ASSERT_EQ(waitpid(worker, nullptr, 0), worker);
  // Enough adds of workers gone with their groups to prune the list.
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  ASSERT_EQ(waitpid(gone, nullptr, 0), gone);
  const uint64_t now = WorkerGuard::BootTicksNow();
  for (int i = 0; i < 64; ++i) guard.Add(gone, now, now);
  EXPECT_EQ(guard.size(), 2u);  // the group's worker and the 65th add
  EXPECT_EQ(guard.KillAll(), 1);
  EXPECT_TRUE(GoneWithin5s(grandchild));
}

TEST_F(WorkerGuardTest, LeavesAPidAloneThatStartedOutsideItsWindow) {
  // As if the worker had exited long ago and the kernel had given its pid to
  // this process since.
  WorkerGuard guard;
  pid_t other = ForkGroupLeader(pipe_[1]);
  ASSERT_GT(other, 0);
  pid_t grandchild = ReadGrandchild();
  const uint64_t now = WorkerGuard::BootTicksNow();
  ASSERT_GT(now, 1000u);
  guard.Add(other, now - 1000, now - 900);

  EXPECT_EQ(guard.KillAll(), 0);
  usleep(50000);
  EXPECT_TRUE(Alive(other));
  EXPECT_TRUE(Alive(grandchild));
  kill(-other, SIGKILL);
  waitpid(other, nullptr, 0);
}

TEST_F(WorkerGuardTest, AdoptsTheLiveChildrenOfAProcess) {
  pid_t a = ForkGroupLeader(pipe_[1]);
  pid_t grandchild_a = ReadGrandchild();
  pid_t b = ForkGroupLeader(pipe_[1]);
  pid_t grandchild_b = ReadGrandchild();
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);

  WorkerGuard guard;
  // `b` plays the adopting zygote itself: not adopted.
  EXPECT_EQ(guard.AdoptChildrenOf(getpid(), b), 1);
  EXPECT_EQ(guard.KillAll(), 1);
  int status = 0;
  ASSERT_EQ(waitpid(a, &status, 0), a);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(GoneWithin5s(grandchild_a));
  EXPECT_TRUE(Alive(b));
  EXPECT_TRUE(Alive(grandchild_b));
  kill(-b, SIGKILL);
  waitpid(b, nullptr, 0);
}

TEST_F(WorkerGuardTest, ForgetsExitedWorkersAsTheListGrows) {
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  ASSERT_EQ(waitpid(gone, nullptr, 0), gone);
  WorkerGuard guard;
  const uint64_t now = WorkerGuard::BootTicksNow();
  for (int i = 0; i < 64; ++i) guard.Add(gone, now, now);
  EXPECT_EQ(guard.size(), 64u);
  guard.Add(gone, now, now);  // the 65th add prunes the 64 dead ones first
  EXPECT_EQ(guard.size(), 1u);
  EXPECT_EQ(guard.KillAll(), 0);
}

}  // namespace
}  // namespace pyexec

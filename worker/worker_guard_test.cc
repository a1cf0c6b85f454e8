#include "worker/worker_guard.h"

#include <signal.h>
#include <seccomp.h>
#include <sys/prctl.h>
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

// `leader`, our child, died of SIGKILL, and so did `grandchild`, of its group.
void ExpectKilledWithItsGroup(pid_t leader, pid_t grandchild) {
  int status = 0;
  ASSERT_EQ(waitpid(leader, &status, 0), leader);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_TRUE(GoneWithin5s(grandchild)) << "the group of " << leader << " survived";
}

// `leader` and `grandchild`, of its group, still run; ends them.
void ExpectLeftAliveThenEnd(pid_t leader, pid_t grandchild) {
  EXPECT_TRUE(Alive(leader));
  EXPECT_TRUE(Alive(grandchild));
  kill(-leader, SIGKILL);
  waitpid(leader, nullptr, 0);
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
  ExpectKilledWithItsGroup(worker, grandchild);
}

TEST_F(WorkerGuardTest, KillsTheGroupMemberByMemberWhenGroupSignalsAreRefused) {
  // The zygote may run under its workers' seccomp filter, which refuses
  // kill() of a negative pid: the guard must still end what the worker's
  // user code started, also when it kills the worker before the worker,
  // seeing pyexecd gone, ends its own group.
  int grandchild_pipe[2];
  ASSERT_EQ(pipe(grandchild_pipe), 0);
  pid_t zygote = fork();
  if (zygote == 0) {
    WorkerGuard guard;
    const uint64_t before = WorkerGuard::BootTicksNow();
    pid_t worker = ForkGroupLeader(pipe_[1]);
    guard.Add(worker, before, WorkerGuard::BootTicksNow());
    pid_t grandchild = ReadGrandchild();
    if (write(grandchild_pipe[1], &grandchild, sizeof(grandchild)) != sizeof(grandchild)) _exit(1);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    scmp_arg_cmp negative = SCMP_CMP32(0, SCMP_CMP_MASKED_EQ, 0x80000000u, 0x80000000u);
    if (ctx == nullptr ||
        seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(kill), 1, &negative) != 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || seccomp_load(ctx) != 0) {
      _exit(2);
    }
    if (kill(-worker, SIGKILL) == 0 || errno != EPERM) _exit(3);  // the filter holds
    _exit(guard.KillAll() == 1 ? 0 : 4);
  }
  ASSERT_GT(zygote, 0);
  pid_t grandchild = 0;
  ASSERT_EQ(read(grandchild_pipe[0], &grandchild, sizeof(grandchild)),
            static_cast<ssize_t>(sizeof(grandchild)));
  close(grandchild_pipe[0]);
  close(grandchild_pipe[1]);
  int status = 0;
  ASSERT_EQ(waitpid(zygote, &status, 0), zygote);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(GoneWithin5s(grandchild)) << "the worker's group survived a filtered guard";
  kill(grandchild, SIGKILL);
}

TEST_F(WorkerGuardTest, KillProcessGroupsEndsEveryMember) {
  pid_t a = ForkGroupLeader(pipe_[1]);
  pid_t grandchild_a = ReadGrandchild();
  pid_t b = ForkGroupLeader(pipe_[1]);
  pid_t grandchild_b = ReadGrandchild();
  KillProcessGroups({a});
  ExpectKilledWithItsGroup(a, grandchild_a);
  ExpectLeftAliveThenEnd(b, grandchild_b);
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
  ExpectLeftAliveThenEnd(other, grandchild);
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
  ExpectKilledWithItsGroup(a, grandchild_a);
  ExpectLeftAliveThenEnd(b, grandchild_b);
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

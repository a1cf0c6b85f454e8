#include "context_pool/uid_pool.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

TEST(UidPoolTest, ParsesRanges) {
  auto range = UidPool::ParseRange("40000-40099");
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->first, 40000u);
  EXPECT_EQ(range->second, 40099u);
  for (const char* bad : {"", "40000", "5-4", "0-10", "a-b", "1-2-3", "-5"}) {
    EXPECT_FALSE(UidPool::ParseRange(bad).ok()) << bad;
  }
}

TEST(UidPoolTest, HandsOutEachUidOnceAndAgainOnlyWhenItsGroupIsGone) {
  UidPool pool(50000, 2, /*processes_stay_in_group=*/true);
  absl::StatusOr<uint32_t> a = pool.Take();
  absl::StatusOr<uint32_t> b = pool.Take();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(pool.Take().status().code(), absl::StatusCode::kResourceExhausted);

  // A worker's group with a process left: its uid stays out.
  pid_t straggler = fork();
  if (straggler == 0) {
    setpgid(0, 0);
    pause();
    _exit(0);
  }
  setpgid(straggler, straggler);
  pool.Return(*a, straggler);
  EXPECT_EQ(pool.Take().status().code(), absl::StatusCode::kResourceExhausted);
  kill(straggler, SIGKILL);
  waitpid(straggler, nullptr, 0);
  absl::StatusOr<uint32_t> again = pool.Take();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *a);
}

TEST(UidPoolTest, WithoutTheFilterAnyProcessOfTheUidKeepsItOut) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a process as another uid";
  UidPool pool(50100, 1, /*processes_stay_in_group=*/false);
  absl::StatusOr<uint32_t> uid = pool.Take();
  ASSERT_TRUE(uid.ok());
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  // Escaped its worker's group: a new session, same uid.
  pid_t escaped = fork();
  if (escaped == 0) {
    setsid();
    if (setresuid(*uid, *uid, *uid) != 0) _exit(1);
    close(ready[1]);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 0);  // the child switched uid
  close(ready[0]);
  pool.Return(*uid, /*pgid=*/999999);
  EXPECT_EQ(pool.Take().status().code(), absl::StatusCode::kResourceExhausted);
  kill(escaped, SIGKILL);
  waitpid(escaped, nullptr, 0);
  EXPECT_TRUE(pool.Take().ok());
}

}  // namespace
}  // namespace pyexec

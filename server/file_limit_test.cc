#include "server/file_limit.h"

#include <sys/resource.h>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

TEST(FileLimitTest, RaisesTheSoftLimitToTheHardOne) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  rlimit lowered = before;
  lowered.rlim_cur = std::min<rlim_t>(before.rlim_max, 256);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  EXPECT_EQ(RaiseOpenFileLimit(), before.rlim_max);
  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &before), 0);
}

TEST(FileLimitTest, WarnsOnlyWhenThePoolCannotFit) {
  EXPECT_EQ(FileLimitWarning(20000, 16, 4), "");
  EXPECT_EQ(FileLimitWarning(RLIM_INFINITY, 100000, 4), "");
  std::string warning = FileLimitWarning(1024, 10000, 4);
  EXPECT_NE(warning.find("--max_workers=10000"), std::string::npos) << warning;
  EXPECT_NE(warning.find("10516"), std::string::npos) << warning;  // 10000 + 4 + 512
}

}  // namespace
}  // namespace pyexec

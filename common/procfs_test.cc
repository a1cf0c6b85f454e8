#include "common/procfs.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

TEST(ProcfsTest, ChildPidsSeesAForkedChild) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    pause();
    _exit(0);
  }
  std::vector<pid_t> children = ChildPids(getpid());
  EXPECT_NE(std::find(children.begin(), children.end(), child), children.end());
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(ChildPids(-1).empty());
}

TEST(ProcfsTest, ProcStatFieldsOfThisProcess) {
  std::vector<std::string> f = ProcStatFields(getpid());
  ASSERT_GT(f.size(), 14u);
  EXPECT_EQ(f[0], "R");  // running: it is reading its own stat
  EXPECT_EQ(f[1], std::to_string(getppid()));
  EXPECT_EQ(f[2], std::to_string(getpgrp()));
  EXPECT_TRUE(ProcStatFields(-1).empty());
}

TEST(ProcfsTest, ReadProcFileReadsAndSaysNothingOfMissingFiles) {
  EXPECT_NE(ReadProcFile(absl::StrCat("/proc/", getpid(), "/status")).find("Pid:"),
            std::string::npos);
  EXPECT_EQ(ReadProcFile("/proc/no/such/file"), "");
}

}  // namespace
}  // namespace pyexec

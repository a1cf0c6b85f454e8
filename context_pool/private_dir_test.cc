#include "context_pool/private_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"

namespace pyexec {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

void Touch(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT, 0600);
  ASSERT_GE(fd, 0) << path;
  close(fd);
}

TEST(PrivateDirTest, CreatesUnguessablePrivateDirectories) {
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok()) << root.status();
  struct stat st;
  ASSERT_EQ(stat(root->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0711);

  absl::StatusOr<std::string> a = CreatePrivateDir(*root, -1, -1);
  absl::StatusOr<std::string> b = CreatePrivateDir(*root, -1, -1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->size(), root->size() + 3 + 32);
  ASSERT_EQ(stat(a->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
  if (geteuid() == 0) {
    absl::StatusOr<std::string> owned = CreatePrivateDir(*root, 65534, 65534);
    ASSERT_TRUE(owned.ok());
    ASSERT_EQ(stat(owned->c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);
    EXPECT_EQ(st.st_gid, 65534u);
  }
  EXPECT_TRUE(RemoveTree(*root).ok());
  EXPECT_FALSE(Exists(*root));
}

TEST(PrivateDirTest, RemoveTreeDeletesEverythingButFollowsNoSymlink) {
  char outside_dir[] = "/tmp/private_dir_test_outside.XXXXXX";
  ASSERT_NE(mkdtemp(outside_dir), nullptr);
  const std::string outside(outside_dir);
  Touch(outside + "/keep");

  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  absl::StatusOr<std::string> dir = CreatePrivateDir(*root, -1, -1);
  ASSERT_TRUE(dir.ok());
  ASSERT_EQ(mkdir((*dir + "/a").c_str(), 0700), 0);
  ASSERT_EQ(mkdir((*dir + "/a/b").c_str(), 0000), 0);  // no rights: still removed
  Touch(*dir + "/a/file");
  ASSERT_EQ(symlink(outside.c_str(), (*dir + "/a/link_to_dir").c_str()), 0);
  ASSERT_EQ(symlink((outside + "/keep").c_str(), (*dir + "/link_to_file").c_str()), 0);

  EXPECT_TRUE(RemoveTree(*dir).ok());
  EXPECT_FALSE(Exists(*dir));
  EXPECT_TRUE(Exists(outside + "/keep"));
  EXPECT_TRUE(RemoveTree(*dir).ok());  // already gone: fine

  // A root that is itself a symlink is refused, not followed.
  const std::string link = *root + "/link";
  ASSERT_EQ(symlink(outside.c_str(), link.c_str()), 0);
  EXPECT_FALSE(RemoveTree(link).ok());
  EXPECT_TRUE(Exists(outside + "/keep"));
  unlink(link.c_str());
  RemoveTree(*root).IgnoreError();
  RemoveTree(outside).IgnoreError();
}

}  // namespace
}  // namespace pyexec

#include "context_pool/private_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <dirent.h>
#include <string.h>

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

bool IsEmptyDir(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  DIR* dir = fdopendir(fd);
  int entries = 0;
  while (dirent* e = readdir(dir)) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) ++entries;
  }
  closedir(dir);
  return entries == 0;
}

TEST(PrivateDirTest, RecycledDirectoryIsEmptyPrivateAndRenamed) {
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  absl::StatusOr<std::string> dir = CreatePrivateDir(*root, -1, -1);
  ASSERT_TRUE(dir.ok());
  // What a session may leave behind: files, a tree, open modes, an xattr.
  ASSERT_EQ(mkdir((*dir + "/a").c_str(), 0777), 0);
  Touch(*dir + "/a/file");
  Touch(*dir + "/secret");
  ASSERT_EQ(chmod(dir->c_str(), 0777), 0);
  const bool has_xattr = setxattr(dir->c_str(), "user.note", "x", 1, 0) == 0;

  absl::StatusOr<std::string> fresh = RecyclePrivateDir(*root, *dir, -1, -1);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_NE(*fresh, *dir);
  EXPECT_EQ(fresh->size(), dir->size());
  EXPECT_FALSE(Exists(*dir));  // the old name is gone
  EXPECT_TRUE(IsEmptyDir(*fresh));
  struct stat st;
  ASSERT_EQ(stat(fresh->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
  if (has_xattr) {
    char value[8];
    EXPECT_LT(getxattr(fresh->c_str(), "user.note", value, sizeof(value)), 0);
  }
  RemoveTree(*root).IgnoreError();
}

TEST(PrivateDirTest, PrivateDirsHandsOnADirectoryOnlyOnceItsGroupIsGone) {
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  {
    PrivateDirs dirs(*root, -1, -1, /*recycle=*/true);
    absl::StatusOr<std::string> a = dirs.Take();
    ASSERT_TRUE(a.ok());
    Touch(*a + "/left_behind");

    // A process still in the worker's group: removed, not recycled.
    pid_t straggler = fork();
    if (straggler == 0) {
      setpgid(0, 0);
      pause();
      _exit(0);
    }
    ASSERT_GT(straggler, 0);
    ASSERT_EQ(setpgid(straggler, straggler) == 0 || errno == EACCES, true);
    dirs.Return(*a, straggler);
    EXPECT_FALSE(Exists(*a));
    EXPECT_EQ(dirs.spare_count(), 0u);
    kill(straggler, SIGKILL);
    waitpid(straggler, nullptr, 0);

    // The group is gone (reaped): recycled under a new name, then handed out.
    absl::StatusOr<std::string> b = dirs.Take();
    ASSERT_TRUE(b.ok());
    Touch(*b + "/left_behind");
    dirs.Return(*b, straggler);
    EXPECT_FALSE(Exists(*b));
    EXPECT_EQ(dirs.spare_count(), 1u);
    absl::StatusOr<std::string> c = dirs.Take();
    ASSERT_TRUE(c.ok());
    EXPECT_NE(*c, *b);
    EXPECT_TRUE(IsEmptyDir(*c));
    EXPECT_EQ(dirs.spare_count(), 0u);

    // Without recycling (no seccomp filter), a returned directory goes.
    PrivateDirs plain(*root, -1, -1, /*recycle=*/false);
    absl::StatusOr<std::string> d = plain.Take();
    ASSERT_TRUE(d.ok());
    plain.Return(*d, straggler);
    EXPECT_FALSE(Exists(*d));
    EXPECT_EQ(plain.spare_count(), 0u);

    dirs.Return(*c, straggler);
    EXPECT_EQ(dirs.spare_count(), 1u);
  }
  // Spares go with their PrivateDirs.
  EXPECT_TRUE(IsEmptyDir(*root));
  RemoveTree(*root).IgnoreError();
}

}  // namespace
}  // namespace pyexec

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
    dirs.Flush();
    EXPECT_FALSE(Exists(*a));
    EXPECT_EQ(dirs.spare_count(), 0u);
    kill(straggler, SIGKILL);
    waitpid(straggler, nullptr, 0);

    // The group is gone (reaped): recycled under a new name, then handed out.
    absl::StatusOr<std::string> b = dirs.Take();
    ASSERT_TRUE(b.ok());
    Touch(*b + "/left_behind");
    dirs.Return(*b, straggler);
    dirs.Flush();
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
    plain.Flush();
    EXPECT_FALSE(Exists(*d));
    EXPECT_EQ(plain.spare_count(), 0u);

    dirs.Return(*c, straggler);
    dirs.Flush();
    EXPECT_EQ(dirs.spare_count(), 1u);
  }
  // Spares go with their PrivateDirs.
  EXPECT_TRUE(IsEmptyDir(*root));
  RemoveTree(*root).IgnoreError();
}

int OpenFdCount() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
  closedir(dir);
  return n;
}

// A session that left a tree far deeper than any descriptor budget: it is
// removed whole, and no descriptor is left open.
TEST(PrivateDirTest, RemovesTreesOfAnyDepthWithoutLeakingDescriptors) {
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  absl::StatusOr<std::string> dir = CreatePrivateDir(*root, -1, -1);
  ASSERT_TRUE(dir.ok());
  const int before = OpenFdCount();
  for (int round = 0; round < 3; ++round) {
    // os.makedirs('d/' * 300), plus files along the way and a second branch.
    int fd = open(dir->c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd, 0);
    for (int depth = 0; depth < 300; ++depth) {
      ASSERT_EQ(mkdirat(fd, "d", 0700), 0) << depth;
      if (depth % 50 == 0) {
        ASSERT_EQ(mkdirat(fd, "e", 0700), 0);
        close(openat(fd, "f", O_WRONLY | O_CREAT, 0600));
      }
      int child = openat(fd, "d", O_RDONLY | O_DIRECTORY);
      close(fd);
      fd = child;
      ASSERT_GE(fd, 0);
    }
    close(fd);
    absl::StatusOr<std::string> fresh = RecyclePrivateDir(*root, *dir, -1, -1);
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    EXPECT_TRUE(IsEmptyDir(*fresh));
    dir = fresh;
  }
  EXPECT_EQ(OpenFdCount(), before);
  // RemoveTree too.
  ASSERT_EQ(mkdir((*dir + "/x").c_str(), 0700), 0);
  std::string deep = *dir + "/x";
  for (int depth = 0; depth < 100; ++depth) {
    deep += "/d";
    ASSERT_EQ(mkdir(deep.c_str(), 0700), 0);
  }
  EXPECT_TRUE(RemoveTree(*dir).ok());
  EXPECT_FALSE(Exists(*dir));
  EXPECT_EQ(OpenFdCount(), before);
  RemoveTree(*root).IgnoreError();
}

TEST(PrivateDirTest, DiskUsageCountsBlocksAndRefusesTreesTooDeepToMeasure) {
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  absl::StatusOr<std::string> dir = CreatePrivateDir(*root, -1, -1);
  ASSERT_TRUE(dir.ok());
  int fd = open((*dir + "/data").c_str(), O_WRONLY | O_CREAT, 0600);
  std::string block(1 << 20, 'x');
  ASSERT_EQ(write(fd, block.data(), block.size()), static_cast<ssize_t>(block.size()));
  close(fd);
  absl::StatusOr<uint64_t> used = DiskUsage(*dir, 1ull << 40);
  ASSERT_TRUE(used.ok()) << used.status();
  EXPECT_GE(*used, 1u << 20);
  std::string deep = *dir;
  for (int depth = 0; depth <= kMaxMeasuredDepth + 1; ++depth) {
    deep += "/d";
    ASSERT_EQ(mkdir(deep.c_str(), 0700), 0);
  }
  EXPECT_EQ(DiskUsage(*dir, 1ull << 40).status().code(),
            absl::StatusCode::kFailedPrecondition);
  RemoveTree(*root).IgnoreError();
}

// A worker whose directory grows past the cap is killed with its group, and
// the verdict says why.
TEST(PrivateDirTest, KillsAWorkerPastTheDiskCap) {
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  PrivateDirs::Options options;
  options.root = *root;
  options.max_disk_bytes = 1 << 20;
  options.disk_check_interval = absl::Milliseconds(20);
  PrivateDirs dirs(options);
  absl::StatusOr<std::string> dir = dirs.Take();
  ASSERT_TRUE(dir.ok());
  pid_t worker = fork();
  if (worker == 0) {
    setpgid(0, 0);
    int fd = open((*dir + "/fill").c_str(), O_WRONLY | O_CREAT, 0600);
    std::string block(1 << 16, 'x');
    for (int i = 0; i < 64; ++i) {
      if (write(fd, block.data(), block.size()) < 0) _exit(2);
      fsync(fd);
    }
    pause();
    _exit(0);
  }
  setpgid(worker, worker);
  dirs.Attach(*dir, worker);
  int status = 0;
  ASSERT_EQ(waitpid(worker, &status, 0), worker);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  std::optional<std::string> verdict = dirs.TakeDiskCapVerdict(worker);
  ASSERT_TRUE(verdict.has_value());
  EXPECT_NE(verdict->find("--worker_max_disk_mb"), std::string::npos) << *verdict;
  EXPECT_FALSE(dirs.TakeDiskCapVerdict(worker).has_value());
  dirs.Return(*dir, worker);
  dirs.Flush();
  EXPECT_FALSE(Exists(*dir));
  RemoveTree(*root).IgnoreError();
}

TEST(PrivateDirTest, TakeHandsADirectoryToTheGivenOwner) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give files away";
  absl::StatusOr<std::string> root = CreatePrivateDirRoot("");
  ASSERT_TRUE(root.ok());
  {
    PrivateDirs dirs(*root, 65534, 65534, /*recycle=*/true);
    absl::StatusOr<std::string> a = dirs.Take(40001, 40001);
    ASSERT_TRUE(a.ok());
    struct stat st;
    ASSERT_EQ(stat(a->c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 40001u);
    dirs.Return(*a, 999999);
    dirs.Flush();
    absl::StatusOr<std::string> b = dirs.Take(40002, 40002);  // a recycled one
    ASSERT_TRUE(b.ok());
    ASSERT_EQ(stat(b->c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 40002u);
    EXPECT_EQ(st.st_gid, 40002u);
    dirs.Discard(*b);
  }
  RemoveTree(*root).IgnoreError();
}

}  // namespace
}  // namespace pyexec

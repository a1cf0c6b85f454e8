#include "context_pool/private_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/thread_name.h"
#include "common/unique_fd.h"

namespace pyexec {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

// Directories open at once while emptying a tree; deeper subtrees are moved
// up (see EmptyTree).
constexpr int kMaxOpenDepth = 32;

// Empties the directory open as `dir_fd` (which it consumes), depth first.
// A subdirectory at kMaxOpenDepth is not entered: it is renamed into `top_fd`
// (the tree's top directory) under a fresh name added to `moved`, to be
// emptied from there.
absl::Status EmptyDirectory(int dir_fd, int top_fd, const std::string& path, int depth,
                            std::vector<std::string>* moved) {
  DIR* dir = fdopendir(dir_fd);
  if (dir == nullptr) {
    absl::Status s = Errno(absl::StrCat("fdopendir ", path));
    close(dir_fd);
    return s;
  }
  absl::Status result;
  while (dirent* entry = readdir(dir)) {
    const char* name = entry->d_name;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) continue;
    if (unlinkat(dirfd(dir), name, 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR) {
      result.Update(Errno(absl::StrCat("unlink ", path, "/", name)));
      continue;
    }
    if (depth + 1 >= kMaxOpenDepth) {
      // renameat works on the open directories: no path is resolved again.
      bool moved_up = false;
      std::string fresh;
      for (int attempt = 0; attempt < 100 && !moved_up; ++attempt) {
        fresh = absl::StrCat(".pyexec-deep-", moved->size(), "-", attempt);
        if (renameat2(dirfd(dir), name, top_fd, fresh.c_str(), RENAME_NOREPLACE) == 0) {
          moved_up = true;
        } else if (errno != EEXIST) {
          break;
        }
      }
      if (moved_up) {
        moved->push_back(std::move(fresh));
      } else {
        result.Update(Errno(absl::StrCat("move up ", path, "/", name)));
      }
      continue;
    }
    // O_NOFOLLOW: a directory swapped for a symlink after readdir is not
    // followed.
    int child = openat(dirfd(dir), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      result.Update(Errno(absl::StrCat("open ", path, "/", name)));
      continue;
    }
    // Its owner may have taken away our search right; as root we need none,
    // but pyexecd may not be root.
    fchmod(child, 0700);
    result.Update(
        EmptyDirectory(child, top_fd, absl::StrCat(path, "/", name), depth + 1, moved));
    if (unlinkat(dirfd(dir), name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      result.Update(Errno(absl::StrCat("rmdir ", path, "/", name)));
    }
  }
  closedir(dir);
  return result;
}

// Empties the directory open as `top_fd` (not consumed), however deep.
absl::Status EmptyTree(int top_fd, const std::string& path) {
  std::vector<std::string> moved;
  int contents = dup(top_fd);  // EmptyDirectory consumes it
  if (contents < 0) return Errno("dup");
  absl::Status result = EmptyDirectory(contents, top_fd, path, 0, &moved);
  while (!moved.empty()) {
    const std::string name = std::move(moved.back());
    moved.pop_back();
    int child = openat(top_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      // ENOENT: the walk of the top directory, still reading it when this
      // one was moved there, has removed it already.
      if (errno != ENOENT) result.Update(Errno(absl::StrCat("open ", path, "/", name)));
      continue;
    }
    fchmod(child, 0700);
    result.Update(EmptyDirectory(child, top_fd, absl::StrCat(path, "/", name), 1, &moved));
    if (unlinkat(top_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      result.Update(Errno(absl::StrCat("rmdir ", path, "/", name)));
    }
  }
  return result;
}

// Adds the disk use of the directory open as `dir_fd` (consumed) to
// `total`, stopping once past `limit`.
absl::Status AddDiskUse(int dir_fd, int depth, uint64_t limit, uint64_t* total) {
  if (depth > kMaxMeasuredDepth) {
    close(dir_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("its files nest deeper than ", kMaxMeasuredDepth, " directories"));
  }
  DIR* dir = fdopendir(dir_fd);
  if (dir == nullptr) {
    close(dir_fd);
    return absl::OkStatus();  // gone meanwhile, or not ours to read
  }
  absl::Status result;
  while (dirent* entry = readdir(dir)) {
    const char* name = entry->d_name;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) continue;
    struct stat st;
    if (fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    *total += static_cast<uint64_t>(st.st_blocks) * 512;
    if (*total > limit) break;
    if (!S_ISDIR(st.st_mode)) continue;
    int child = openat(dirfd(dir), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) continue;
    result = AddDiskUse(child, depth + 1, limit, total);
    if (!result.ok() || *total > limit) break;
  }
  closedir(dir);
  return result;
}

absl::StatusOr<std::string> FreshPrivateDirPath(const std::string& root) {
  char random[16];
  if (getrandom(random, sizeof(random), 0) != sizeof(random)) return Errno("getrandom");
  return absl::StrCat(root, "/w-",
                      absl::BytesToHexString(absl::string_view(random, sizeof(random))));
}

// Removes every extended attribute of the open file `fd`.
absl::Status RemoveExtendedAttributes(int fd, const std::string& path) {
  std::string names(4096, '\0');
  ssize_t n;
  while ((n = flistxattr(fd, names.data(), names.size())) < 0 && errno == ERANGE) {
    names.resize(names.size() * 2);
    if (names.size() > (1 << 20)) return Errno(absl::StrCat("flistxattr ", path));
  }
  if (n < 0) {
    if (errno == ENOTSUP) return absl::OkStatus();  // the filesystem has none
    return Errno(absl::StrCat("flistxattr ", path));
  }
  for (size_t i = 0; i < static_cast<size_t>(n);) {
    const char* name = names.data() + i;
    if (fremovexattr(fd, name) != 0 && errno != ENODATA) {
      return Errno(absl::StrCat("fremovexattr ", path, " ", name));
    }
    i += strlen(name) + 1;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> CreatePrivateDirRoot(const std::string& path) {
  std::string root = path;
  if (root.empty()) {
    const char* tmp = getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/pyexecd-XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) return Errno(absl::StrCat("mkdtemp ", pattern));
    root = pattern;
  }
  if (chmod(root.c_str(), 0711) != 0) return Errno(absl::StrCat("chmod ", root));
  return root;
}

absl::StatusOr<std::string> CreatePrivateDir(const std::string& root, int64_t uid,
                                             int64_t gid) {
  absl::StatusOr<std::string> fresh = FreshPrivateDirPath(root);
  if (!fresh.ok()) return fresh.status();
  const std::string& path = *fresh;
  if (mkdir(path.c_str(), 0700) != 0) return Errno(absl::StrCat("mkdir ", path));
  if ((uid >= 0 || gid >= 0) &&
      fchownat(AT_FDCWD, path.c_str(), static_cast<uid_t>(uid),
               static_cast<gid_t>(gid), AT_SYMLINK_NOFOLLOW) != 0) {
    absl::Status s = Errno(absl::StrCat("chown ", path));
    rmdir(path.c_str());
    return s;
  }
  return path;
}

absl::Status RemoveTree(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return Errno(absl::StrCat("open ", path));
  }
  UniqueFd top(fd);
  fchmod(top.get(), 0700);
  absl::Status result = EmptyTree(top.get(), path);
  top.reset();
  if (rmdir(path.c_str()) != 0 && errno != ENOENT) {
    result.Update(Errno(absl::StrCat("rmdir ", path)));
  }
  return result;
}

absl::StatusOr<std::string> RecyclePrivateDir(const std::string& root,
                                              const std::string& path,
                                              int64_t uid, int64_t gid) {
  UniqueFd dir(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.valid()) return Errno(absl::StrCat("open ", path));
  if (fchmod(dir.get(), 0700) != 0) return Errno(absl::StrCat("chmod ", path));
  if (absl::Status s = EmptyTree(dir.get(), path); !s.ok()) return s;
  if (absl::Status s = RemoveExtendedAttributes(dir.get(), path); !s.ok()) return s;
  if ((uid >= 0 || gid >= 0) &&
      fchown(dir.get(), static_cast<uid_t>(uid), static_cast<gid_t>(gid)) != 0) {
    return Errno(absl::StrCat("chown ", path));
  }
  absl::StatusOr<std::string> fresh = FreshPrivateDirPath(root);
  if (!fresh.ok()) return fresh.status();
  if (renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, fresh->c_str(), RENAME_NOREPLACE) != 0) {
    return Errno(absl::StrCat("rename ", path));
  }
  return fresh;
}

absl::StatusOr<uint64_t> DiskUsage(const std::string& path, uint64_t limit) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", path));
  uint64_t total = 0;
  if (absl::Status s = AddDiskUse(fd, 0, limit, &total); !s.ok()) return s;
  return total;
}

PrivateDirs::PrivateDirs(Options options) : options_(std::move(options)) {
  thread_ = std::thread([this] {
    NameThisThread("private-dirs");
    Run();
  });
}

PrivateDirs::~PrivateDirs() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
  absl::MutexLock lock(&mu_);
  for (const std::string& path : spare_) RemoveTree(path).IgnoreError();
}

absl::StatusOr<std::string> PrivateDirs::Take(int64_t uid, int64_t gid) {
  if (uid < 0) uid = options_.uid;
  if (gid < 0) gid = options_.gid;
  std::string path;
  {
    absl::MutexLock lock(&mu_);
    if (!spare_.empty()) {
      path = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  if (path.empty()) return CreatePrivateDir(options_.root, uid, gid);
  if ((uid != options_.uid || gid != options_.gid) &&
      fchownat(AT_FDCWD, path.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid),
               AT_SYMLINK_NOFOLLOW) != 0) {
    absl::Status s = Errno(absl::StrCat("chown ", path));
    Discard(path);
    return s;
  }
  return path;
}

void PrivateDirs::Attach(const std::string& path, pid_t pid) {
  if (options_.max_disk_bytes == 0) return;
  absl::MutexLock lock(&mu_);
  watched_[path] = Watched{pid, absl::Now()};
}

void PrivateDirs::Return(const std::string& path, pid_t pgid) {
  absl::MutexLock lock(&mu_);
  watched_.erase(path);
  returned_.push_back({path, pgid});
}

void PrivateDirs::Discard(const std::string& path) { Return(path, 0); }

std::optional<std::string> PrivateDirs::TakeDiskCapVerdict(pid_t pgid) {
  absl::MutexLock lock(&mu_);
  auto it = over_cap_.find(pgid);
  if (it == over_cap_.end()) return std::nullopt;
  std::string verdict = std::move(it->second);
  over_cap_.erase(it);
  return verdict;
}

void PrivateDirs::Flush() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return returned_.empty() && !busy_;
  };
  mu_.Await(absl::Condition(&done));
}

void PrivateDirs::Run() {
  absl::Time next_disk_check = absl::InfiniteFuture();
  while (true) {
    Returned next;
    {
      absl::MutexLock lock(&mu_);
      busy_ = false;
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !returned_.empty() || stopping_;
      };
      const absl::Duration wait = options_.max_disk_bytes > 0
                                      ? options_.disk_check_interval
                                      : absl::InfiniteDuration();
      mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
      if (returned_.empty() && stopping_) return;
      if (!returned_.empty()) {
        next = std::move(returned_.front());
        returned_.pop_front();
        busy_ = true;
      }
    }
    if (!next.path.empty()) Finish(next);
    const absl::Time now = absl::Now();
    if (options_.max_disk_bytes > 0 &&
        (next_disk_check == absl::InfiniteFuture() || now >= next_disk_check)) {
      CheckDiskUse(now);
      next_disk_check = now + options_.disk_check_interval;
    }
  }
}

void PrivateDirs::Finish(const Returned& returned) {
  // kill(-pgid, 0) finds any process left in the group, zombies included:
  // then the directory is removed, not handed on.
  bool recycle = returned.pgid > 0 && options_.recycle && kill(-returned.pgid, 0) != 0 &&
                 errno == ESRCH;
  if (recycle) {
    absl::MutexLock lock(&mu_);
    recycle = spare_.size() < options_.max_spare;
  }
  if (recycle) {
    absl::StatusOr<std::string> fresh =
        RecyclePrivateDir(options_.root, returned.path, options_.uid, options_.gid);
    if (fresh.ok()) {
      absl::MutexLock lock(&mu_);
      spare_.push_back(*std::move(fresh));
      return;
    }
    LogWarning(absl::StrCat("cannot recycle a private directory (removing it): ",
                            fresh.status().message()));
  }
  if (absl::Status s = RemoveTree(returned.path); !s.ok()) {
    LogWarning(absl::StrCat("cannot remove a private directory: ", s.message()));
  }
}

void PrivateDirs::CheckDiskUse(absl::Time now) {
  std::vector<std::pair<std::string, pid_t>> due;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [path, watched] : watched_) {
      if (watched.next_check <= now) due.emplace_back(path, watched.pid);
    }
  }
  for (const auto& [path, pid] : due) {
    const absl::Time started = absl::Now();
    absl::StatusOr<uint64_t> used = DiskUsage(path, options_.max_disk_bytes);
    const absl::Time finished = absl::Now();
    std::string verdict;
    if (!used.ok() && used.status().code() == absl::StatusCode::kFailedPrecondition) {
      verdict = absl::StrCat("the session's private directory could not be measured for "
                             "--worker_max_disk_mb: ",
                             used.status().message());
    } else if (used.ok() && *used > options_.max_disk_bytes) {
      verdict = absl::StrCat("the session wrote more than --worker_max_disk_mb (",
                             options_.max_disk_bytes >> 20, " MiB) to its private directory");
    }
    absl::MutexLock lock(&mu_);
    auto it = watched_.find(path);
    if (it == watched_.end() || it->second.pid != pid) continue;  // returned meanwhile
    if (verdict.empty()) {
      it->second.next_check =
          finished + std::max(options_.disk_check_interval, 10 * (finished - started));
      continue;
    }
    LogWarning(absl::StrCat("killing worker pid ", pid, ": ", verdict));
    over_cap_[pid] = verdict;
    watched_.erase(it);
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
}

size_t PrivateDirs::spare_count() const {
  absl::MutexLock lock(&mu_);
  return spare_.size();
}

}  // namespace pyexec

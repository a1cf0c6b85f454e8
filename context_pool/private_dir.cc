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

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/unique_fd.h"

namespace pyexec {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

// Empties the directory open as `dir_fd` (which it consumes), depth first.
absl::Status EmptyDirectory(int dir_fd, const std::string& path, int depth) {
  if (depth > 256) return absl::InternalError(absl::StrCat(path, ": too deep"));
  DIR* dir = fdopendir(dir_fd);
  if (dir == nullptr) {
    close(dir_fd);
    return Errno(absl::StrCat("fdopendir ", path));
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
    // O_NOFOLLOW: a directory swapped for a symlink after readdir is not
    // followed.
    int child = openat(dirfd(dir), name,
                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) {
      result.Update(Errno(absl::StrCat("open ", path, "/", name)));
      continue;
    }
    // Its owner may have taken away our search right; as root we need none,
    // but pyexecd may not be root.
    fchmod(child, 0700);
    result.Update(EmptyDirectory(child, absl::StrCat(path, "/", name), depth + 1));
    if (unlinkat(dirfd(dir), name, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      result.Update(Errno(absl::StrCat("rmdir ", path, "/", name)));
    }
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
  fchmod(fd, 0700);
  absl::Status result = EmptyDirectory(fd, path, 0);
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
  const int contents = dup(dir.get());  // EmptyDirectory consumes it
  if (contents < 0) return Errno("dup");
  if (absl::Status s = EmptyDirectory(contents, path, 0); !s.ok()) return s;
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

PrivateDirs::~PrivateDirs() {
  absl::MutexLock lock(&mu_);
  for (const std::string& path : spare_) RemoveTree(path).IgnoreError();
}

absl::StatusOr<std::string> PrivateDirs::Take() {
  {
    absl::MutexLock lock(&mu_);
    if (!spare_.empty()) {
      std::string path = std::move(spare_.back());
      spare_.pop_back();
      return path;
    }
  }
  return CreatePrivateDir(root_, uid_, gid_);
}

void PrivateDirs::Return(const std::string& path, pid_t pgid) {
  // kill(-pgid, 0) finds any process left in the group, zombies included:
  // then the directory is removed, not handed on.
  bool recycle = recycle_ && kill(-pgid, 0) != 0 && errno == ESRCH;
  if (recycle) {
    absl::MutexLock lock(&mu_);
    recycle = spare_.size() < max_spare_;
  }
  if (recycle) {
    absl::StatusOr<std::string> fresh = RecyclePrivateDir(root_, path, uid_, gid_);
    if (fresh.ok()) {
      absl::MutexLock lock(&mu_);
      spare_.push_back(*std::move(fresh));
      return;
    }
    LogWarning(absl::StrCat("cannot recycle a private directory (removing it): ",
                            fresh.status().message()));
  }
  Discard(path);
}

void PrivateDirs::Discard(const std::string& path) {
  if (absl::Status s = RemoveTree(path); !s.ok()) {
    LogWarning(absl::StrCat("cannot remove a private directory: ", s.message()));
  }
}

size_t PrivateDirs::spare_count() const {
  absl::MutexLock lock(&mu_);
  return spare_.size();
}

}  // namespace pyexec

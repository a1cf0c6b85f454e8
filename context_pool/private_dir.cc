#include "context_pool/private_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
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
  char random[16];
  if (getrandom(random, sizeof(random), 0) != sizeof(random)) return Errno("getrandom");
  std::string path = absl::StrCat(
      root, "/w-", absl::BytesToHexString(absl::string_view(random, sizeof(random))));
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

}  // namespace pyexec

#include "worker/landlock.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace pyexec {
namespace {

// Rights and structures newer than Debian 12's <linux/landlock.h> (ABI 2).
constexpr uint64_t kFsTruncate = 1ULL << 14;  // ABI 3
constexpr uint64_t kFsIoctlDev = 1ULL << 15;  // ABI 5
constexpr uint64_t kScopeAbstractUnixSocket = 1ULL << 0;  // ABI 6
constexpr uint64_t kScopeSignal = 1ULL << 1;              // ABI 6

// struct landlock_ruleset_attr as of ABI 6. The kernel takes a prefix of
// it (its size says which fields are there), so older kernels get the
// fields they know.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;  // ABI 4
  uint64_t scoped;              // ABI 6
};

constexpr uint64_t kFsReadFile = LANDLOCK_ACCESS_FS_READ_FILE;
constexpr uint64_t kFsReadDir = LANDLOCK_ACCESS_FS_READ_DIR;
constexpr uint64_t kFsWriteFile = LANDLOCK_ACCESS_FS_WRITE_FILE;
constexpr uint64_t kFsExecute = LANDLOCK_ACCESS_FS_EXECUTE;

// Rights that apply to a file itself (a rule on a non-directory may carry
// only these).
constexpr uint64_t kFileRights =
    kFsExecute | kFsWriteFile | kFsReadFile | kFsTruncate | kFsIoctlDev;

// Every filesystem right the kernel at `abi` knows: all of them are
// handled, so anything no rule allows is refused.
uint64_t HandledFs(int abi) {
  uint64_t rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // ABI 1: bits 0-12
  if (abi >= 2) rights |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) rights |= kFsTruncate;
  if (abi >= 5) rights |= kFsIoctlDev;
  return rights;
}

uint64_t RightsOf(LandlockAccess access, uint64_t handled) {
  switch (access) {
    case LandlockAccess::kReadExecute:
      return kFsReadFile | kFsReadDir | kFsExecute;
    case LandlockAccess::kReadOnly:
      return kFsReadFile | kFsReadDir;
    case LandlockAccess::kDevice:
      return (kFsReadFile | kFsWriteFile | kFsTruncate | kFsIoctlDev) & handled;
    case LandlockAccess::kSharedMemory:
      // No READ_DIR: a session may not list the segments of others.
      return (kFsReadFile | kFsWriteFile | kFsTruncate |
              LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_REMOVE_FILE) &
             handled;
    case LandlockAccess::kFull:
      return handled;
  }
  return 0;
}

absl::Status Errno(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", strerror(errno)));
}

// The /etc files and directories that ordinary programs read: users and
// groups, name resolution, time zone, the dynamic loader's cache, TLS
// certificates, Debian's Python configuration and fonts.
constexpr const char* kEtcPaths[] = {
    "/etc/passwd",        "/etc/group",        "/etc/hosts",
    "/etc/resolv.conf",   "/etc/nsswitch.conf", "/etc/host.conf",
    "/etc/gai.conf",      "/etc/localtime",    "/etc/timezone",
    "/etc/ld.so.cache",   "/etc/ld.so.conf",   "/etc/ld.so.conf.d",
    "/etc/ssl",           "/etc/ca-certificates", "/etc/protocols",
    "/etc/services",      "/etc/mime.types",   "/etc/os-release",
    "/etc/python3",       "/etc/python3.11",   "/etc/fonts",
    "/etc/alternatives",  "/etc/locale.alias",
};

// Read and execute: the system's programs, libraries and data.
constexpr const char* kSystemPaths[] = {
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
};

constexpr const char* kDevices[] = {
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
};

}  // namespace

int LandlockAbi() {
  long abi = syscall(SYS_landlock_create_ruleset, nullptr, 0,
                     LANDLOCK_CREATE_RULESET_VERSION);
  return abi < 0 ? 0 : static_cast<int>(abi);
}

absl::Status LandlockRules::Add(const std::string& path, LandlockAccess access,
                                bool required) {
  UniqueFd fd(open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd.valid()) {
    if (!required && (errno == ENOENT || errno == ENOTDIR)) return absl::OkStatus();
    return Errno(absl::StrCat("open ", path));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return Errno(absl::StrCat("stat ", path));
  rules_.push_back({std::move(fd), access, S_ISDIR(st.st_mode)});
  return absl::OkStatus();
}

absl::StatusOr<LandlockRules> LandlockRules::ForWorkers(
    const std::vector<std::string>& extra_read, bool ptys) {
  LandlockRules rules;
  for (const char* path : kSystemPaths) {
    if (absl::Status s = rules.Add(path, LandlockAccess::kReadExecute); !s.ok()) return s;
  }
  for (const char* path : kEtcPaths) {
    if (absl::Status s = rules.Add(path, LandlockAccess::kReadOnly); !s.ok()) return s;
  }
  // /proc: a process's own entries, and the system-wide ones programs read
  // (cpuinfo, meminfo). Other processes' sensitive entries stay closed:
  // they need ptrace-mode access, which the domain refuses outside itself.
  for (const char* path : {"/proc", "/sys"}) {
    if (absl::Status s = rules.Add(path, LandlockAccess::kReadOnly); !s.ok()) return s;
  }
  for (const char* path : kDevices) {
    if (absl::Status s = rules.Add(path, LandlockAccess::kDevice); !s.ok()) return s;
  }
  if (ptys) {
    for (const char* path : {"/dev/ptmx", "/dev/pts"}) {
      if (absl::Status s = rules.Add(path, LandlockAccess::kDevice); !s.ok()) return s;
    }
  }
  // POSIX shared memory and semaphores (multiprocessing's Lock and Queue).
  if (absl::Status s = rules.Add("/dev/shm", LandlockAccess::kSharedMemory); !s.ok()) {
    return s;
  }
  for (const std::string& path : extra_read) {
    if (absl::Status s = rules.Add(path, LandlockAccess::kReadExecute, /*required=*/true);
        !s.ok()) {
      return s;
    }
  }
  return rules;
}

absl::Status RestrictSelfWithLandlock(const LandlockRules& rules,
                                      const std::string& private_dir) {
  const int abi = LandlockAbi();
  if (abi < 1) return absl::FailedPreconditionError("Landlock is not available");
  RulesetAttr attr{};
  attr.handled_access_fs = HandledFs(abi);
  size_t attr_size = sizeof(attr.handled_access_fs);
  if (abi >= 6) {
    attr.scoped = kScopeAbstractUnixSocket | kScopeSignal;
    attr_size = sizeof(attr);
  }
  UniqueFd ruleset(static_cast<int>(
      syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0)));
  if (!ruleset.valid()) return Errno("landlock_create_ruleset");

  auto add = [&](int path_fd, LandlockAccess access, bool is_directory) {
    landlock_path_beneath_attr beneath{};
    beneath.allowed_access = RightsOf(access, attr.handled_access_fs);
    if (!is_directory) beneath.allowed_access &= kFileRights;
    beneath.parent_fd = path_fd;
    if (beneath.allowed_access == 0) return absl::OkStatus();
    if (syscall(SYS_landlock_add_rule, ruleset.get(), LANDLOCK_RULE_PATH_BENEATH,
                &beneath, 0) != 0) {
      return Errno("landlock_add_rule");
    }
    return absl::OkStatus();
  };
  for (const LandlockRules::Rule& rule : rules.rules_) {
    if (absl::Status s = add(rule.path.get(), rule.access, rule.is_directory); !s.ok()) {
      return s;
    }
  }
  if (!private_dir.empty()) {
    UniqueFd dir(open(private_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir.valid()) return Errno(absl::StrCat("open ", private_dir));
    if (absl::Status s = add(dir.get(), LandlockAccess::kFull, true); !s.ok()) return s;
  }
  if (syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return Errno("landlock_restrict_self");
  }
  return absl::OkStatus();
}

std::string DescribeLandlock(int abi) {
  if (abi < 1) return "unavailable";
  return absl::StrCat("ABI ", abi, ": files, ptrace-mode /proc access",
                      abi >= 6 ? ", signals, abstract Unix sockets"
                               : " (signals and abstract sockets need ABI 6)");
}

}  // namespace pyexec

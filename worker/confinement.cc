#include "worker/confinement.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <malloc.h>
#include <pthread.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/unique_fd.h"

namespace pyexec {

// What user code must not do even as an unprivileged user: attach to or read
// other processes (other workers share the uid), load kernel code or BPF,
// change namespaces (a user namespace would hand out capabilities again),
// mount, touch the kernel keyring, reboot, swap, change the clock or
// hostname, use raw I/O ports, io_uring (which bypasses this filter for the
// operations it carries), and leave the worker's process group (setsid,
// setpgid), which is how pyexecd kills everything a call started.
const char* const kDeniedSyscalls[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "bpf", "perf_event_open", "userfaultfd",
    "setns", "unshare", "keyctl", "add_key", "request_key",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
    "sethostname", "setdomainname", "iopl", "ioperm", "vhangup",
    "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
    "fanotify_init", "nfsservctl", "uselib",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "setsid", "setpgid",
    nullptr,
};

namespace {

absl::Status Errno(absl::string_view what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", strerror(errno)));
}

absl::Status SetLimit(int resource, const char* name, uint64_t value) {
  if (value == 0) return absl::OkStatus();
  rlimit limit{value, value};
  if (setrlimit(resource, &limit) != 0) {
    return Errno(absl::StrCat("setrlimit(", name, ", ", value, ")"));
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const char* path, const std::string& text) {
  UniqueFd fd(open(path, O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return Errno(absl::StrCat("open ", path));
  if (write(fd.get(), text.data(), text.size()) !=
      static_cast<ssize_t>(text.size())) {
    return Errno(absl::StrCat("write ", path));
  }
  return absl::OkStatus();
}

// Brings up "lo" in the new namespace, so that user code can still talk to
// itself (multiprocessing managers, local test servers) but to nobody else.
absl::Status LoopbackUp() {
  UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return Errno("socket");
  ifreq req{};
  strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(s.get(), SIOCGIFFLAGS, &req) != 0) return Errno("SIOCGIFFLAGS lo");
  req.ifr_flags |= IFF_UP;
  if (ioctl(s.get(), SIOCSIFFLAGS, &req) != 0) return Errno("SIOCSIFFLAGS lo");
  return absl::OkStatus();
}

// Drops every capability (effective, permitted, inheritable). Needed when
// the namespace came with a user namespace, which grants a full set in it.
absl::Status DropCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (syscall(SYS_capset, &header, data) != 0) return Errno("capset");
  return absl::OkStatus();
}

// An empty network namespace. As root a plain one; otherwise inside a new
// user namespace that maps only our own ids (unprivileged containers allow
// that where user namespaces are enabled).
absl::Status EnterEmptyNetwork() {
  if (geteuid() == 0) {
    if (unshare(CLONE_NEWNET) != 0) return Errno("unshare(CLONE_NEWNET)");
    return LoopbackUp();
  }
  const uid_t uid = geteuid();
  const gid_t gid = getegid();
  if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
    return Errno("unshare(CLONE_NEWUSER | CLONE_NEWNET)");
  }
  if (absl::Status s = WriteFile("/proc/self/setgroups", "deny"); !s.ok()) return s;
  if (absl::Status s = WriteFile("/proc/self/uid_map", absl::StrCat(uid, " ", uid, " 1"));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFile("/proc/self/gid_map", absl::StrCat(gid, " ", gid, " 1"));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = LoopbackUp(); !s.ok()) return s;
  return DropCapabilities();
}

absl::Status SwitchUser(uid_t uid, gid_t g) {
  if (geteuid() != 0) return absl::OkStatus();
  if (setgroups(1, &g) != 0) return Errno("setgroups");
  if (setresgid(g, g, g) != 0) return Errno(absl::StrCat("setresgid(", g, ")"));
  if (setresuid(uid, uid, uid) != 0) return Errno(absl::StrCat("setresuid(", uid, ")"));
  // Paranoia that costs nothing: a uid switch that could be undone is none.
  if (uid != 0 && setuid(0) == 0) {
    return absl::InternalError("could regain root after dropping it");
  }
  return absl::OkStatus();
}

absl::Status RuleError(const char* name, int rc) {
  return absl::InternalError(absl::StrCat("seccomp_rule_add(", name, "): ", strerror(-rc)));
}

// Refuses `name` (EPERM) when its argument `arg` (an int: a pid or a
// selector, compared on its low 32 bits as the kernel reads it) is one of
// `values`.
absl::Status DenyWhenArgIs(scmp_filter_ctx ctx, const char* name, unsigned arg,
                           const std::vector<uint32_t>& values) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return absl::OkStatus();
  for (uint32_t value : values) {
    scmp_arg_cmp cmp = SCMP_CMP32(arg, SCMP_CMP_EQ, value);
    int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, &cmp);
    if (rc != 0 && nr >= 0) return RuleError(name, rc);
  }
  return absl::OkStatus();
}

// Refuses `name` (EPERM) when its int argument `arg` is negative.
absl::Status DenyNegativeArg(scmp_filter_ctx ctx, const char* name, unsigned arg) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return absl::OkStatus();
  scmp_arg_cmp cmp = SCMP_CMP32(arg, SCMP_CMP_MASKED_EQ, 0x80000000u, 0x80000000u);
  int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, &cmp);
  if (rc != 0 && nr >= 0) return RuleError(name, rc);
  return absl::OkStatus();
}

// The argument rules (see SeccompFilter): what user code may do to its own
// processes but not aim at pyexecd, the zygote, other process groups or
// the terminal.
absl::Status AddArgumentRules(scmp_filter_ctx ctx, const ConfinementOptions& options) {
  std::vector<uint32_t> protected_pids;
  for (int32_t pid : options.protected_pids()) {
    if (pid > 0) protected_pids.push_back(static_cast<uint32_t>(pid));
  }
  // Signals. kill(0) (the caller's own group) stays allowed; any other
  // negative pid names another group, and -1 every process of the uid.
  for (const char* name : {"kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"}) {
    if (absl::Status s = DenyWhenArgIs(ctx, name, 0, protected_pids); !s.ok()) return s;
    if (absl::Status s = DenyNegativeArg(ctx, name, 0); !s.ok()) return s;
  }
  // Targets the filter cannot check: a thread id (any of pyexecd's threads
  // stands for pyexecd) and a pidfd (which a /proc/PID directory also is).
  for (const char* name : {"tkill", "pidfd_send_signal"}) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc != 0 && nr >= 0) return RuleError(name, rc);
  }
  // Scheduling and memory placement of another process.
  for (const char* name : {"pidfd_open", "sched_setaffinity", "sched_setscheduler",
                           "sched_setparam", "sched_setattr", "migrate_pages",
                           "move_pages"}) {
    if (absl::Status s = DenyWhenArgIs(ctx, name, 0, protected_pids); !s.ok()) return s;
  }
  // setpriority(which, who): PRIO_USER reaches every process of the uid.
  if (absl::Status s = DenyWhenArgIs(ctx, "setpriority", 0, {PRIO_USER}); !s.ok()) return s;
  if (absl::Status s = DenyWhenArgIs(ctx, "setpriority", 1, protected_pids); !s.ok()) return s;
  constexpr uint32_t kIoprioWhoUser = 3;
  if (absl::Status s = DenyWhenArgIs(ctx, "ioprio_set", 0, {kIoprioWhoUser}); !s.ok()) return s;
  if (absl::Status s = DenyWhenArgIs(ctx, "ioprio_set", 1, protected_pids); !s.ok()) return s;
  // prlimit64 on the caller only: glibc's setrlimit passes pid 0. Any other
  // pid could cap another process (a CPU limit of a second kills it).
  {
    int nr = seccomp_syscall_resolve_name("prlimit64");
    scmp_arg_cmp cmp = SCMP_CMP32(0, SCMP_CMP_NE, 0);
    int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, &cmp);
    if (rc != 0) return RuleError("prlimit64", rc);
  }
  // Typing into a terminal that some other process reads.
  if (absl::Status s = DenyWhenArgIs(ctx, "ioctl", 1, {TIOCSTI, TIOCLINUX}); !s.ok()) {
    return s;
  }
  if (options.network() == internal::Confinement::NO_INET) {
    if (absl::Status s = DenyWhenArgIs(ctx, "socket", 0, {AF_INET, AF_INET6, AF_PACKET});
        !s.ok()) {
      return s;
    }
    // The 32-bit ABI multiplexes socket() through socketcall, whose
    // arguments are in memory the filter cannot read.
    int nr = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86, "socketcall");
    if (seccomp_arch_native() == SCMP_ARCH_X86_64 && nr >= 0) {
      int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socketcall), 0);
      if (rc != 0 && rc != -EEXIST) return RuleError("socketcall", rc);
    }
  }
  return absl::OkStatus();
}

// Adds the filter's architectures and rules to `ctx`.
absl::Status AddSeccompRules(scmp_filter_ctx ctx, const ConfinementOptions& options) {
  // The 32-bit ABIs reach the same kernel through other syscall numbers: a
  // filter for the native ABI only would be bypassed with `int 0x80`.
  if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
    for (uint32_t arch : {SCMP_ARCH_X86, SCMP_ARCH_X32}) {
      int rc = seccomp_arch_add(ctx, arch);
      if (rc != 0 && rc != -EEXIST) {
        return absl::InternalError(absl::StrCat("seccomp_arch_add: ", strerror(-rc)));
      }
    }
  }
  const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  for (const char* const* name = kDeniedSyscalls; *name != nullptr; ++name) {
    int nr = seccomp_syscall_resolve_name(*name);
    if (nr == __NR_SCMP_ERROR) continue;  // unknown to this libseccomp
    int rc = seccomp_rule_add(ctx, deny, nr, 0);
    // A pseudo number (negative) names a syscall that exists on none of our
    // ABIs; nothing to refuse then.
    if (rc != 0 && nr >= 0) return RuleError(*name, rc);
  }
  // clone() with a namespace flag would do what unshare does. clone3 passes
  // its flags in memory the filter cannot read, so it answers ENOSYS, which
  // makes glibc fall back to clone (as Docker's default profile does).
  for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID,
                        CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP}) {
    int rc = seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc != 0) return RuleError("clone", rc);
  }
  int nr_clone3 = seccomp_syscall_resolve_name("clone3");
  if (nr_clone3 >= 0) {
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr_clone3, 0);
    if (rc != 0) return RuleError("clone3", rc);
  }
  return AddArgumentRules(ctx, options);
}

}  // namespace

absl::StatusOr<SeccompFilter> SeccompFilter::Compile(const ConfinementOptions& options) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  struct Releaser {
    scmp_filter_ctx ctx;
    ~Releaser() { seccomp_release(ctx); }
  } releaser{ctx};
  if (absl::Status s = AddSeccompRules(ctx, options); !s.ok()) return s;
  // libseccomp exports the compiled program only to a file descriptor.
  UniqueFd out(static_cast<int>(syscall(SYS_memfd_create, "seccomp_bpf", MFD_CLOEXEC)));
  if (!out.valid()) return Errno("memfd_create");
  if (int rc = seccomp_export_bpf(ctx, out.get()); rc != 0) {
    return absl::InternalError(absl::StrCat("seccomp_export_bpf: ", strerror(-rc)));
  }
  off_t size = lseek(out.get(), 0, SEEK_END);
  if (size <= 0 || size % sizeof(sock_filter) != 0) {
    return absl::InternalError(absl::StrCat("seccomp_export_bpf wrote ", size, " bytes"));
  }
  SeccompFilter filter;
  filter.program_.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(out.get(), filter.program_.data(), static_cast<size_t>(size), 0) != size) {
    return Errno("reading the compiled seccomp filter");
  }
  return filter;
}

absl::Status SeccompFilter::Install() const {
  sock_fprog prog{static_cast<unsigned short>(program_.size()),
                  const_cast<sock_filter*>(program_.data())};
  // Threads started before (the parent watchdog) get the filter too.
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
  if (rc < 0) return Errno("seccomp(SECCOMP_SET_MODE_FILTER)");
  if (rc > 0) {
    return absl::InternalError(
        absl::StrCat("seccomp TSYNC: thread ", rc, " cannot take the filter"));
  }
  return absl::OkStatus();
}

ConfinementOptions DefaultConfinement() {
  ConfinementOptions options;
  options.set_seccomp(true);
  return options;
}

bool ParseWorkerNetwork(const std::string& text, internal::Confinement::Network* out) {
  if (text == "none") {
    *out = internal::Confinement::NONE;
  } else if (text == "host") {
    *out = internal::Confinement::HOST;
  } else {
    return false;
  }
  return true;
}

absl::Status ConfineWorker(const ConfinementOptions& options,
                           const ConfinementResources& resources) {
  if (options.network() == internal::Confinement::NONE) {
    if (absl::Status s = EnterEmptyNetwork(); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--worker_network=none: cannot create an empty network namespace (",
          s.message(), ")"));
    }
  }
  // Limits first: as root we may set any hard limit, after setuid only lower.
  for (auto [resource, name, value] :
       {std::tuple<int, const char*, uint64_t>{RLIMIT_NPROC, "RLIMIT_NPROC",
                                               options.max_processes()},
        {RLIMIT_CPU, "RLIMIT_CPU", options.cpu_seconds()},
        {RLIMIT_FSIZE, "RLIMIT_FSIZE", options.max_file_bytes()},
        {RLIMIT_AS, "RLIMIT_AS", options.memory_limit_mb() << 20},
        {RLIMIT_NOFILE, "RLIMIT_NOFILE", options.max_open_files()}}) {
    if (absl::Status s = SetLimit(resource, name, value); !s.ok()) return s;
  }
  if (options.switch_user()) {
    if (absl::Status s = SwitchUser(options.uid(), options.gid()); !s.ok()) return s;
  }
  if (!options.private_dir().empty()) {
    // After the switch, so that a directory the worker cannot use fails here.
    if (chdir(options.private_dir().c_str()) != 0) {
      return Errno(absl::StrCat("chdir ", options.private_dir()));
    }
    setenv("HOME", options.private_dir().c_str(), 1);
    setenv("TMPDIR", options.private_dir().c_str(), 1);
  }
  if (options.thread_stack_bytes() > 0) {
    // Under RLIMIT_AS every thread's whole stack counts, touched or not:
    // smaller default stacks let a session run hundreds of threads, and
    // fewer malloc arenas keep their 64 MiB reservations from adding up.
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, options.thread_stack_bytes());
    int rc = pthread_setattr_default_np(&attr);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
      errno = rc;
      return Errno("pthread_setattr_default_np");
    }
    mallopt(M_ARENA_MAX, 2);
  }
  // Other workers may run as the same user: a non-dumpable process's memory
  // and /proc files stay closed to them (and no core files land anywhere).
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return Errno("PR_SET_DUMPABLE");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Errno("PR_SET_NO_NEW_PRIVS");
  if (options.landlock()) {
    absl::Status restricted;
    if (resources.landlock != nullptr) {
      restricted = RestrictSelfWithLandlock(*resources.landlock, options.private_dir());
    } else {
      absl::StatusOr<LandlockRules> rules = LandlockRules::ForWorkers(
          {options.read_paths().begin(), options.read_paths().end()}, options.ptys());
      restricted = rules.ok() ? RestrictSelfWithLandlock(*rules, options.private_dir())
                              : rules.status();
    }
    if (!restricted.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("Landlock: ", restricted.message()));
    }
  }
  if (!options.seccomp() || resources.seccomp_inherited) return absl::OkStatus();
  if (resources.seccomp != nullptr) return resources.seccomp->Install();
  absl::StatusOr<SeccompFilter> filter = SeccompFilter::Compile(options);
  if (!filter.ok()) return filter.status();
  return filter->Install();
}

absl::Status CheckConfinement(const ConfinementOptions& options) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return Errno("pipe2");
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    read_end.reset();
    absl::Status s = ConfineWorker(options);
    std::string message(s.message());
    if (!s.ok() && message.empty()) message = "failed";
    // write() is allowed by the filter; an empty message means success.
    ssize_t ignored = write(write_end.get(), message.data(), message.size());
    (void)ignored;
    _exit(s.ok() ? 0 : 1);
  }
  write_end.reset();
  std::string message;
  char buf[512];
  ssize_t n;
  while ((n = read(read_end.get(), buf, sizeof(buf))) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    message.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (message.empty()) message = "the confinement check process died";
  return absl::FailedPreconditionError(absl::StrCat("worker confinement: ", message));
}

}  // namespace pyexec

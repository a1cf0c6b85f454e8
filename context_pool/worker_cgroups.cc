#include "context_pool/worker_cgroups.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/procfs.h"

namespace pyexec {
namespace {

absl::Status WriteFile(const std::string& path, absl::string_view text) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", strerror(errno)));
  }
  ssize_t n = write(fd, text.data(), text.size());
  const int error = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", strerror(error)));
  }
  return absl::OkStatus();
}

// The mount point of a cgroup filesystem: v2 (`controller` empty), or the v1
// hierarchy that carries `controller`. "" if there is none.
std::string MountPoint(absl::string_view controller) {
  for (absl::string_view line : absl::StrSplit(ReadProcFile("/proc/self/mountinfo"), '\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    std::vector<absl::string_view> halves = absl::StrSplit(line, " - ");
    if (halves.size() != 2) continue;
    std::vector<absl::string_view> left = absl::StrSplit(halves[0], ' ');
    std::vector<absl::string_view> right = absl::StrSplit(halves[1], ' ');
    if (left.size() < 5 || right.size() < 3) continue;
    if (controller.empty() ? right[0] == "cgroup2"
                           : right[0] == "cgroup" &&
                                 absl::StrContains(absl::StrCat(",", right[2], ","),
                                                   absl::StrCat(",", controller, ","))) {
      return std::string(left[4]);
    }
  }
  return "";
}

// This process's cgroup in the v2 hierarchy (`controller` empty) or in
// the v1 hierarchy of `controller`, from /proc/self/cgroup; "" if none.
std::string OwnCgroup(absl::string_view controller) {
  for (absl::string_view line : absl::StrSplit(ReadProcFile("/proc/self/cgroup"), '\n')) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    if (controller.empty() ? fields[0] == "0" && fields[1].empty()
                           : absl::StrContains(absl::StrCat(",", fields[1], ","),
                                               absl::StrCat(",", controller, ","))) {
      return std::string(fields[2]);
    }
  }
  return "";
}

bool Writable(const std::string& path) { return access(path.c_str(), W_OK) == 0; }

// Prepares a delegated cgroup v2 for workers; returns its path.
absl::StatusOr<std::string> TryV2() {
  const std::string mount = MountPoint("");
  const std::string own = OwnCgroup("");
  if (mount.empty() || own.empty()) {
    return absl::FailedPreconditionError("no cgroup v2 hierarchy");
  }
  const std::string base = absl::StrCat(mount, own == "/" ? "" : own);
  std::vector<std::string> controllers =
      absl::StrSplit(absl::StripAsciiWhitespace(ReadProcFile(base + "/cgroup.controllers")),
                     ' ', absl::SkipEmpty());
  if (std::find(controllers.begin(), controllers.end(), "pids") == controllers.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cgroup v2: the pids controller is not available in ", base));
  }
  if (!Writable(base + "/cgroup.subtree_control") || !Writable(base + "/cgroup.procs")) {
    return absl::FailedPreconditionError(
        absl::StrCat("cgroup v2: ", base, " is not delegated to pyexecd"));
  }
  // A cgroup whose children have controllers may hold no process itself:
  // pyexecd (and the zygote it starts later) lives in a leaf beside them.
  const std::string daemon = base + "/pyexecd";
  if (mkdir(daemon.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("mkdir ", daemon, ": ", strerror(errno)));
  }
  if (absl::Status s = WriteFile(daemon + "/cgroup.procs", absl::StrCat(getpid())); !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFile(base + "/cgroup.subtree_control", "+pids"); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cgroup v2: cannot enable pids below ", base,
        " (other processes share it?): ", s.message()));
  }
  return base;
}

// The names of the directories in `dir` that start with `prefix` and go on
// with digits only, with that number.
std::vector<std::pair<std::string, long>> NumberedDirs(const std::string& dir,
                                                       absl::string_view prefix) {
  std::vector<std::pair<std::string, long>> found;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return found;
  while (dirent* e = readdir(d)) {
    absl::string_view name = e->d_name;
    long n;
    if (e->d_type == DT_DIR && absl::ConsumePrefix(&name, prefix) && absl::SimpleAtoi(name, &n)) {
      found.emplace_back(e->d_name, n);
    }
  }
  closedir(d);
  return found;
}

// Removes the workers' cgroups below `dir` that no process uses any more
// (rmdir refuses the others).
void RemoveEmptyWorkerCgroups(const std::string& dir) {
  for (const auto& [name, n] : NumberedDirs(dir, "w-")) rmdir(absl::StrCat(dir, "/", name).c_str());
}

// A pyexecd that was SIGKILLed (or crashed) could not remove its cgroups:
// the next one to start removes those of every pyexecd that is gone, so that
// they do not pile up on the node (each restart left one per worker).
void RemoveCgroupsOfDeadPyexecds(const std::string& parent) {
  for (const auto& [name, pid] : NumberedDirs(parent, "pyexecd-")) {
    if (pid <= 0 || pid == getpid() || kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) {
      continue;  // ours, alive, or not ours to judge
    }
    const std::string dir = absl::StrCat(parent, "/", name);
    RemoveEmptyWorkerCgroups(dir);
    rmdir(dir.c_str());
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerCgroups>> WorkerCgroups::Create(uint64_t max_processes) {
  absl::StatusOr<std::string> v2 = TryV2();
  if (v2.ok()) {
    // Left by an earlier pyexecd in this same cgroup that could not clean up.
    RemoveEmptyWorkerCgroups(*v2);
    return std::unique_ptr<WorkerCgroups>(
        new WorkerCgroups(*v2, false, max_processes, absl::StrCat("cgroup v2 ", *v2)));
  }
  const std::string mount = MountPoint("pids");
  const std::string own = OwnCgroup("pids");
  if (mount.empty() || own.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(v2.status().message(), "; no cgroup v1 pids hierarchy"));
  }
  const std::string parent = absl::StrCat(mount, own == "/" ? "" : own);
  if (!Writable(parent)) {
    return absl::FailedPreconditionError(absl::StrCat(
        v2.status().message(), "; cgroup v1: ", parent, " is not writable by pyexecd"));
  }
  RemoveCgroupsOfDeadPyexecds(parent);
  const std::string base = absl::StrCat(parent, "/pyexecd-", getpid());
  if (mkdir(base.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(absl::StrCat("mkdir ", base, ": ", strerror(errno)));
  }
  return std::unique_ptr<WorkerCgroups>(
      new WorkerCgroups(base, true, max_processes, absl::StrCat("cgroup v1 ", base)));
}

WorkerCgroups::~WorkerCgroups() {
  Sweep();
  if (own_base_) rmdir(base_.c_str());
}

absl::StatusOr<std::string> WorkerCgroups::Place(pid_t pid) {
  Sweep();
  std::string path;
  // A name still taken (a cgroup an earlier pyexecd left in use) is skipped.
  for (int tries = 0;; ++tries) {
    {
      absl::MutexLock lock(&mu_);
      path = absl::StrCat(base_, "/w-", next_++);
    }
    if (mkdir(path.c_str(), 0755) == 0) break;
    if (errno != EEXIST || tries >= 1000) {
      return absl::InternalError(absl::StrCat("mkdir ", path, ": ", strerror(errno)));
    }
  }
  absl::Status s;
  if (max_processes_ > 0) s = WriteFile(path + "/pids.max", absl::StrCat(max_processes_));
  if (s.ok()) s = WriteFile(path + "/cgroup.procs", absl::StrCat(pid));
  if (!s.ok()) {
    rmdir(path.c_str());
    return s;
  }
  return path;
}

void WorkerCgroups::Remove(const std::string& path) {
  if (rmdir(path.c_str()) == 0 || errno == ENOENT) return;
  // Still in use: the processes left in it go (the worker's group was
  // killed already; these escaped it), and the removal is retried.
  for (absl::string_view line : absl::StrSplit(ReadProcFile(path + "/cgroup.procs"), '\n')) {
    int pid;
    if (absl::SimpleAtoi(line, &pid) && pid > 0) kill(pid, SIGKILL);
  }
  absl::MutexLock lock(&mu_);
  pending_.push_back(path);
}

void WorkerCgroups::Sweep() {
  absl::MutexLock lock(&mu_);
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [](const std::string& path) {
                                  return rmdir(path.c_str()) == 0 || errno == ENOENT;
                                }),
                 pending_.end());
}

size_t WorkerCgroups::pending_removals() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

}  // namespace pyexec

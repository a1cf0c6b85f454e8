#ifndef PYEXEC_CONTEXT_POOL_CHILD_PROCESS_H_
#define PYEXEC_CONTEXT_POOL_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "common/unique_fd.h"
#include "context_pool/private_dir.h"
#include "context_pool/uid_pool.h"
#include "context_pool/worker_cgroups.h"
#include "context_pool/worker_launcher.h"

namespace pyexec {

// A real pyexec_worker process that leads its own process group and that
// pyexecd can waitpid(): its child, spawned (spawn launcher) or forked by the
// zygote with CLONE_PARENT (zygote launcher). Its only descriptor here is
// its socket: the pool sees its death as the socket's hang-up and reaps it
// (its pid cannot be reused before that), so a session costs pyexecd one fd.
// What a worker holds that must be given back once it is gone; each part is
// optional (its owner null).
struct WorkerHoldings {
  // Its HOME/TMPDIR, taken from and returned to `dirs`.
  std::string private_dir;
  std::shared_ptr<PrivateDirs> dirs;
  // Its own uid, taken from and returned to `uids`.
  uint32_t uid = 0;
  std::shared_ptr<UidPool> uids;
  // Its cgroup, made and removed by `cgroups`.
  std::string cgroup;
  std::shared_ptr<WorkerCgroups> cgroups;
};

class ChildProcess final : public WorkerProcess {
 public:
  ChildProcess(pid_t pid, UniqueFd socket, WorkerHoldings holdings = {})
      : pid_(pid), socket_(std::move(socket)), holdings_(std::move(holdings)) {}
  // Kills and reaps the process if that has not happened yet. The pool
  // destroys a worker once it has exited (at Unbind, expiry or death), so
  // this is also where its holdings are given back.
  ~ChildProcess() override;

  int pid() const override { return pid_; }
  int socket_fd() const override { return socket_.get(); }
  int exit_fd() const override { return -1; }
  // SIGINT carrying `request_id` (sigqueue), so that the worker can tell an
  // interrupt meant for the call it is about to start from a stale one.
  void Interrupt(uint64_t request_id) override;
  void Kill() override;
  std::optional<WorkerExit> TryReap() override;

 private:
  const pid_t pid_;
  UniqueFd socket_;
  const WorkerHoldings holdings_;
  bool reaped_ = false;
  WorkerExit exit_;
};

// "SIGKILL", "SIGSEGV", ... or "signal N".
std::string SignalName(int signal);

// Describes a wait status: "exited with code 3", "killed by signal SIGSEGV".
std::string DescribeWaitStatus(int status);

// Removes a worker's private directory unless released (to a ChildProcess),
// so that a failed launch leaves nothing behind.
class PrivateDirGuard {
 public:
  PrivateDirGuard(std::shared_ptr<PrivateDirs> dirs, std::string path)
      : dirs_(std::move(dirs)), path_(std::move(path)) {}
  PrivateDirGuard(PrivateDirGuard&& other)
      : dirs_(std::move(other.dirs_)), path_(std::exchange(other.path_, std::string())) {}
  PrivateDirGuard& operator=(PrivateDirGuard&&) = delete;
  ~PrivateDirGuard();
  const std::string& path() const { return path_; }
  std::string Release() { return std::exchange(path_, std::string()); }

 private:
  std::shared_ptr<PrivateDirs> dirs_;
  std::string path_;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_CHILD_PROCESS_H_

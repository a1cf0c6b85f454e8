#include "context_pool/fake_worker_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/unique_fd.h"
#include "common/frame.h"
#include "pyexec/v1/worker.pb.h"

namespace pyexec {
namespace {

class FakeProcess final : public WorkerProcess {
 public:
  FakeProcess(int index, UniqueFd pool_end, UniqueFd worker_end,
              bool unwatchable)
      : index_(index),
        pool_end_(std::move(pool_end)),
        exit_fd_(unwatchable ? open("/dev/null", O_WRONLY | O_CLOEXEC)
                             : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    int worker_fd = worker_end.release();
    {
      // Recorded before the thread starts, so that an early Kill reaches it.
      absl::MutexLock lock(&mu_);
      worker_fd_ = worker_fd;
    }
    thread_ = std::thread([this, worker_fd] { Serve(worker_fd); });
  }

  ~FakeProcess() override {
    Kill();
    if (thread_.joinable()) thread_.join();
  }

  int pid() const override { return 100000 + index_; }
  int socket_fd() const override { return pool_end_.get(); }
  int exit_fd() const override { return exit_fd_.get(); }
  void Interrupt(uint64_t) override { interrupted_ = true; }
  void Kill() override {
    if (!killed_.exchange(true)) {
      absl::MutexLock lock(&mu_);
      if (worker_fd_ >= 0) shutdown(worker_fd_, SHUT_RDWR);
    }
  }
  std::optional<WorkerExit> TryReap() override {
    absl::MutexLock lock(&mu_);
    if (!exited_) return std::nullopt;
    return WorkerExit{how_, absl::StrContains(how_, "signal") ? DeathCause::kSignal
                                                             : DeathCause::kExit};
  }

 private:
  void Exit(const std::string& how) {
    {
      absl::MutexLock lock(&mu_);
      close(worker_fd_);
      worker_fd_ = -1;
      exited_ = true;
      how_ = how;
    }
    uint64_t one = 1;
    ssize_t ignored = write(exit_fd_.get(), &one, sizeof(one));
    (void)ignored;
  }

  void Serve(int fd) {
    internal::WorkerResponse hello;
    hello.mutable_hello()->set_pid(pid());
    WriteFrame(fd, hello).IgnoreError();
    std::string payload;
    while (true) {
      absl::StatusOr<bool> got = ReadFrame(fd, 1 << 20, &payload);
      if (!got.ok() || !*got) {
        return Exit(killed_ ? "killed by signal SIGKILL" : "exited with code 0");
      }
      internal::WorkerRequest request;
      if (!ParseFramePayload(payload, &request)) return Exit("exited with code 5");
      interrupted_ = false;
      internal::WorkerResponse response;
      response.set_id(request.id());
      const std::string code = request.eval().code();
      int n = 0;
      if (absl::StartsWith(code, "sleep:") &&
          absl::SimpleAtoi(code.substr(6), &n)) {
        absl::Time until = absl::Now() + absl::Milliseconds(n);
        while (absl::Now() < until && !interrupted_ && !killed_) {
          absl::SleepFor(absl::Milliseconds(1));
        }
        if (interrupted_) {
          response.mutable_error()->set_type("KeyboardInterrupt");
        } else {
          response.mutable_value()->set_int_(n);
        }
      } else if (absl::StartsWith(code, "stream:") &&
                 absl::SimpleAtoi(code.substr(7), &n)) {
        for (int i = 0; i < n && !interrupted_ && !killed_; ++i) {
          internal::WorkerResponse partial;
          partial.set_id(request.id());
          partial.set_partial(true);
          partial.mutable_value()->set_int_(i);
          if (!WriteFrame(fd, partial).ok()) return Exit("exited with code 6");
        }
        response.mutable_value()->set_int_(n);
      } else if (std::vector<std::string> big = absl::StrSplit(code, ':');
                 big.size() == 3 && big[0] == "bigstream" && absl::SimpleAtoi(big[1], &n)) {
        size_t bytes = 0;
        if (!absl::SimpleAtoi(big[2], &bytes)) bytes = 0;
        for (int i = 0; i < n && !interrupted_ && !killed_; ++i) {
          internal::WorkerResponse partial;
          partial.set_id(request.id());
          partial.set_partial(true);
          partial.mutable_value()->set_str(std::string(bytes, static_cast<char>('a' + i % 26)));
          if (!WriteFrame(fd, partial).ok()) return Exit("exited with code 6");
        }
        response.mutable_value()->set_int_(n);
      } else if (code == "spin") {
        while (!killed_) absl::SleepFor(absl::Milliseconds(1));
        return Exit("killed by signal SIGKILL");
      } else if (absl::StartsWith(code, "exit:")) {
        return Exit(absl::StrCat("exited with code ", code.substr(5)));
      } else if (code == "garbage") {
        const char junk[] = "\xff\xff\xff\xffgarbage";
        ssize_t ignored = write(fd, junk, sizeof(junk));
        (void)ignored;
        while (!killed_) absl::SleepFor(absl::Milliseconds(1));
        return Exit("killed by signal SIGKILL");
      } else if (code == "close") {
        shutdown(fd, SHUT_RDWR);
        while (!killed_) absl::SleepFor(absl::Milliseconds(1));
        return Exit("killed by signal SIGKILL");
      } else {
        response.mutable_value()->set_str(absl::StrCat(index_, ":", code));
      }
      if (!WriteFrame(fd, response).ok()) return Exit("exited with code 6");
    }
  }

  const int index_;
  UniqueFd pool_end_;
  UniqueFd exit_fd_;
  std::atomic<bool> interrupted_{false};
  std::atomic<bool> killed_{false};
  absl::Mutex mu_;
  int worker_fd_ ABSL_GUARDED_BY(mu_) = -1;
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  std::string how_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace

FakeWorkerLauncher::FakeWorkerLauncher() { signal(SIGPIPE, SIG_IGN); }

absl::StatusOr<std::unique_ptr<WorkerProcess>> FakeWorkerLauncher::Launch() {
  if (fail_launches_ > 0) {
    --fail_launches_;
    return absl::UnavailableError("fake launch failure");
  }
  UniqueFd ours, theirs;
  if (absl::Status s = MakeSocketPair(&ours, &theirs); !s.ok()) return s;
  fcntl(ours.get(), F_SETFL, fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  bool unwatchable = false;
  if (unwatchable_launches_ > 0) {
    --unwatchable_launches_;
    unwatchable = true;
  }
  return std::make_unique<FakeProcess>(++launched_, std::move(ours),
                                       std::move(theirs), unwatchable);
}

}  // namespace pyexec

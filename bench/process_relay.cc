#include "bench/process_relay.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/thread_name.h"

namespace pyexec {
namespace bench {
namespace {

// The helper: echoes each message until its socket closes. Only read() and
// write() on a stack buffer: nothing that could need a lock another thread
// of the parent held at the fork.
[[noreturn]] void RunHelper(int fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "relay_helper");
  static char buffer[ProcessRelay::kMaxPayload];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0);
    if (write(fd, buffer, static_cast<size_t>(n)) != n) _exit(1);
  }
}

absl::Status Errno(const char* what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(errno)));
}

// Marks the eventfd's slot in epoll's data (helpers use their index).
constexpr uint32_t kWakeSlot = ~uint32_t{0};

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessRelay>> ProcessRelay::Start(int helpers) {
  std::unique_ptr<ProcessRelay> relay(new ProcessRelay());
  for (int i = 0; i < helpers; ++i) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return Errno("socketpair");
    }
    const pid_t pid = fork();
    if (pid < 0) {
      close(pair[0]);
      close(pair[1]);
      return Errno("fork");
    }
    if (pid == 0) {
      // The parent's ends of earlier helpers stay with the parent only, so
      // that each helper sees its own socket close.
      for (const Helper& h : relay->helpers_) close(h.fd);
      close(pair[0]);
      RunHelper(pair[1]);
    }
    close(pair[1]);
    relay->helpers_.push_back({pair[0], pid});
  }
  relay->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  relay->wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (relay->epoll_fd_ < 0 || relay->wake_fd_ < 0) return Errno("epoll/eventfd");
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.u32 = kWakeSlot;
  epoll_ctl(relay->epoll_fd_, EPOLL_CTL_ADD, relay->wake_fd_, &wake);
  {
    absl::MutexLock lock(&relay->mu_);
    relay->waiting_.resize(relay->helpers_.size());
    for (size_t i = 0; i < relay->helpers_.size(); ++i) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u32 = static_cast<uint32_t>(i);
      epoll_ctl(relay->epoll_fd_, EPOLL_CTL_ADD, relay->helpers_[i].fd, &ev);
      relay->free_.push_back(i);
    }
  }
  relay->io_ = std::thread([r = relay.get()] { r->Run(); });
  return relay;
}

ProcessRelay::~ProcessRelay() {
  if (io_.joinable()) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
    io_.join();
  }
  std::vector<Done> unanswered;
  {
    absl::MutexLock lock(&mu_);
    for (Done& done : waiting_) {
      if (done) unanswered.push_back(std::move(done));
    }
  }
  for (Done& done : unanswered) done(absl::UnavailableError("the relay stopped"));
  for (const Helper& h : helpers_) {
    close(h.fd);
    kill(h.pid, SIGKILL);
    waitpid(h.pid, nullptr, 0);
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void ProcessRelay::Send(const std::string& payload, Done done) {
  if (payload.size() > kMaxPayload) {
    done(absl::InvalidArgumentError(
        absl::StrCat("payload of ", payload.size(), " bytes; the relay takes ", kMaxPayload)));
    return;
  }
  std::optional<size_t> slot;
  {
    absl::MutexLock lock(&mu_);
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
      waiting_[*slot] = std::move(done);
    }
  }
  if (!slot.has_value()) {
    done(absl::ResourceExhaustedError("every relay helper is busy"));
    return;
  }
  if (send(helpers_[*slot].fd, payload.data(), payload.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(payload.size())) {
    const absl::Status failed = Errno("send to a relay helper");
    if (Done mine = Take(*slot, /*dead=*/true)) mine(failed);
  }
}

std::vector<pid_t> ProcessRelay::helper_pids() const {
  std::vector<pid_t> pids;
  for (const Helper& h : helpers_) pids.push_back(h.pid);
  return pids;
}

ProcessRelay::Done ProcessRelay::Take(size_t i, bool dead) {
  absl::MutexLock lock(&mu_);
  Done done = std::move(waiting_[i]);
  waiting_[i] = nullptr;
  if (dead) {
    free_.erase(std::remove(free_.begin(), free_.end(), i), free_.end());
  } else {
    free_.push_back(i);
  }
  return done;
}

void ProcessRelay::Run() {
  NameThisThread("relay-io");  // as pyexecd's pool-io, in the bench's thread table
  static char buffer[kMaxPayload];  // this thread's only
  epoll_event events[16];
  while (true) {
    const int n = epoll_wait(epoll_fd_, events, 16, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;
    for (int e = 0; e < n; ++e) {
      const uint32_t slot = events[e].data.u32;
      if (slot == kWakeSlot) return;
      const ssize_t got = read(helpers_[slot].fd, buffer, sizeof buffer);
      if (got <= 0) {
        // Gone: out of the epoll set, and never free again.
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, helpers_[slot].fd, nullptr);
        if (Done done = Take(slot, /*dead=*/true)) {
          done(absl::UnavailableError("a relay helper is gone"));
        }
        continue;
      }
      if (Done done = Take(slot, /*dead=*/false)) {
        done(std::string(buffer, static_cast<size_t>(got)));
      }
    }
  }
}

}  // namespace bench
}  // namespace pyexec

#include "integration_tests/cpp_client_testing.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

extern char** environ;

namespace pyexec {
namespace testing_util {

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  return absl::StrCat(srcdir != nullptr ? srcdir : ".", "/pyexec/", path);
}

std::string TmpPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/", name);
}

std::string PyexecdPath() {
  const char* pyexecd = std::getenv("PYEXECD");
  return pyexecd != nullptr && *pyexecd != '\0' ? pyexecd : Runfile("server/pyexecd");
}

std::unique_ptr<bench::ServerProcess> StartPyexecd(const std::vector<std::string>& flags,
                                                   const std::string& log_name) {
  std::vector<std::string> argv = {PyexecdPath()};
  bool has_listen = false;
  for (const std::string& flag : flags) has_listen |= absl::StartsWith(flag, "--listen=");
  if (!has_listen) argv.push_back("--listen=127.0.0.1:0");
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto server = bench::ServerProcess::Start(argv, TmpPath(log_name), absl::Seconds(60));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// ----------------------------------------------------------------- Child

absl::StatusOr<std::unique_ptr<Child>> Child::Start(const std::vector<std::string>& argv) {
  signal(SIGPIPE, SIG_IGN);  // a write to a child that is gone is an error, not our death
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    return absl::InternalError("pipe");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::unique_ptr<Child> child(new Child());
  const int rc = posix_spawn(&child->pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    close(err[0]);
    return absl::InternalError(absl::StrCat("posix_spawn ", argv[0], ": ", std::strerror(rc)));
  }
  child->stdin_fd_ = in[1];
  Child* raw = child.get();
  child->out_thread_ = std::thread([raw, fd = out[0]] { raw->Pump(fd, false); });
  child->err_thread_ = std::thread([raw, fd = err[0]] { raw->Pump(fd, true); });
  return child;
}

void Child::Pump(int fd, bool is_stderr) {
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    absl::MutexLock lock(&mu_);
    (is_stderr ? err_ : out_).append(buffer, static_cast<size_t>(n));
  }
  close(fd);
}

Child::~Child() {
  if (!reaped_) Kill(SIGKILL);
  if (stdin_fd_ >= 0) close(stdin_fd_);
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
}

absl::StatusOr<std::string> Child::WaitForLine(const std::string& needle, absl::Duration timeout,
                                               bool from_stderr) {
  const absl::Time until = absl::Now() + timeout;
  while (absl::Now() < until) {
    {
      absl::MutexLock lock(&mu_);
      const std::string& text = from_stderr ? err_ : out_;
      // Whole lines only: a line being written may not hold all it will.
      absl::string_view complete(text.data(), text.rfind('\n') + 1);
      for (absl::string_view line : absl::StrSplit(complete, '\n')) {
        if (absl::StrContains(line, needle)) return std::string(line);
      }
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("no line with \"", needle, "\"; output: ", Output(from_stderr)));
}

bool Child::Write(const std::string& text) {
  return write(stdin_fd_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

int Child::Kill(int sig) {
  if (reaped_) return -1;
  kill(pid_, sig);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  return status;
}

std::optional<int> Child::Wait(absl::Duration timeout) {
  if (reaped_) return std::nullopt;
  int status = 0;
  const bool exited = WaitUntil(
      [&] {
        pid_t r;
        while ((r = waitpid(pid_, &status, WNOHANG)) < 0 && errno == EINTR) {
        }
        return r != 0;
      },
      timeout);
  if (!exited) return std::nullopt;
  reaped_ = true;
  if (out_thread_.joinable()) out_thread_.join();
  if (err_thread_.joinable()) err_thread_.join();
  return status;
}

std::string Child::Output(bool from_stderr) const {
  absl::MutexLock lock(&mu_);
  return from_stderr ? err_ : out_;
}

// -------------------------------------------------------------- TcpProxy

namespace {

int Dial(const std::string& address) {
  std::vector<std::string> parts = absl::StrSplit(address, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

TcpProxy::TcpProxy(std::string backend) : backend_(std::move(backend)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listen_fd_, 64) != 0 ||
      getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::abort();
  }
  address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() { Stop(); }

void TcpProxy::SetBackend(const std::string& backend) {
  absl::MutexLock lock(&mu_);
  backend_ = backend;
}

void TcpProxy::DropConnections() {
  absl::MutexLock lock(&mu_);
  for (int fd : fds_) shutdown(fd, SHUT_RDWR);
}

void TcpProxy::Stop() {
  if (stopped_.exchange(true)) return;
  shutdown(listen_fd_, SHUT_RDWR);
  accept_thread_.join();
  close(listen_fd_);
  std::vector<std::thread> pipes;
  {
    absl::MutexLock lock(&mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    pipes = std::move(pipes_);
  }
  for (std::thread& t : pipes) t.join();
  absl::MutexLock lock(&mu_);
  for (int fd : fds_) close(fd);
  fds_.clear();
}

int64_t TcpProxy::SettledBytes() const {
  int64_t n = bytes();
  while (true) {
    absl::SleepFor(absl::Milliseconds(150));
    const int64_t m = bytes();
    if (m == n) return n;
    n = m;
  }
}

void TcpProxy::AcceptLoop() {
  while (!stopped_) {
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR) continue;
      return;  // shut down
    }
    std::string backend;
    {
      absl::MutexLock lock(&mu_);
      backend = backend_;
    }
    const int server = Dial(backend);
    if (server < 0) {
      close(client);
      continue;
    }
    absl::MutexLock lock(&mu_);
    fds_.push_back(client);
    fds_.push_back(server);
    pipes_.emplace_back([this, client, server] { Pipe(client, server); });
    pipes_.emplace_back([this, client, server] { Pipe(server, client); });
  }
}

void TcpProxy::Pipe(int from, int to) {
  char buffer[16384];
  while (true) {
    const ssize_t n = read(from, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    ssize_t done = 0;
    while (done < n) {
      const ssize_t w = send(to, buffer + done, static_cast<size_t>(n - done), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        shutdown(from, SHUT_RDWR);
        return;
      }
      done += w;
      bytes_ += w;
    }
  }
  // One direction ended: end both, as a balancer closes the pair.
  shutdown(to, SHUT_RDWR);
  shutdown(from, SHUT_RDWR);
}

}  // namespace testing_util
}  // namespace pyexec

#include "context_pool/worker_output.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/thread_name.h"

namespace pyexec {

absl::StatusOr<std::unique_ptr<WorkerOutputLog>> WorkerOutputLog::Start(Options options) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", strerror(errno)));
  }
  UniqueFd read(fds[0]), write(fds[1]);
  UniqueFd stop(eventfd(0, EFD_CLOEXEC));
  if (!stop.valid()) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  if (!options.sink) {
    options.sink = [](absl::string_view line) {
      LogInfo(absl::StrCat("worker output: ", line));
    };
  }
  auto log = std::unique_ptr<WorkerOutputLog>(
      new WorkerOutputLog(std::move(options), std::move(read), std::move(write),
                          std::move(stop)));
  log->thread_ = std::thread([raw = log.get()] {
    NameThisThread("worker-output");
    raw->Run();
  });
  return log;
}

WorkerOutputLog::WorkerOutputLog(Options options, UniqueFd read, UniqueFd write,
                                 UniqueFd stop)
    : options_(std::move(options)),
      read_(std::move(read)),
      write_(std::move(write)),
      stop_(std::move(stop)) {}

WorkerOutputLog::~WorkerOutputLog() {
  uint64_t one = 1;
  ssize_t ignored = ::write(stop_.get(), &one, sizeof(one));
  (void)ignored;
  if (thread_.joinable()) thread_.join();
}

std::string WorkerOutputLog::Sanitize(absl::string_view line, size_t max_bytes) {
  std::string out;
  for (unsigned char c : line.substr(0, max_bytes)) {
    if (c < 0x20 || c == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (line.size() > max_bytes) absl::StrAppend(&out, " [cut]");
  return out;
}

void WorkerOutputLog::Run() {
  std::string pending;  // bytes of an unfinished line
  // A token bucket over lines' bytes: a burst of a few seconds' budget,
  // refilled as time passes.
  const double capacity = 4.0 * options_.bytes_per_second;
  double budget = capacity;
  absl::Time refilled = absl::Now();
  uint64_t dropped = 0;
  auto emit = [&](absl::string_view line) {
    const absl::Time now = absl::Now();
    budget = std::min(capacity, budget + absl::ToDoubleSeconds(now - refilled) *
                                             options_.bytes_per_second);
    refilled = now;
    const size_t cost = std::min(line.size(), options_.max_line_bytes) + 1;
    if (budget < cost) {
      dropped += line.size() + 1;
      return;
    }
    budget -= cost;
    if (dropped > 0) {
      options_.sink(absl::StrCat("[", dropped, " bytes dropped: over the log budget]"));
      dropped = 0;
    }
    options_.sink(Sanitize(line, options_.max_line_bytes));
  };
  char buffer[65536];
  bool stopping = false;
  while (true) {
    pollfd fds[2] = {{read_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    // Once told to stop, drain what is there without waiting.
    int ready = poll(fds, stopping ? 1 : 2, stopping ? 0 : -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;
    if (!stopping && (fds[1].revents & POLLIN)) {
      stopping = true;
      continue;
    }
    if (!(fds[0].revents & (POLLIN | POLLHUP))) continue;
    ssize_t n = read(read_.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buffer, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      emit(absl::string_view(pending).substr(start, nl - start));
    }
    pending.erase(0, start);
    // A line longer than anything we would log: log its head now, so that
    // memory stays bounded.
    if (pending.size() > 4 * options_.max_line_bytes) {
      emit(pending);
      pending.clear();
    }
  }
  if (!pending.empty()) emit(pending);
  if (dropped > 0) {
    options_.sink(absl::StrCat("[", dropped, " bytes dropped: over the log budget]"));
  }
}

}  // namespace pyexec

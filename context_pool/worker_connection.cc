#include "context_pool/worker_connection.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"

namespace pyexec {

absl::Status WorkerConnection::Send(const google::protobuf::MessageLite& frame) {
  AppendFrame(frame, &outbuf_);
  return Flush();
}

absl::Status WorkerConnection::Flush() {
  size_t done = 0;
  absl::Status status;
  while (done < outbuf_.size()) {
    ssize_t n = send(fd_, outbuf_.data() + done, outbuf_.size() - done,
                     MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      status = absl::UnavailableError(absl::StrCat("socket write failed: ", strerror(errno)));
      outbuf_.clear();
      return status;
    }
  }
  outbuf_.erase(0, done);
  return status;
}

absl::StatusOr<bool> WorkerConnection::DecodeFrames(const FrameHandler& handler) {
  while (!paused_) {
    absl::StatusOr<std::optional<std::string>> frame = decoder_.Next();
    if (!frame.ok()) {
      return absl::DataLossError(absl::StrCat("protocol error: ", frame.status().message()));
    }
    if (!frame->has_value()) return true;
    if (!handler(**frame)) return false;
  }
  return false;
}

absl::Status WorkerConnection::Read(const FrameHandler& handler) {
  char buffer[65536];
  while (!paused_) {
    ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n > 0) {
      decoder_.Append(buffer, static_cast<size_t>(n));
      absl::StatusOr<bool> more = DecodeFrames(handler);
      if (!more.ok()) return more.status();
      if (!*more || static_cast<size_t>(n) < sizeof(buffer)) return absl::OkStatus();
    } else if (n == 0) {
      hung_up_ = true;
      return absl::UnavailableError("protocol error: the worker closed its socket");
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return absl::OkStatus();
    } else {
      return absl::UnavailableError(absl::StrCat("socket read failed: ", strerror(errno)));
    }
  }
  return absl::OkStatus();
}

absl::Status WorkerConnection::Resume(const FrameHandler& handler) {
  paused_ = false;
  // Frames read before the pause come first; they may pause it again.
  absl::StatusOr<bool> more = DecodeFrames(handler);
  if (!more.ok()) return more.status();
  if (!*more) return absl::OkStatus();
  return Read(handler);
}

uint32_t WorkerConnection::epoll_events() const {
  return (paused_ ? 0 : EPOLLIN | EPOLLRDHUP) | (wants_write() ? EPOLLOUT : 0);
}

}  // namespace pyexec

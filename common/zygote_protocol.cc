#include "common/zygote_protocol.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/clock.h"

namespace pyexec {
namespace {

// The fixed part of a fork request; the private directory follows it.
struct RequestHeader {
  uint32_t magic;
  uint32_t private_dir_length;
  int64_t uid;
  int64_t gid;
};

absl::Status WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat("zygote control: ", strerror(errno)));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// Reads exactly `size` bytes; an infinite deadline waits forever.
absl::Status ReadAll(int fd, void* data, size_t size, absl::Time deadline) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    if (deadline != absl::InfiniteFuture()) {
      int64_t ms = absl::ToInt64Milliseconds(deadline - MonotonicNow());
      pollfd pfd{fd, POLLIN, 0};
      int r = ms <= 0 ? 0 : poll(&pfd, 1, static_cast<int>(ms));
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) return absl::UnavailableError("the zygote did not answer in time");
    }
    ssize_t n = read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return absl::CancelledError("the other end closed the control socket");
    if (n < 0) {
      return absl::UnavailableError(absl::StrCat("zygote control: ", strerror(errno)));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteZygoteReady(int control, const absl::Status& preload) {
  std::string text = preload.ok() ? "" : std::string(preload.message());
  if (!preload.ok() && text.empty()) text = "preload failed";
  uint32_t length = static_cast<uint32_t>(text.size());
  if (absl::Status s = WriteAll(control, &length, sizeof(length)); !s.ok()) return s;
  return WriteAll(control, text.data(), text.size());
}

absl::StatusOr<ZygoteRequest> ReceiveZygoteRequest(int control) {
  RequestHeader header{};
  iovec iov{&header, sizeof(header)};
  alignas(cmsghdr) char control_buffer[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control_buffer;
  msg.msg_controllen = sizeof(control_buffer);
  ssize_t n;
  do {
    n = recvmsg(control, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return absl::CancelledError("pyexecd closed the control socket");
  if (n < 0) return absl::UnavailableError(absl::StrCat("recvmsg: ", strerror(errno)));
  UniqueFd fd;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int received;
      memcpy(&received, CMSG_DATA(c), sizeof(received));
      fd.reset(received);
    }
  }
  if (n != sizeof(header) || header.magic != kZygoteForkMagic || !fd.valid() ||
      header.private_dir_length > 4096) {
    return absl::DataLossError("malformed zygote request");
  }
  ZygoteRequest request;
  request.socket = std::move(fd);
  request.uid = header.uid;
  request.gid = header.gid;
  request.private_dir.resize(header.private_dir_length);
  absl::Status s = ReadAll(control, request.private_dir.data(),
                           header.private_dir_length, absl::InfiniteFuture());
  if (!s.ok()) return s;
  return request;
}

absl::Status WriteZygoteReply(int control, pid_t pid_or_errno) {
  int32_t value = pid_or_errno;
  return WriteAll(control, &value, sizeof(value));
}

absl::Status ReadZygoteReady(int control, absl::Time deadline) {
  uint32_t length = 0;
  absl::Status s = ReadAll(control, &length, sizeof(length), deadline);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "the zygote did not start (see its log above): ", s.message()));
  }
  if (length == 0) return absl::OkStatus();
  std::string text(std::min<uint32_t>(length, 1 << 20), '\0');
  s = ReadAll(control, text.data(), text.size(), deadline);
  if (!s.ok()) return absl::UnavailableError("the zygote died while reporting");
  return absl::FailedPreconditionError(text);
}

absl::Status SendZygoteRequest(int control, int worker_socket,
                               const std::string& private_dir, int64_t uid,
                               int64_t gid) {
  RequestHeader header{kZygoteForkMagic, static_cast<uint32_t>(private_dir.size()),
                       uid, gid};
  iovec iov{&header, sizeof(header)};
  alignas(cmsghdr) char control_buffer[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control_buffer;
  msg.msg_controllen = sizeof(control_buffer);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &worker_socket, sizeof(int));
  ssize_t n;
  do {
    n = sendmsg(control, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof(header))) {
    return absl::UnavailableError(absl::StrCat("the zygote is gone (sendmsg: ",
                                               strerror(errno), ")"));
  }
  return WriteAll(control, private_dir.data(), private_dir.size());
}

absl::StatusOr<pid_t> ReadZygoteReply(int control, absl::Time deadline) {
  int32_t value = 0;
  absl::Status s = ReadAll(control, &value, sizeof(value), deadline);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat("the zygote is gone: ", s.message()));
  if (value <= 0) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the zygote could not fork: ", strerror(-value)));
  }
  return static_cast<pid_t>(value);
}

}  // namespace pyexec

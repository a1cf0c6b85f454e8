#ifndef PYEXEC_CONTEXT_POOL_WORKER_CONNECTION_H_
#define PYEXEC_CONTEXT_POOL_WORKER_CONNECTION_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "common/frame.h"
#include "google/protobuf/message_lite.h"

namespace pyexec {

// The pool's end of one worker's frame socket (non-blocking, not owned):
// frames out through a write buffer, frames in through a decoder, and the
// read pause that is a streamed call's backpressure (while paused, frames
// stay in the socket, the worker blocks writing, and its Python pauses).
//
// Not thread-safe: the pool's lock serialises every use.
class WorkerConnection {
 public:
  // Handles one complete frame; returns false to stop reading (the worker
  // was condemned, or reading was paused).
  using FrameHandler = std::function<bool(const std::string& payload)>;

  WorkerConnection(int fd, size_t max_frame_bytes) : fd_(fd), decoder_(max_frame_bytes) {}

  // Queues `frame` and writes what the socket takes now. An error means the
  // socket failed: the worker must go.
  absl::Status Send(const google::protobuf::MessageLite& frame);
  // Writes what is buffered (the socket became writable).
  absl::Status Flush();
  bool wants_write() const { return !outbuf_.empty(); }

  // Reads what the socket has and hands each complete frame to `handler`,
  // until it would block, reading is paused, or the handler says stop. An
  // error means EOF, a failed read or a bad frame header: the worker must
  // go.
  absl::Status Read(const FrameHandler& handler);
  // Backpressure: frames are not read until Resume.
  void Pause() { paused_ = true; }
  bool paused() const { return paused_; }
  // The worker closed its end (Read saw end of file): it has exited, or is
  // exiting, or closed the socket itself.
  bool hung_up() const { return hung_up_; }
  // Hands out the frames read before the pause (which may pause again),
  // then reads the socket again.
  absl::Status Resume(const FrameHandler& handler);

  // The epoll interest this state needs: EPOLLIN | EPOLLRDHUP unless paused,
  // EPOLLOUT while there is something to write.
  uint32_t epoll_events() const;

 private:
  // Hands out decoded frames; false when it stopped early.
  absl::StatusOr<bool> DecodeFrames(const FrameHandler& handler);

  const int fd_;
  std::string outbuf_;  // frame bytes not yet written
  FrameDecoder decoder_;
  bool paused_ = false;
  bool hung_up_ = false;
};

}  // namespace pyexec

#endif  // PYEXEC_CONTEXT_POOL_WORKER_CONNECTION_H_

#ifndef PYEXEC_COMMON_FRAME_H_
#define PYEXEC_COMMON_FRAME_H_

// Framing of the server <-> worker protocol: each message is a 4-byte
// big-endian payload length followed by the serialized protobuf.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"

namespace pyexec {

inline constexpr size_t kFrameHeaderBytes = 4;

// Protobuf nesting the frame parser accepts. A Value costs one level per
// container level, so this leaves room above the Value depth limit (at most
// 100) for the enclosing request/response messages.
inline constexpr int kFrameParseRecursionLimit = 160;

// Appends the frame for `message` (header and payload) to `out`.
void AppendFrame(const google::protobuf::MessageLite& message, std::string* out);

// Parses a frame payload with kFrameParseRecursionLimit.
bool ParseFramePayload(absl::string_view payload,
                       google::protobuf::MessageLite* message);

// The `id` (field 1, a varint) of a serialized WorkerRequest or
// WorkerResponse, read without parsing the rest: a frame that does not parse
// as a whole can still be answered under its id. 0 if there is none.
uint64_t FrameRequestId(absl::string_view payload);

// Reassembles frames from a byte stream that arrives in arbitrary pieces.
// Not thread-safe.
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_payload_bytes)
      : max_payload_bytes_(max_payload_bytes) {}

  // Adds bytes received from the stream.
  void Append(const char* data, size_t size) { buffer_.append(data, size); }

  // Returns the next complete payload, std::nullopt when more bytes are
  // needed, or an error when the header announces more than
  // max_payload_bytes (the stream cannot be trusted after that).
  absl::StatusOr<std::optional<std::string>> Next();

  // Bytes held that do not yet form a complete frame.
  size_t buffered_bytes() const { return buffer_.size() - offset_; }

 private:
  const size_t max_payload_bytes_;
  std::string buffer_;
  size_t offset_ = 0;  // start of the first unconsumed byte in buffer_
};

// Blocking helpers for the worker, which handles one request at a time.

// Writes the whole frame, retrying on EINTR and short writes.
absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message);

// Reads one frame payload into `payload`. Returns false on a clean EOF before
// the first header byte; an error on a truncated frame, an oversized header or
// a read error.
absl::StatusOr<bool> ReadFrame(int fd, size_t max_payload_bytes,
                               std::string* payload);

}  // namespace pyexec

#endif  // PYEXEC_COMMON_FRAME_H_

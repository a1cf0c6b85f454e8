#include "common/frame.h"

#include <errno.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace pyexec {
namespace {

uint32_t DecodeLength(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) |
         (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

// Reads exactly `size` bytes. Returns the number read before EOF.
absl::StatusOr<size_t> ReadFully(int fd, char* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = read(fd, data + done, size - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("read from the server failed: ", strerror(errno)));
    }
  }
  return done;
}

}  // namespace

void AppendFrame(const google::protobuf::MessageLite& message,
                 std::string* out) {
  size_t size = message.ByteSizeLong();
  size_t start = out->size();
  out->resize(start + kFrameHeaderBytes + size);
  char* p = out->data() + start;
  p[0] = static_cast<char>((size >> 24) & 0xff);
  p[1] = static_cast<char>((size >> 16) & 0xff);
  p[2] = static_cast<char>((size >> 8) & 0xff);
  p[3] = static_cast<char>(size & 0xff);
  message.SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(p + kFrameHeaderBytes));
}

bool ParseFramePayload(absl::string_view payload,
                       google::protobuf::MessageLite* message) {
  google::protobuf::io::CodedInputStream input(
      reinterpret_cast<const uint8_t*>(payload.data()),
      static_cast<int>(payload.size()));
  input.SetRecursionLimit(kFrameParseRecursionLimit);
  return message->ParseFromCodedStream(&input) &&
         input.ConsumedEntireMessage();
}

uint64_t FrameRequestId(absl::string_view payload) {
  google::protobuf::io::CodedInputStream input(
      reinterpret_cast<const uint8_t*>(payload.data()),
      static_cast<int>(payload.size()));
  input.SetRecursionLimit(kFrameParseRecursionLimit);
  using google::protobuf::internal::WireFormatLite;
  while (uint32_t tag = input.ReadTag()) {
    if (WireFormatLite::GetTagFieldNumber(tag) == 1 &&
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_VARINT) {
      uint64_t id = 0;
      return input.ReadVarint64(&id) ? id : 0;
    }
    if (!WireFormatLite::SkipField(&input, tag)) return 0;
  }
  return 0;
}

absl::StatusOr<std::optional<std::string>> FrameDecoder::Next() {
  if (buffered_bytes() < kFrameHeaderBytes) return std::nullopt;
  uint32_t size = DecodeLength(buffer_.data() + offset_);
  if (size > max_payload_bytes_) {
    return absl::DataLossError(absl::StrCat("frame of ", size,
                                            " bytes exceeds the limit of ",
                                            max_payload_bytes_));
  }
  if (buffered_bytes() < kFrameHeaderBytes + size) return std::nullopt;
  std::string payload = buffer_.substr(offset_ + kFrameHeaderBytes, size);
  offset_ += kFrameHeaderBytes + size;
  // Compact once consumed bytes dominate, keeping appends amortised O(1).
  if (offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  } else if (offset_ > 65536 && offset_ * 2 > buffer_.size()) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  return std::optional<std::string>(std::move(payload));
}

absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message) {
  std::string frame;
  AppendFrame(message, &frame);
  size_t done = 0;
  while (done < frame.size()) {
    ssize_t n = write(fd, frame.data() + done, frame.size() - done);
    if (n >= 0) {
      done += static_cast<size_t>(n);
    } else if (errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("write to the server failed: ", strerror(errno)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> ReadFrame(int fd, size_t max_payload_bytes,
                               std::string* payload) {
  char header[kFrameHeaderBytes];
  absl::StatusOr<size_t> got = ReadFully(fd, header, sizeof(header));
  if (!got.ok()) return got.status();
  if (*got == 0) return false;
  if (*got < sizeof(header)) return absl::DataLossError("truncated frame header");
  uint32_t size = DecodeLength(header);
  if (size > max_payload_bytes) {
    return absl::DataLossError(absl::StrCat(
        "frame of ", size, " bytes exceeds the limit of ", max_payload_bytes));
  }
  payload->resize(size);
  got = ReadFully(fd, payload->data(), size);
  if (!got.ok()) return got.status();
  if (*got < size) return absl::DataLossError("truncated frame payload");
  return true;
}

}  // namespace pyexec

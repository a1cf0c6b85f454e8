// Fuzzes the worker protocol's frame decoder (FrameDecoder) and the frame
// payload parser (ParseFramePayload) with both message types.
//
// Input: byte 0 seeds the chunk sizes; the rest is the byte stream. The
// decoder must return exactly the frames a straightforward reference parse
// of the whole stream finds, whatever the chunking, and stop with an error
// exactly where a header announces more than the limit.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"
#include <optional>
#include <string>
#include <vector>

#include "common/frame.h"
#include "pyexec/v1/worker.pb.h"

namespace {

constexpr size_t kMaxPayload = 1 << 12;

struct Reference {
  std::vector<std::string> payloads;
  bool oversized = false;  // stopped at a header announcing > kMaxPayload
};

Reference ReferenceParse(const std::string& stream) {
  Reference out;
  size_t pos = 0;
  while (stream.size() - pos >= pyexec::kFrameHeaderBytes) {
    const auto* p = reinterpret_cast<const unsigned char*>(stream.data() + pos);
    const uint32_t length = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
                            (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    if (length > kMaxPayload) {
      out.oversized = true;
      return out;
    }
    if (stream.size() - pos - pyexec::kFrameHeaderBytes < length) break;
    out.payloads.push_back(stream.substr(pos + pyexec::kFrameHeaderBytes, length));
    pos += pyexec::kFrameHeaderBytes + length;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is routine here; do not log each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint32_t chunk_seed = data[0] | 1u;
  const std::string stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Reference expected = ReferenceParse(stream);

  pyexec::FrameDecoder decoder(kMaxPayload);
  std::vector<std::string> got;
  bool failed = false;
  size_t pos = 0;
  while (pos < stream.size() && !failed) {
    chunk_seed = chunk_seed * 1103515245u + 12345u;
    const size_t chunk = std::min<size_t>(stream.size() - pos, 1 + (chunk_seed >> 16) % 97);
    decoder.Append(stream.data() + pos, chunk);
    pos += chunk;
    while (true) {
      absl::StatusOr<std::optional<std::string>> next = decoder.Next();
      if (!next.ok()) {
        failed = true;
        break;
      }
      if (!next->has_value()) break;
      got.push_back(**next);
    }
  }
  if (failed != expected.oversized || got != expected.payloads) std::abort();

  for (const std::string& payload : got) {
    // Whatever parses must serialise and reparse to the same message: the
    // pool and the worker trust each other's frames after this point.
    pyexec::internal::WorkerRequest request;
    if (pyexec::ParseFramePayload(payload, &request)) {
      pyexec::internal::WorkerRequest again;
      if (!pyexec::ParseFramePayload(request.SerializeAsString(), &again)) std::abort();
    }
    pyexec::internal::WorkerResponse response;
    if (pyexec::ParseFramePayload(payload, &response)) {
      std::string framed;
      pyexec::AppendFrame(response, &framed);
      pyexec::FrameDecoder redecode(framed.size());
      redecode.Append(framed.data(), framed.size());
      absl::StatusOr<std::optional<std::string>> one = redecode.Next();
      if (!one.ok() || !one->has_value()) std::abort();
    }
  }
  return 0;
}

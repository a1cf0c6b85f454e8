#ifndef PYEXEC_COMMON_LIMITS_H_
#define PYEXEC_COMMON_LIMITS_H_

// Worker limits, defined once. pyexecd's flags default to these, the option
// structs of the pool, the launchers and the runner start from them, and the
// worker's own flags use them when it is started by hand.

#include <cstddef>
#include <cstdint>

namespace pyexec {

// Captured stdout and stderr per call, each.
inline constexpr uint64_t kDefaultMaxOutputBytes = 1 << 20;
// Container nesting of Values.
inline constexpr int kDefaultMaxValueDepth = 64;
// The deepest nesting pyexecd accepts as --max_value_depth.
inline constexpr int kMaxValueDepthCeiling = 100;
// Largest gRPC message, request or response.
inline constexpr int kDefaultMaxMessageBytes = 64 << 20;
// Room for framing and the request envelope around one gRPC message.
inline constexpr uint64_t kFrameOverheadBytes = 4096;
// Largest frame either side accepts: one message plus its envelope.
inline constexpr uint64_t kDefaultMaxFrameBytes =
    static_cast<uint64_t>(kDefaultMaxMessageBytes) + kFrameOverheadBytes;

}  // namespace pyexec

#endif  // PYEXEC_COMMON_LIMITS_H_

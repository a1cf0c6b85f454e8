#ifndef PYEXEC_SERVER_CALL_METADATA_H_
#define PYEXEC_SERVER_CALL_METADATA_H_

// Metadata a client may attach to a call, and that travels with it when a
// replica forwards it.

namespace pyexec {

// The client's name for the call, for an Interrupt that names it
// (InterruptRequest.call_id).
inline constexpr char kCallIdHeader[] = "x-pyexec-call-id";
// The callback (CallbackRequest.id) the client is running when it makes the
// call: the call runs nested on the interpreter waiting for that callback.
inline constexpr char kCallbackHeader[] = "x-pyexec-callback";
// The longest value either may have.
inline constexpr int kMaxCallMetadataBytes = 128;

}  // namespace pyexec

#endif  // PYEXEC_SERVER_CALL_METADATA_H_

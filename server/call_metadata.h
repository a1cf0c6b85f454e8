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
// Sent by a replica that forwarded the call, in its initial metadata: the
// address of the session's owner, which a client that can reach it dials
// directly for the session's next calls (BindResponse.owner).
inline constexpr char kOwnerHeader[] = "x-pyexec-owner";
// Any value: the client asks for the call's per-stage trace, which comes
// back in the trailing metadata of the same name (see TraceText).
inline constexpr char kTraceHeader[] = "x-pyexec-trace";
// Put by a draining replica on the Bind{restore} that moves a session to a
// peer (server/migrator.h): the session's token, which the peer keeps.
// Honoured only on calls an authenticated peer forwarded.
inline constexpr char kMovedTokenHeader[] = "x-pyexec-moved-token";
// The longest value a client's metadata above may have.
inline constexpr int kMaxCallMetadataBytes = 128;

}  // namespace pyexec

#endif  // PYEXEC_SERVER_CALL_METADATA_H_

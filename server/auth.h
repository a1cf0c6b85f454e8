#ifndef PYEXEC_SERVER_AUTH_H_
#define PYEXEC_SERVER_AUTH_H_

// Who is calling: bearer tokens from a file, the mTLS client identity, and
// principals asserted by authenticated peer replicas (forwarded calls).

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"

namespace pyexec {

// Metadata keys of the peer-forwarding contract (see README, "Security").
// A replica that forwards a call to the session's owner sets
// kForwardedHeader to "1", kPrincipalHeader to the caller's principal, and
// proves it is a peer with kPeerSecretHeader (or its mTLS certificate).
inline constexpr char kForwardedHeader[] = "x-pyexec-forwarded";
inline constexpr char kPrincipalHeader[] = "x-pyexec-principal";
inline constexpr char kPeerSecretHeader[] = "x-pyexec-peer-secret";

// Settings of the Authenticator. Filled from flags in main.cc.
struct AuthOptions {
  // `PRINCIPAL TOKEN` lines; clients send `authorization: Bearer TOKEN`.
  // Empty: no bearer tokens.
  std::string tokens_file;
  // Client certificates are required and verified by TLS (mTLS): a caller
  // without a bearer token is the principal named by its certificate.
  bool mtls = false;
  // A file holding the secret peers send as x-pyexec-peer-secret. Empty: no
  // shared secret (peers may still authenticate by mTLS).
  std::string peer_secret_file;
  // mTLS identities (SAN or CN) of peer replicas, which may assert a
  // principal with x-pyexec-principal.
  std::vector<std::string> peer_identities;
};

// What authentication looks at in one call, free of gRPC so that it can be
// unit-tested. Built from a ServerContext by AuthRequestFrom.
struct AuthRequest {
  // The `authorization` metadata, if any.
  std::optional<std::string> authorization;
  // The verified client-certificate identities (SANs, then CN), empty when
  // the peer presented none or TLS is off.
  std::vector<std::string> peer_identities;
  // x-pyexec-principal and x-pyexec-peer-secret, if present.
  std::optional<std::string> asserted_principal;
  std::optional<std::string> peer_secret;
};

// One `PRINCIPAL TOKEN` entry of a tokens file.
struct TokenEntry {
  std::string principal;
  std::string token;
};

// Parses a tokens file: one `PRINCIPAL TOKEN` pair per line, separated by
// blanks; `#` at the start of a line or after a blank starts a comment;
// blank lines are skipped. Errors name the line number, never its content
// (which may be a token). A token listed twice is an error.
absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view text);

// Compares two strings in time that depends only on `presented`'s length,
// not on where they differ.
bool ConstantTimeEquals(absl::string_view expected, absl::string_view presented);

// Decides who a call comes from. Thread-safe: Authenticate runs on gRPC
// threads while Reload runs on the reaper thread or at SIGHUP.
//
// Rules, in order:
//   1. x-pyexec-principal present: accepted only from an authenticated peer
//      (x-pyexec-peer-secret equal to the peer secret, or a verified client
//      certificate listed in peer_identities); otherwise UNAUTHENTICATED.
//   2. When authentication is off (no tokens file, no mTLS): principal "".
//   3. `authorization: Bearer TOKEN` with a known token: its principal. A
//      token that is present but unknown is UNAUTHENTICATED even with mTLS.
//   4. With mTLS, the client certificate's identity.
//   5. Otherwise UNAUTHENTICATED.
class Authenticator {
 public:
  // Loads the files once. Fails if a configured file is unreadable or
  // malformed.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(
      AuthOptions options);

  // True once any client authentication (tokens or mTLS) is configured.
  bool enabled() const { return !options_.tokens_file.empty() || options_.mtls; }

  // The principal of the call, or UNAUTHENTICATED with a message that never
  // contains the presented credentials.
  absl::StatusOr<std::string> Authenticate(const AuthRequest& request) const;
  // OK if the request comes from a peer replica (its secret or its mTLS
  // identity), or authentication is off; UNAUTHENTICATED otherwise. For
  // calls replicas make on their own behalf (proto/pyexec/v1/peer.proto).
  absl::Status AuthenticatePeer(const AuthRequest& request) const;

  // Re-reads the files. On error the previous contents stay in force.
  absl::Status Reload();
  // Re-reads the files if one changed (mtime, size or inode) since the last
  // load. Returns whether it reloaded, or the reload's error.
  absl::StatusOr<bool> ReloadIfChanged();

  // Number of tokens in force (for logs; never the tokens themselves).
  size_t token_count() const;
  // The peer secret in force ("" without one): snapshots are sealed with a
  // key derived from it (server/snapshot_seal.h).
  std::string peer_secret() const {
    absl::MutexLock lock(&mu_);
    return peer_secret_;
  }

  // Metadata a replica adds to a call it forwards to a peer on behalf of
  // `principal`: x-pyexec-forwarded, x-pyexec-principal and, when a peer
  // secret is configured, x-pyexec-peer-secret.
  std::vector<std::pair<std::string, std::string>> PeerMetadata(
      absl::string_view principal) const;

 private:
  explicit Authenticator(AuthOptions options) : options_(std::move(options)) {}
  bool IsPeerLocked(const AuthRequest& request) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Identity of a file's current version.
  struct FileStamp {
    bool exists = false;
    int64_t mtime_ns = 0;
    int64_t size = 0;
    uint64_t inode = 0;
    bool operator==(const FileStamp& o) const {
      return exists == o.exists && mtime_ns == o.mtime_ns && size == o.size &&
             inode == o.inode;
    }
  };
  static FileStamp Stamp(const std::string& path);

  const AuthOptions options_;
  mutable absl::Mutex mu_;
  std::vector<TokenEntry> tokens_ ABSL_GUARDED_BY(mu_);
  std::string peer_secret_ ABSL_GUARDED_BY(mu_);
  FileStamp tokens_stamp_ ABSL_GUARDED_BY(mu_);
  FileStamp secret_stamp_ ABSL_GUARDED_BY(mu_);
};

// The parts of a gRPC call that authentication looks at.
AuthRequest AuthRequestFrom(const grpc::ServerContextBase& context);

// Whether a listen address is reachable only from this machine: a loopback
// IP (127.0.0.0/8, ::1), `localhost`, or a unix socket.
bool IsLoopbackListenAddress(absl::string_view listen);

// Secure by default: refuses a non-loopback listen address when no client
// authentication is configured, unless `allow_unauthenticated`. The error
// says how to fix it.
absl::Status CheckListenIsSafe(absl::string_view listen, bool auth_enabled,
                               bool allow_unauthenticated);

}  // namespace pyexec

#endif  // PYEXEC_SERVER_AUTH_H_

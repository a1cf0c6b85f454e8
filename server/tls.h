#ifndef PYEXEC_SERVER_TLS_H_
#define PYEXEC_SERVER_TLS_H_

// Transport credentials: TLS for the listening port (optionally requiring
// client certificates: mTLS), and for channels to peer replicas. Certificate
// files are watched by gRPC's FileWatcherCertificateProvider, so rotated
// files take effect without a restart.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace pyexec {

// Settings of TLS. Filled from flags in main.cc.
struct TlsOptions {
  // PEM certificate chain and private key of this server. Both or neither;
  // neither means plaintext.
  std::string cert_file;
  std::string key_file;
  // PEM bundle of CAs that sign client certificates. Set: clients must
  // present a certificate that verifies against it (mTLS).
  std::string client_ca_file;
  // How often the files are checked for rotation.
  absl::Duration refresh_interval = absl::Seconds(60);

  bool enabled() const { return !cert_file.empty(); }
  bool mtls() const { return !client_ca_file.empty(); }
};

// Insecure credentials when TLS is off, else TLS (mTLS with a client CA)
// credentials backed by a file watcher. Fails on an inconsistent
// configuration (a key without a certificate, a client CA without TLS) or
// unreadable files, naming the flag to fix.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options);

// Credentials for a channel to a peer replica. With TLS on, the peer's
// server certificate must verify against `peer_ca_file` (default: the
// client CA, i.e. one internal CA for the fleet), and this replica presents
// its own certificate as a client certificate, so that an mTLS peer can
// authenticate it. Plaintext when TLS is off.
std::shared_ptr<grpc::ChannelCredentials> MakePeerChannelCredentials(
    const TlsOptions& options, const std::string& peer_ca_file = "");

}  // namespace pyexec

#endif  // PYEXEC_SERVER_TLS_H_

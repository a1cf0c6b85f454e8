#include "server/tls.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace pyexec {
namespace {

absl::Status CheckReadable(const std::string& path, absl::string_view flag) {
  if (access(path.c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, ": cannot read ", path));
  }
  return absl::OkStatus();
}

unsigned int RefreshSeconds(const TlsOptions& options) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, absl::ToInt64Seconds(options.refresh_interval)));
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsOptions& options) {
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together");
  }
  if (!options.enabled()) {
    if (options.mtls()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs TLS: set --tls_cert_file and "
          "--tls_key_file too");
    }
    return grpc::InsecureServerCredentials();
  }
  for (const auto& [path, flag] :
       {std::pair{options.cert_file, "--tls_cert_file"},
        std::pair{options.key_file, "--tls_key_file"},
        std::pair{options.client_ca_file, "--tls_client_ca_file"}}) {
    if (path.empty()) continue;
    if (absl::Status s = CheckReadable(path, flag); !s.ok()) return s;
  }
  // The watcher re-reads the files every refresh interval and swaps them in
  // for new handshakes; established connections keep their keys.
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options.key_file, options.cert_file, options.client_ca_file,
          RefreshSeconds(options));
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.mtls()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

std::shared_ptr<grpc::ChannelCredentials> MakePeerChannelCredentials(
    const TlsOptions& options, const std::string& peer_ca_file) {
  if (!options.enabled()) return grpc::InsecureChannelCredentials();
  std::string roots = peer_ca_file.empty() ? options.client_ca_file : peer_ca_file;
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          options.key_file, options.cert_file, roots, RefreshSeconds(options));
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(provider);
  tls.watch_identity_key_cert_pairs();
  if (!roots.empty()) tls.watch_root_certs();
  return grpc::experimental::TlsCredentials(tls);
}

}  // namespace pyexec

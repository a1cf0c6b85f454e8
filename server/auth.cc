#include "server/auth.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/auth_context.h"

namespace pyexec {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::FailedPreconditionError(absl::StrCat("cannot read ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The value of a metadata key, if the client sent it.
std::optional<std::string> Metadata(const grpc::ServerContextBase& context,
                                    absl::string_view key) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(grpc::string_ref(key.data(), key.size()));
  if (it == metadata.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(why);
}

}  // namespace

bool ConstantTimeEquals(absl::string_view expected, absl::string_view presented) {
  // Walk `presented` whole; reading `expected` cyclically keeps the loop the
  // same whatever its length. An empty secret never matches.
  if (expected.empty()) return false;
  volatile unsigned char diff = expected.size() != presented.size();
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i % expected.size()] ^ presented[i]);
  }
  return diff == 0;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view text) {
  std::vector<TokenEntry> entries;
  absl::flat_hash_set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    // A comment starts at a '#' that begins the line or follows a blank.
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || absl::ascii_isspace(line[i - 1]))) {
        line = line.substr(0, i);
        break;
      }
    }
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokens file line ", line_number, ": expected `PRINCIPAL TOKEN`, got ",
          fields.size(), " fields"));
    }
    if (!seen.insert(std::string(fields[1])).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokens file line ", line_number, ": this token is already listed"));
    }
    entries.push_back(TokenEntry{std::string(fields[0]), std::string(fields[1])});
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    AuthOptions options) {
  std::unique_ptr<Authenticator> auth(new Authenticator(std::move(options)));
  if (absl::Status s = auth->Reload(); !s.ok()) return s;
  return auth;
}

Authenticator::FileStamp Authenticator::Stamp(const std::string& path) {
  FileStamp stamp;
  struct stat st;
  if (path.empty() || stat(path.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                   st.st_mtim.tv_nsec;
  stamp.size = st.st_size;
  stamp.inode = st.st_ino;
  return stamp;
}

absl::Status Authenticator::Reload() {
  // Stamp before reading: a write racing with the read changes the stamp
  // again, so the next check reloads.
  FileStamp tokens_stamp = Stamp(options_.tokens_file);
  FileStamp secret_stamp = Stamp(options_.peer_secret_file);
  std::vector<TokenEntry> tokens;
  if (!options_.tokens_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile(options_.tokens_file);
    if (!text.ok()) return text.status();
    absl::StatusOr<std::vector<TokenEntry>> parsed = ParseTokens(*text);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(),
                          absl::StrCat(options_.tokens_file, ": ",
                                       parsed.status().message()));
    }
    tokens = std::move(*parsed);
  }
  std::string secret;
  if (!options_.peer_secret_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile(options_.peer_secret_file);
    if (!text.ok()) return text.status();
    secret = std::string(absl::StripAsciiWhitespace(*text));
    if (secret.size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          options_.peer_secret_file,
          ": the peer secret must be at least 16 characters"));
    }
  }
  absl::MutexLock lock(&mu_);
  tokens_ = std::move(tokens);
  peer_secret_ = std::move(secret);
  tokens_stamp_ = tokens_stamp;
  secret_stamp_ = secret_stamp;
  return absl::OkStatus();
}

absl::StatusOr<bool> Authenticator::ReloadIfChanged() {
  {
    absl::MutexLock lock(&mu_);
    if (Stamp(options_.tokens_file) == tokens_stamp_ &&
        Stamp(options_.peer_secret_file) == secret_stamp_) {
      return false;
    }
  }
  absl::Status s = Reload();
  if (!s.ok()) {
    // Do not retry a broken file every second; the next change will.
    absl::MutexLock lock(&mu_);
    tokens_stamp_ = Stamp(options_.tokens_file);
    secret_stamp_ = Stamp(options_.peer_secret_file);
    return s;
  }
  return true;
}

size_t Authenticator::token_count() const {
  absl::MutexLock lock(&mu_);
  return tokens_.size();
}

bool Authenticator::IsPeerLocked(const AuthRequest& request) const {
  bool peer = request.peer_secret.has_value() && !peer_secret_.empty() &&
              ConstantTimeEquals(peer_secret_, *request.peer_secret);
  for (const std::string& id : request.peer_identities) {
    for (const std::string& allowed : options_.peer_identities) {
      peer = peer || id == allowed;
    }
  }
  return peer;
}

absl::Status Authenticator::AuthenticatePeer(const AuthRequest& request) const {
  absl::MutexLock lock(&mu_);
  if (!enabled() && peer_secret_.empty() && options_.peer_identities.empty()) {
    return absl::OkStatus();
  }
  if (IsPeerLocked(request)) return absl::OkStatus();
  return Unauthenticated("only a peer replica may make this call");
}

absl::StatusOr<std::string> Authenticator::Authenticate(
    const AuthRequest& request) const {
  absl::MutexLock lock(&mu_);
  if (request.asserted_principal.has_value() &&
      !request.asserted_principal->empty()) {
    const bool peer = IsPeerLocked(request);
    if (!peer) {
      return Unauthenticated(absl::StrCat(
          kPrincipalHeader,
          " is accepted only from an authenticated peer replica"));
    }
    return *request.asserted_principal;
  }
  if (!enabled()) return std::string();

  if (request.authorization.has_value() && !options_.tokens_file.empty()) {
    absl::string_view value = absl::StripAsciiWhitespace(*request.authorization);
    if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
      return Unauthenticated(
          "the authorization metadata must be `Bearer TOKEN`");
    }
    absl::string_view presented = absl::StripLeadingAsciiWhitespace(value.substr(7));
    // Compare with every token, so the time taken does not tell which one
    // (or how much of one) matched.
    const TokenEntry* match = nullptr;
    for (const TokenEntry& entry : tokens_) {
      if (ConstantTimeEquals(entry.token, presented)) match = &entry;
    }
    if (match == nullptr) return Unauthenticated("invalid bearer token");
    return match->principal;
  }
  if (options_.mtls && !request.peer_identities.empty()) {
    return request.peer_identities.front();
  }
  return Unauthenticated(
      options_.tokens_file.empty()
          ? "a verified client certificate is required"
          : "missing credentials: send `authorization: Bearer TOKEN`");
}

std::vector<std::pair<std::string, std::string>> Authenticator::PeerMetadata(
    absl::string_view principal) const {
  std::vector<std::pair<std::string, std::string>> metadata = {
      {kForwardedHeader, "1"}, {kPrincipalHeader, std::string(principal)}};
  absl::MutexLock lock(&mu_);
  if (!peer_secret_.empty()) metadata.emplace_back(kPeerSecretHeader, peer_secret_);
  return metadata;
}

AuthRequest AuthRequestFrom(const grpc::ServerContextBase& context) {
  AuthRequest request;
  request.authorization = Metadata(context, "authorization");
  request.asserted_principal = Metadata(context, kPrincipalHeader);
  request.peer_secret = Metadata(context, kPeerSecretHeader);
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    // SANs first (what modern certificates name), then the CN.
    for (const char* property :
         {GRPC_X509_SAN_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME}) {
      for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
        request.peer_identities.emplace_back(value.data(), value.size());
      }
    }
  }
  return request;
}

bool IsLoopbackListenAddress(absl::string_view listen) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) {
    return true;
  }
  size_t colon = listen.rfind(':');
  absl::string_view host = colon == absl::string_view::npos ? listen : listen.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  if (host == "localhost" || host == "::1") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  int first = 0;
  return octets.size() == 4 && absl::SimpleAtoi(octets[0], &first) && first == 127;
}

absl::Status CheckListenIsSafe(absl::string_view listen, bool auth_enabled,
                               bool allow_unauthenticated) {
  if (auth_enabled || allow_unauthenticated || IsLoopbackListenAddress(listen)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to listen on ", listen,
      " without authentication: anyone who can reach this port could run "
      "code as this server's user. Configure authentication with "
      "--auth_tokens_file=PATH (lines `PRINCIPAL TOKEN`) and/or mTLS "
      "(--tls_cert_file, --tls_key_file and --tls_client_ca_file), or "
      "listen on 127.0.0.1, or pass --allow_unauthenticated if something "
      "else (a network policy, a sidecar) already restricts who can connect"));
}

}  // namespace pyexec

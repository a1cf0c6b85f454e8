#include "server/snapshot_seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/str_cat.h"

namespace pyexec {
namespace {

constexpr absl::string_view kPurpose = "pyexec session snapshot v1";

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

}  // namespace

SnapshotSeal::SnapshotSeal(absl::string_view secret) {
  if (secret.empty()) {
    unsigned char random[32];
    RAND_bytes(random, sizeof(random));
    key_.assign(reinterpret_cast<const char*>(random), sizeof(random));
  } else {
    // A key of its own for snapshots: the peer secret itself never signs
    // anything a client holds.
    key_ = HmacSha256(secret, kPurpose);
  }
}

std::string SnapshotSeal::Mac(absl::string_view data) const { return HmacSha256(key_, data); }

std::string SnapshotSeal::Seal(const internal::SnapshotEnvelope& envelope) const {
  internal::SealedSnapshot sealed;
  sealed.set_envelope(envelope.SerializeAsString());
  sealed.set_mac(Mac(sealed.envelope()));
  return sealed.SerializeAsString();
}

absl::StatusOr<internal::SnapshotEnvelope> SnapshotSeal::Open(absl::string_view blob,
                                                              absl::string_view principal) const {
  internal::SealedSnapshot sealed;
  const std::string expected = sealed.ParseFromArray(blob.data(), static_cast<int>(blob.size()))
                                   ? Mac(sealed.envelope())
                                   : std::string();
  if (expected.empty() || sealed.mac().size() != expected.size() ||
      CRYPTO_memcmp(sealed.mac().data(), expected.data(), expected.size()) != 0) {
    return absl::InvalidArgumentError(
        "restore: not a snapshot of this deployment (forged, altered, or sealed under another "
        "peer secret)");
  }
  internal::SnapshotEnvelope envelope;
  if (!envelope.ParseFromString(sealed.envelope()) || envelope.version() != 1) {
    return absl::InvalidArgumentError("restore: a snapshot of an unknown version");
  }
  if (envelope.principal() != principal) {
    return absl::InvalidArgumentError("restore: the snapshot belongs to another principal");
  }
  return envelope;
}

}  // namespace pyexec

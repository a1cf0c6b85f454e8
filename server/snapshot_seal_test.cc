#include "server/snapshot_seal.h"

#include "gtest/gtest.h"

namespace pyexec {
namespace {

internal::SnapshotEnvelope Envelope(const std::string& principal) {
  internal::SnapshotEnvelope e;
  e.set_version(1);
  e.set_principal(principal);
  e.set_state("pickled bytes");
  e.add_modules("json");
  e.set_refs(2);
  return e;
}

TEST(SnapshotSealTest, OpensWhatItSealedForTheSamePrincipal) {
  SnapshotSeal seal("peer secret");
  auto opened = seal.Open(seal.Seal(Envelope("alice")), "alice");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->state(), "pickled bytes");
  EXPECT_EQ(opened->modules(0), "json");
  EXPECT_EQ(opened->refs(), 2u);
}

TEST(SnapshotSealTest, ReplicasWithTheSameSecretOpenEachOthersBlobs) {
  SnapshotSeal a("peer secret"), b("peer secret"), other("another secret");
  std::string blob = a.Seal(Envelope("alice"));
  EXPECT_TRUE(b.Open(blob, "alice").ok());
  EXPECT_EQ(other.Open(blob, "alice").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SnapshotSealTest, RefusesAnotherPrincipal) {
  SnapshotSeal seal("peer secret");
  auto opened = seal.Open(seal.Seal(Envelope("alice")), "bob");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(opened.status().message().find("another principal"), std::string::npos);
}

TEST(SnapshotSealTest, RefusesEveryAlteredByteAndForgery) {
  SnapshotSeal seal("peer secret");
  const std::string blob = seal.Seal(Envelope("alice"));
  for (size_t i = 0; i < blob.size(); ++i) {
    std::string altered = blob;
    altered[i] ^= 0x01;
    EXPECT_FALSE(seal.Open(altered, "alice").ok()) << "byte " << i;
  }
  EXPECT_FALSE(seal.Open(blob.substr(0, blob.size() - 1), "alice").ok());
  EXPECT_FALSE(seal.Open("", "alice").ok());
  EXPECT_FALSE(seal.Open("garbage", "alice").ok());
  // A forger who knows the format but not the key.
  internal::SealedSnapshot forged;
  forged.set_envelope(Envelope("alice").SerializeAsString());
  forged.set_mac(std::string(32, 'x'));
  EXPECT_FALSE(seal.Open(forged.SerializeAsString(), "alice").ok());
}

TEST(SnapshotSealTest, WithoutASecretOnlyThisProcessOpensIt) {
  SnapshotSeal a(""), b("");
  std::string blob = a.Seal(Envelope(""));
  EXPECT_TRUE(a.Open(blob, "").ok());
  EXPECT_FALSE(b.Open(blob, "").ok());
}

}  // namespace
}  // namespace pyexec

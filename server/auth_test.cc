#include "server/auth.h"

#include <cstdio>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

AuthRequest WithToken(const std::string& token) {
  AuthRequest r;
  r.authorization = "Bearer " + token;
  return r;
}

TEST(ParseTokensTest, PairsCommentsAndBlankLines) {
  auto parsed = ParseTokens(
      "# comment\n\nalice  tok-a # trailing comment\n\tbob\ttok#b\r\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].principal, "alice");
  EXPECT_EQ((*parsed)[0].token, "tok-a");
  EXPECT_EQ((*parsed)[1].principal, "bob");
  EXPECT_EQ((*parsed)[1].token, "tok#b");  // '#' inside a word is not a comment
}

TEST(ParseTokensTest, ErrorsNameTheLineButNeverTheToken) {
  auto bad = ParseTokens("alice tok-a\nbob tok-secret extra\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(bad.status().message(), Not(HasSubstr("tok-secret")));
  auto twice = ParseTokens("alice same-token\nbob same-token\n");
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(twice.status().message(), Not(HasSubstr("same-token")));
}

TEST(ConstantTimeEqualsTest, Equality) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secre"));
  EXPECT_FALSE(ConstantTimeEquals("secret", ""));
  EXPECT_FALSE(ConstantTimeEquals("", ""));  // an unset secret never matches
  // A prefix repeated cyclically is not equal either.
  EXPECT_FALSE(ConstantTimeEquals("ab", "abab"));
}

TEST(AuthenticatorTest, OffMeansEveryoneIsTheEmptyPrincipal) {
  auto auth = Authenticator::Create(AuthOptions{});
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->enabled());
  EXPECT_EQ((*auth)->Authenticate(AuthRequest{}).value(), "");
}

TEST(AuthenticatorTest, BearerTokens) {
  AuthOptions options;
  options.tokens_file = WriteTemp("tokens1", "alice tok-a\nbob tok-b\n");
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE((*auth)->enabled());
  EXPECT_EQ((*auth)->Authenticate(WithToken("tok-a")).value(), "alice");
  EXPECT_EQ((*auth)->Authenticate(WithToken("tok-b")).value(), "bob");
  AuthRequest lower;
  lower.authorization = "bearer tok-b";
  EXPECT_EQ((*auth)->Authenticate(lower).value(), "bob");
  for (const AuthRequest& bad :
       {AuthRequest{}, WithToken("tok-c"), WithToken("tok-"), WithToken("")}) {
    auto r = (*auth)->Authenticate(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  }
  AuthRequest basic;
  basic.authorization = "Basic tok-a";
  auto r = (*auth)->Authenticate(basic);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(r.status().message(), Not(HasSubstr("tok-a")));
}

TEST(AuthenticatorTest, ReloadKeepsOldTokensWhenTheFileIsBroken) {
  AuthOptions options;
  options.tokens_file = WriteTemp("tokens2", "alice tok-a\n");
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok());
  EXPECT_EQ((*auth)->ReloadIfChanged().value(), false);
  WriteTemp("tokens2", "carol tok-carol-longer\n");
  EXPECT_EQ((*auth)->ReloadIfChanged().value(), true);
  EXPECT_EQ((*auth)->Authenticate(WithToken("tok-carol-longer")).value(), "carol");
  EXPECT_FALSE((*auth)->Authenticate(WithToken("tok-a")).ok());
  WriteTemp("tokens2", "only-one-field\n");
  EXPECT_FALSE((*auth)->Reload().ok());
  EXPECT_EQ((*auth)->Authenticate(WithToken("tok-carol-longer")).value(), "carol");
}

TEST(AuthenticatorTest, MtlsIdentityAndTokenPrecedence) {
  AuthOptions options;
  options.mtls = true;
  options.tokens_file = WriteTemp("tokens3", "alice tok-a\n");
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok());
  AuthRequest cert;
  cert.peer_identities = {"client.example", "client-cn"};
  EXPECT_EQ((*auth)->Authenticate(cert).value(), "client.example");
  cert.authorization = "Bearer tok-a";
  EXPECT_EQ((*auth)->Authenticate(cert).value(), "alice");
  cert.authorization = "Bearer wrong";
  EXPECT_FALSE((*auth)->Authenticate(cert).ok());
}

TEST(AuthenticatorTest, OnlyAuthenticatedPeersMayAssertAPrincipal) {
  AuthOptions options;
  options.tokens_file = WriteTemp("tokens4", "alice tok-a\n");
  options.peer_secret_file = WriteTemp("secret4", "0123456789abcdef-peer\n");
  options.peer_identities = {"replica.pyexec"};
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok()) << auth.status();

  AuthRequest forged = WithToken("tok-a");
  forged.asserted_principal = "bob";
  EXPECT_EQ((*auth)->Authenticate(forged).status().code(),
            absl::StatusCode::kUnauthenticated);
  forged.peer_secret = "0123456789abcdef-peeR";
  EXPECT_FALSE((*auth)->Authenticate(forged).ok());

  AuthRequest by_secret;
  for (const auto& [key, value] : (*auth)->PeerMetadata("bob")) {
    if (key == kPrincipalHeader) by_secret.asserted_principal = value;
    if (key == kPeerSecretHeader) by_secret.peer_secret = value;
  }
  EXPECT_EQ((*auth)->Authenticate(by_secret).value(), "bob");

  AuthRequest by_cert;
  by_cert.asserted_principal = "bob";
  by_cert.peer_identities = {"replica.pyexec"};
  EXPECT_EQ((*auth)->Authenticate(by_cert).value(), "bob");
  by_cert.peer_identities = {"client.example"};
  EXPECT_FALSE((*auth)->Authenticate(by_cert).ok());
}

// Without a peer secret, an empty x-pyexec-peer-secret must not pass for
// one (an empty secret would compare equal to the empty configured one).
TEST(AuthenticatorTest, NoPeerSecretMeansNoClientMayPoseAsAPeer) {
  AuthOptions options;
  options.tokens_file = WriteTemp("tokens6", "alice tok-a\n");
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  AuthRequest forged = WithToken("tok-a");
  forged.asserted_principal = "bob";
  forged.peer_secret = "";
  EXPECT_EQ((*auth)->Authenticate(forged).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->AuthenticatePeer(forged).code(), absl::StatusCode::kUnauthenticated);
}

TEST(AuthenticatorTest, PeerOnlyCalls) {
  AuthOptions options;
  options.tokens_file = WriteTemp("tokens7", "alice tok-a\n");
  options.peer_secret_file = WriteTemp("secret7", "0123456789abcdef-peer\n");
  auto auth = Authenticator::Create(options);
  ASSERT_TRUE(auth.ok()) << auth.status();
  AuthRequest peer;
  for (const auto& [key, value] : (*auth)->PeerMetadata("")) {
    if (key == kPeerSecretHeader) peer.peer_secret = value;
  }
  EXPECT_TRUE((*auth)->AuthenticatePeer(peer).ok());
  EXPECT_EQ((*auth)->AuthenticatePeer(WithToken("tok-a")).code(),
            absl::StatusCode::kUnauthenticated);  // a client is not a peer
  auto off = Authenticator::Create(AuthOptions{});
  EXPECT_TRUE((*off)->AuthenticatePeer(AuthRequest{}).ok());
}

TEST(AuthenticatorTest, ShortPeerSecretIsRefused) {
  AuthOptions options;
  options.peer_secret_file = WriteTemp("secret5", "short\n");
  EXPECT_FALSE(Authenticator::Create(options).ok());
}

TEST(ListenTest, LoopbackAddresses) {
  for (const char* local : {"127.0.0.1:0", "127.1.2.3:50051", "localhost:1",
                            "[::1]:50051", "unix:/tmp/sock"}) {
    EXPECT_TRUE(IsLoopbackListenAddress(local)) << local;
  }
  for (const char* remote : {"0.0.0.0:50051", "[::]:50051", "10.0.0.1:1",
                             ":50051", "example.com:1", "128.0.0.1:1"}) {
    EXPECT_FALSE(IsLoopbackListenAddress(remote)) << remote;
  }
}

TEST(ListenTest, NonLoopbackNeedsAuthOrAnExplicitOverride) {
  absl::Status refused = CheckListenIsSafe("0.0.0.0:50051", false, false);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("--auth_tokens_file"));
  EXPECT_THAT(refused.message(), HasSubstr("--allow_unauthenticated"));
  EXPECT_TRUE(CheckListenIsSafe("0.0.0.0:50051", true, false).ok());
  EXPECT_TRUE(CheckListenIsSafe("0.0.0.0:50051", false, true).ok());
  EXPECT_TRUE(CheckListenIsSafe("127.0.0.1:0", false, false).ok());
}

}  // namespace
}  // namespace pyexec

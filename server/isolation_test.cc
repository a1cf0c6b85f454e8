#include "server/isolation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;

IsolationFacts NonRootImage(int abi) {
  IsolationFacts facts;
  facts.pyexecd_uid = 10001;
  facts.landlock_abi = abi;
  facts.confinement.set_landlock(abi > 0);
  facts.confinement.set_seccomp(true);
  facts.authentication = true;
  return facts;
}

TEST(IsolationTest, SharedUidNeedsLandlockWithSignalScopingWhenAuthenticated) {
  EXPECT_TRUE(CheckIsolation(NonRootImage(7)).ok());
  EXPECT_TRUE(CheckIsolation(NonRootImage(6)).ok());
  absl::Status old = CheckIsolation(NonRootImage(5));
  EXPECT_EQ(old.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(old.message()), HasSubstr("ABI 5"));
  EXPECT_THAT(std::string(old.message()), HasSubstr("--allow_shared_worker_uid"));
  absl::Status none = CheckIsolation(NonRootImage(0));
  EXPECT_THAT(std::string(none.message()), HasSubstr("no Landlock domain"));

  IsolationFacts landlock_off = NonRootImage(7);
  landlock_off.confinement.set_landlock(false);
  EXPECT_FALSE(CheckIsolation(landlock_off).ok());

  IsolationFacts allowed = NonRootImage(0);
  allowed.allow_shared_worker_uid = true;
  EXPECT_TRUE(CheckIsolation(allowed).ok());
  IsolationFacts no_auth = NonRootImage(0);
  no_auth.authentication = false;
  EXPECT_TRUE(CheckIsolation(no_auth).ok());
}

TEST(IsolationTest, WorkersApartFromPyexecdNeedNothingMore) {
  IsolationFacts root = NonRootImage(0);
  root.pyexecd_uid = 0;
  root.confinement.set_switch_user(true);
  root.confinement.set_uid(998);
  EXPECT_FALSE(SharesPyexecdUid(root));
  EXPECT_TRUE(CheckIsolation(root).ok());
  root.confinement.set_uid(0);  // --worker_user=root
  EXPECT_TRUE(SharesPyexecdUid(root));
  EXPECT_FALSE(CheckIsolation(root).ok());
  root.uid_per_worker = true;
  EXPECT_TRUE(CheckIsolation(root).ok());
}

TEST(IsolationTest, DescribesEveryLayer) {
  IsolationFacts facts = NonRootImage(7);
  facts.confinement.set_network(internal::Confinement::NO_INET);
  std::string line = DescribeIsolation(facts);
  EXPECT_THAT(line, HasSubstr("Landlock ABI 7"));
  EXPECT_THAT(line, HasSubstr("share pyexecd's uid 10001"));
  EXPECT_THAT(line, HasSubstr("seccomp"));
  EXPECT_THAT(line, HasSubstr("no inet sockets"));
  EXPECT_THAT(DescribeIsolation(NonRootImage(0)), HasSubstr("Landlock unavailable"));
}

}  // namespace
}  // namespace pyexec

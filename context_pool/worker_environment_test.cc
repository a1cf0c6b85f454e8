#include "context_pool/worker_environment.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(WorkerEnvironmentTest, KeepsOnlyWhatWorkersNeed) {
  absl::StatusOr<std::vector<std::string>> env = BuildWorkerEnvironment(
      {"AWS_SECRET_ACCESS_KEY=hunter2", "LANG=de_DE.UTF-8", "PATH=/opt/evil:/usr/bin",
       "HOME=/root", "PYTHONHASHSEED=0", "KUBERNETES_SERVICE_HOST=10.0.0.1",
       "PYEXEC_TOKEN=x", "TZ=UTC"},
      {"TZ", "NOT_SET"}, {"MPLBACKEND=Agg"});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_THAT(*env, ElementsAre("LANG=de_DE.UTF-8", "MPLBACKEND=Agg",
                                "PATH=/usr/local/bin:/usr/bin:/bin",
                                "PYTHONHASHSEED=0", "TZ=UTC"));
}

TEST(WorkerEnvironmentTest, DefaultsLangAndLetsFlagsOverride) {
  absl::StatusOr<std::vector<std::string>> env =
      BuildWorkerEnvironment({}, {}, {"PATH=/opt/py/bin:/usr/bin", "EMPTY="});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_THAT(*env, ElementsAre("EMPTY=", "LANG=C.UTF-8", "PATH=/opt/py/bin:/usr/bin"));
}

TEST(WorkerEnvironmentTest, RefusesMalformedOrReservedEntries) {
  for (const auto& [passthrough, extra, flag] :
       std::vector<std::tuple<std::vector<std::string>, std::vector<std::string>,
                              std::string>>{
           {{}, {"NOEQUALS"}, "--worker_env"},
           {{}, {"1X=2"}, "--worker_env"},
           {{}, {"HOME=/tmp"}, "--worker_env"},
           {{"TMPDIR"}, {}, "--worker_env_passthrough"},
           {{"A-B"}, {}, "--worker_env_passthrough"}}) {
    absl::StatusOr<std::vector<std::string>> env =
        BuildWorkerEnvironment({"HOME=/root"}, passthrough, extra);
    EXPECT_EQ(env.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(env.status().message()), HasSubstr(flag));
  }
}

}  // namespace
}  // namespace pyexec

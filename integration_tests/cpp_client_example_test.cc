// Runs clients/cpp/example.cc, the program docs/cli.md shows, against the
// real pyexecd and checks what it prints, line for line.

#include <sys/wait.h>

#include <optional>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "integration_tests/cpp_client_testing.h"

namespace pyexec {
namespace {

TEST(CppClientExampleTest, PrintsWhatTheDocsSay) {
  auto server = testing_util::StartPyexecd({"--workers=2", "--max_workers=4"},
                                           "pyexecd_example.log");
  ASSERT_NE(server, nullptr);
  auto example =
      testing_util::Child::Start({testing_util::Runfile("clients/cpp/example"), server->address()});
  ASSERT_TRUE(example.ok()) << example.status();
  std::optional<int> status = (*example)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << "the example did not finish; output: "
                                  << (*example)->Output(false);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << "wait status " << *status;
  EXPECT_EQ((*example)->Output(false),
            "leased: 1\n"
            "'hello ada'\n"
            "CallbackError: INVALID_ARGUMENT: greet takes one str\n"
            "CANCELLED\n"
            "42\n"
            "leased: 0\n")
      << "stderr: " << (*example)->Output(true);
  EXPECT_EQ((*example)->Output(true), "");
}

}  // namespace
}  // namespace pyexec

#include "clients/cpp/test_certs.h"

#include <stdlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pyexec {
namespace testing {

std::string TestCerts::File(absl::string_view name) const {
  return absl::StrCat(dir_, "/", name);
}

std::string TestCerts::Pem(absl::string_view name) const {
  std::ifstream in(File(name), std::ios::binary);
  if (!in.is_open()) std::abort();
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::StatusOr<TestCerts> MakeTestCerts() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/certs.XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", dir, " failed"));
  }
  // Runs from the runfiles tree, where bazel starts tests.
  const std::string command =
      absl::StrCat("sh clients/cpp/make_test_certs.sh '", dir, "'");
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(command, " failed"));
  }
  return TestCerts(dir);
}

}  // namespace testing
}  // namespace pyexec

// Throwaway TLS certificates for tests, made per run by make_test_certs.sh.

#ifndef PYEXEC_CLIENTS_CPP_TEST_CERTS_H_
#define PYEXEC_CLIENTS_CPP_TEST_CERTS_H_

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pyexec {
namespace testing {

// A directory of certificates; see make_test_certs.sh for the file names.
class TestCerts {
 public:
  explicit TestCerts(std::string dir) : dir_(std::move(dir)) {}

  // Absolute path of `name` (e.g. "ca.pem") in the directory.
  std::string File(absl::string_view name) const;

  // Contents of `name`; crashes if it cannot be read (a broken fixture).
  std::string Pem(absl::string_view name) const;

 private:
  std::string dir_;
};

// Runs the script (a runfile, "clients/cpp/make_test_certs.sh": tests that
// call this need it in `data`) into a fresh directory under $TEST_TMPDIR.
// INTERNAL if openssl fails.
absl::StatusOr<TestCerts> MakeTestCerts();

}  // namespace testing
}  // namespace pyexec

#endif  // PYEXEC_CLIENTS_CPP_TEST_CERTS_H_

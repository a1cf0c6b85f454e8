// client_tls_bench: what TLS, mTLS and a bearer token cost the C++ client.
// Starts pyexecd once per setup, makes sequential stateless Eval("1+1") calls
// over one connection, and prints p50/p99 and calls/s next to the plaintext
// baseline of the same run. Run from the repository root (it makes its
// certificates with clients/cpp/make_test_certs.sh):
//   bazel-bin/bench/client_tls_bench [--calls=3000]

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/latency.h"
#include "bench/process.h"
#include "clients/cpp/client.h"
#include "clients/cpp/test_certs.h"

ABSL_FLAG(std::string, pyexecd, "bazel-bin/server/pyexecd", "pyexecd binary");
ABSL_FLAG(int, calls, 3000, "measured calls per setup (after 300 warmup calls)");

namespace pyexec {
namespace {

struct Setup {
  std::string name;
  std::vector<std::string> server_flags;
  ChannelOptions channel;
};

struct Measured {
  bench::LatencySummary latency;
  double calls_per_second = 0;
};

absl::StatusOr<Measured> Run(const Setup& setup, int calls) {
  std::vector<std::string> argv = {absl::GetFlag(FLAGS_pyexecd),
                                   "--listen=127.0.0.1:0", "--workers=1"};
  argv.insert(argv.end(), setup.server_flags.begin(), setup.server_flags.end());
  auto server = bench::ServerProcess::Start(argv, "/tmp/client_tls_bench.log",
                                            absl::Seconds(60));
  if (!server.ok()) return server.status();
  absl::StatusOr<Client> client = Client::Connect((*server)->address(), setup.channel);
  if (!client.ok()) return client.status();
  const CallOptions options{absl::Seconds(10)};
  for (int i = 0; i < 300; ++i) {
    absl::StatusOr<Result> r = client->Eval("", "1+1", {}, options);
    if (!r.ok()) return r.status();
  }
  std::vector<absl::Duration> samples;
  samples.reserve(calls);
  const absl::Time start = absl::Now();
  for (int i = 0; i < calls; ++i) {
    const absl::Time t = absl::Now();
    absl::StatusOr<Result> r = client->Eval("", "1+1", {}, options);
    if (!r.ok()) return r.status();
    samples.push_back(absl::Now() - t);
  }
  Measured m;
  m.calls_per_second = calls / absl::ToDoubleSeconds(absl::Now() - start);
  m.latency = bench::Summarize(samples);
  return m;
}

int Main() {
  absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts();
  if (!certs.ok()) {
    std::fprintf(stderr, "%s\n", certs.status().ToString().c_str());
    return 1;
  }
  const std::string tokens = certs->File("tokens");
  std::ofstream(tokens) << "bench bench-token-0123456789\n";
  const std::string tokens_flag = absl::StrCat("--auth_tokens_file=", tokens);
  const std::vector<std::string> tls_flags = {
      absl::StrCat("--tls_cert_file=", certs->File("server.pem")),
      absl::StrCat("--tls_key_file=", certs->File("server.key"))};
  ChannelOptions token;
  token.token = "bench-token-0123456789";
  ChannelOptions tls_token = token;
  tls_token.root_ca_file = certs->File("ca.pem");
  tls_token.server_name_override = "pyexec.test";
  ChannelOptions mtls;
  mtls.root_ca_file = certs->File("ca.pem");
  mtls.server_name_override = "pyexec.test";
  mtls.client_cert_file = certs->File("client.pem");
  mtls.client_key_file = certs->File("client.key");
  std::vector<std::string> tls_token_flags = tls_flags;
  tls_token_flags.push_back(tokens_flag);
  std::vector<std::string> mtls_flags = tls_flags;
  mtls_flags.push_back(absl::StrCat("--tls_client_ca_file=", certs->File("ca.pem")));
  const std::vector<Setup> setups = {
      {"plaintext", {}, ChannelOptions()},
      {"plaintext+token", {tokens_flag}, token},
      {"tls+token", tls_token_flags, tls_token},
      {"mtls", mtls_flags, mtls},
  };
  const int calls = absl::GetFlag(FLAGS_calls);
  double baseline_p50 = 0;
  std::printf("%-16s %10s %10s %10s %12s\n", "setup", "p50", "p99", "calls/s",
              "p50/plain");
  for (const Setup& setup : setups) {
    absl::StatusOr<Measured> m = Run(setup, calls);
    if (!m.ok()) {
      std::fprintf(stderr, "%s: %s\n", setup.name.c_str(),
                   m.status().ToString().c_str());
      return 1;
    }
    const double p50 = absl::ToDoubleMicroseconds(m->latency.p50);
    if (baseline_p50 == 0) baseline_p50 = p50;
    std::printf("%-16s %10s %10s %10.0f %11.2fx\n", setup.name.c_str(),
                bench::FormatMicros(m->latency.p50).c_str(),
                bench::FormatMicros(m->latency.p99).c_str(), m->calls_per_second,
                p50 / baseline_p50);
  }
  return 0;
}

}  // namespace
}  // namespace pyexec

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pyexec::Main();
}

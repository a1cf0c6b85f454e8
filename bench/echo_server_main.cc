// echo_server: the bench baseline as its own process, like pyexecd; with
// --relay_helpers, also the relay floor (Relay through helper processes).
// Prints "listening on HOST:PORT" once serving; stops on SIGTERM/SIGINT.

#include <signal.h>

#include <iostream>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/echo_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "address to serve on; port 0 picks a free port");
ABSL_FLAG(int, relay_helpers, 0,
          "helper processes for the Relay RPC (one per call in flight); 0: none");

int main(int argc, char** argv) {
  // As pyexecd does (server/main.cc): the baseline must not pay Debian
  // Abseil's deadlock detector either.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::ParseCommandLine(argc, argv);
  // Block the stop signals before gRPC starts threads so that they inherit
  // the mask, then wait for one synchronously.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  // Forked before gRPC starts any thread.
  std::unique_ptr<pyexec::bench::ProcessRelay> relay;
  if (const int helpers = absl::GetFlag(FLAGS_relay_helpers); helpers > 0) {
    absl::StatusOr<std::unique_ptr<pyexec::bench::ProcessRelay>> started =
        pyexec::bench::ProcessRelay::Start(helpers);
    if (!started.ok()) {
      std::cerr << "echo_server: " << started.status() << "\n";
      return 1;
    }
    relay = *std::move(started);
  }
  absl::StatusOr<pyexec::bench::EchoServer> echo =
      pyexec::bench::StartEchoServer(absl::GetFlag(FLAGS_listen), std::move(relay));
  if (!echo.ok()) {
    std::cerr << "echo_server: " << echo.status() << "\n";
    return 1;
  }
  std::cout << "listening on " << echo->address << std::endl;
  int sig = 0;
  sigwait(&stop, &sig);
  echo->server->Shutdown();
  return 0;
}

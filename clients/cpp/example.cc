// The C++ library in one program: a leased session, a function Python calls
// back, a call interrupted by name, owner routing, a snapshot restored into
// a new session. docs/cli.md shows it; integration_tests:cpp_client_example_test
// runs it against the real pyexecd.
//
//   bazel run //clients/cpp:example -- 127.0.0.1:50051

#include <iostream>
#include <string>
#include <vector>

#include "clients/cpp/client.h"
#include "clients/cpp/value.h"

int main(int argc, char** argv) {
  const std::string address = argc > 1 ? argv[1] : "127.0.0.1:50051";

  pyexec::ChannelOptions channel;
  // With replicas run with --peers: a session's calls go straight to the
  // replica that owns it, and through `address` when it cannot be reached.
  channel.route_to_owner = true;
  absl::StatusOr<pyexec::Client> client = pyexec::Client::Connect(address, channel);
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return 2;
  }

  // Python calls it as pyexec.call('greet', name). An error status raises
  // pyexec.CallbackError in Python (type "INVALID_ARGUMENT", the message).
  client->RegisterFunction(
      "greet", [](pyexec::CallbackContext& ctx, const std::vector<pyexec::v1::Value>& args,
                  const pyexec::ValueMap& kwargs) -> absl::StatusOr<pyexec::v1::Value> {
        if (args.size() != 1 || !args[0].has_str()) {
          return absl::InvalidArgumentError("greet takes one str");
        }
        return pyexec::MakeStr("hello " + args[0].str());
      });

  // Leased: unbound when `session` goes out of scope, and by the server
  // (--lease_grace after) if this program dies without unbinding.
  absl::StatusOr<pyexec::Session> session = pyexec::Session::Bind(*client);
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    return 2;
  }
  std::cout << "leased: " << session->bound().leased << "\n";  // leased: 1
  (void)session->Exec("x = 41");
  absl::StatusOr<pyexec::Result> r = session->Eval("pyexec.call('greet', 'ada')");
  std::cout << pyexec::FormatValue(r->value) << "\n";  // 'hello ada'
  r = session->Eval("pyexec.call('greet', 7)");
  std::cout << r->error->type() << ": " << r->error->message() << "\n";
  // CallbackError: INVALID_ARGUMENT: greet takes one str

  // A call on a thread of its own, interrupted by name: the Interrupt is
  // never lost, even if it reaches the server before the call does.
  pyexec::PendingCall spin = session->StartExec("while True: pass");
  (void)spin.Interrupt();
  std::cout << absl::StatusCodeToString(spin.Wait().status().code()) << "\n";  // CANCELLED

  // The session's state, restored into a new session.
  absl::StatusOr<pyexec::v1::SnapshotResponse> snapshot = session->Snapshot();
  if (!snapshot.ok()) {
    std::cerr << snapshot.status() << "\n";
    return 2;
  }
  pyexec::BindOptions restore;
  restore.restore = snapshot->blob();
  absl::StatusOr<pyexec::Session> copy = pyexec::Session::Bind(*client, restore);
  if (!copy.ok()) {
    std::cerr << copy.status() << "\n";
    return 2;
  }
  std::cout << pyexec::FormatValue(copy->Eval("x + 1")->value) << "\n";  // 42

  // Without a lease, a session lives until Unbind or its idle timeout
  // (e.g. to hand its token to another process).
  pyexec::BindOptions unleased;
  unleased.lease = false;
  absl::StatusOr<pyexec::Session> kept = pyexec::Session::Bind(*client, unleased);
  std::cout << "leased: " << kept->bound().leased << "\n";  // leased: 0
  return 0;
}

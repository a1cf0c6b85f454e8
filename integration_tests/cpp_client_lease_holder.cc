// A program that binds a session with the C++ client and then waits to be
// killed, for cpp_client_lease_test: `cpp_client_lease_holder ADDRESS
// lease|no_lease` prints "token TOKEN leased=0|1" and sleeps.

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>

#include "clients/cpp/client.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: cpp_client_lease_holder ADDRESS lease|no_lease\n";
    return 64;
  }
  absl::StatusOr<pyexec::Client> client = pyexec::Client::Connect(argv[1]);
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return 2;
  }
  pyexec::BindOptions bind;
  bind.lease = std::strcmp(argv[2], "lease") == 0;
  absl::StatusOr<pyexec::Session> session =
      pyexec::Session::Bind(*client, bind, pyexec::CallOptions{absl::Seconds(10)});
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    return 2;
  }
  if (!session->Exec("held = True").ok()) return 2;
  std::cout << "token " << session->token() << " leased=" << session->bound().leased
            << std::endl;
  while (true) pause();
}

#ifndef PYEXEC_SERVER_PEER_SET_H_
#define PYEXEC_SERVER_PEER_SET_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "pyexec/v1/pyexec.grpc.pb.h"

namespace pyexec {

// A short stable name for a replica: 16 hex digits of a 64-bit FNV-1a hash of
// its advertised HOST:PORT. Session tokens start with it ("<id>.<random>"),
// and a replica finds the owner of a token by matching it against the ids of
// the peers it discovered. A token is never dialled: a forged id matches no
// peer.
std::string ReplicaId(absl::string_view advertise_address);

// The replica id a token names, or "" for a token without one (a replica
// running without --peers issues plain 32-hex-digit tokens).
absl::string_view ReplicaIdOfToken(absl::string_view token);

// One discovered replica and the long-lived channel to it.
struct Peer {
  std::string id;       // ReplicaId(address)
  std::string address;  // HOST:PORT as dialled
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::PyExec::Stub> stub;
};

// Makes the channel to a peer. The one place peer credentials and channel
// arguments are chosen (see forwarder.h: PeerChannel).
using PeerChannelFactory =
    std::function<std::shared_ptr<grpc::Channel>(const std::string& address)>;
// Resolves a DNS name to IP literals (blocking; called on the refresh thread).
using PeerResolver =
    std::function<absl::StatusOr<std::vector<std::string>>(const std::string& host)>;

// The system resolver (getaddrinfo), IPv6 results in brackets.
absl::StatusOr<std::vector<std::string>> ResolveHost(const std::string& host);

struct PeerSetOptions {
  // --peers entries: "HOST:PORT" or "dns:///NAME:PORT".
  std::vector<std::string> entries;
  // --advertise_address of this replica; its id is ours.
  std::string self_address;
  // How often dns:/// entries are resolved again.
  absl::Duration refresh_interval = absl::Seconds(5);
  PeerChannelFactory make_channel;
  PeerResolver resolve = ResolveHost;
};

// The replicas named by --peers. Static entries are fixed; dns:/// entries
// are resolved at Start and then every refresh_interval on a thread of
// its own, so no gRPC thread ever waits for DNS. A peer keeps its channel for
// as long as it stays discovered; a name that fails to resolve keeps its last
// addresses (a DNS hiccup must not cut sessions off).
//
// Thread-safe. Find never blocks on anything but a short lock.
class PeerSet {
 public:
  // Checks the entries; INVALID_ARGUMENT names a bad one.
  static absl::StatusOr<std::unique_ptr<PeerSet>> Create(PeerSetOptions options);
  ~PeerSet();

  // Resolves once, then starts the refresh thread if any entry is dns:///.
  void Start();

  // The discovered peer with that replica id, or null. Callers hold the
  // returned pointer for the duration of a call, so a peer that leaves the
  // set mid-call keeps its channel until the call ends.
  std::shared_ptr<const Peer> Find(absl::string_view replica_id) const;

  // Every discovered peer but this replica.
  std::vector<std::shared_ptr<const Peer>> Others() const;

  // This replica's id.
  const std::string& self_id() const { return self_id_; }
  // Discovered replicas, this one included when it is listed.
  int size() const;

  // Resolves the dns:/// entries now and updates the set.
  void Refresh();

 private:
  struct Entry {
    bool dns = false;
    std::string host;  // name to resolve, or literal host (as written)
    std::string port;
    std::vector<std::string> last;  // last resolved addresses (dns only)
  };
  explicit PeerSet(PeerSetOptions options);

  const PeerSetOptions options_;
  const std::string self_id_;
  absl::Mutex refresh_mu_;  // serialises Refresh
  std::vector<Entry> entries_ ABSL_GUARDED_BY(refresh_mu_);
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const Peer>> peers_
      ABSL_GUARDED_BY(mu_);  // by id
  absl::Notification stop_;
  std::thread refresher_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_PEER_SET_H_

#include "server/peer_set.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/thread_name.h"

namespace pyexec {
namespace {

constexpr absl::string_view kDnsScheme = "dns:///";

// Splits HOST:PORT ([v6]:PORT); the host keeps its brackets.
bool SplitHostPort(absl::string_view in, std::string* host, std::string* port) {
  size_t colon = in.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  absl::string_view h = in.substr(0, colon);
  if (h.find(':') != absl::string_view::npos &&
      !(h.front() == '[' && h.back() == ']')) {
    return false;  // a bare IPv6 literal needs brackets
  }
  int p = 0;
  if (!absl::SimpleAtoi(in.substr(colon + 1), &p) || p <= 0 || p > 65535) {
    return false;
  }
  *host = std::string(h);
  *port = std::string(in.substr(colon + 1));
  return true;
}

}  // namespace

std::string ReplicaId(absl::string_view advertise_address) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : advertise_address) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return absl::StrFormat("%016x", h);
}

absl::string_view ReplicaIdOfToken(absl::string_view token) {
  size_t dot = token.find('.');
  return dot == absl::string_view::npos ? absl::string_view()
                                        : token.substr(0, dot);
}

absl::StatusOr<std::vector<std::string>> ResolveHost(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  std::vector<std::string> out;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr,
                buf, sizeof(buf));
      out.push_back(buf);
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6,
                &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, buf,
                sizeof(buf));
      out.push_back(absl::StrCat("[", buf, "]"));
    }
  }
  freeaddrinfo(result);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

absl::StatusOr<std::unique_ptr<PeerSet>> PeerSet::Create(PeerSetOptions options) {
  std::vector<Entry> entries;
  for (const std::string& raw : options.entries) {
    Entry e;
    absl::string_view rest = raw;
    if (absl::StartsWith(rest, kDnsScheme)) {
      e.dns = true;
      rest.remove_prefix(kDnsScheme.size());
    } else if (absl::StrContains(rest, "://") || absl::StartsWith(rest, "dns:")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--peers: \"", raw, "\" is neither HOST:PORT nor dns:///NAME:PORT"));
    }
    if (!SplitHostPort(rest, &e.host, &e.port)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--peers: \"", raw, "\" is neither HOST:PORT nor dns:///NAME:PORT"));
    }
    entries.push_back(std::move(e));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError("--peers is empty");
  }
  std::unique_ptr<PeerSet> set(new PeerSet(std::move(options)));
  absl::MutexLock lock(&set->refresh_mu_);
  set->entries_ = std::move(entries);
  return set;
}

PeerSet::PeerSet(PeerSetOptions options)
    : options_(std::move(options)), self_id_(ReplicaId(options_.self_address)) {}

PeerSet::~PeerSet() {
  stop_.Notify();
  if (refresher_.joinable()) refresher_.join();
}

void PeerSet::Start() {
  Refresh();
  bool any_dns = false;
  {
    absl::MutexLock lock(&refresh_mu_);
    for (const Entry& e : entries_) any_dns |= e.dns;
  }
  if (Find(self_id_) == nullptr) {
    LogWarning(absl::StrCat(
        "this replica's --advertise_address ", options_.self_address,
        " is not among the --peers found yet; peers cannot forward to it "
        "until it is"));
  }
  if (!any_dns) return;
  refresher_ = std::thread([this] {
    NameThisThread("peer-refresh");
    while (!stop_.WaitForNotificationWithTimeout(options_.refresh_interval)) {
      Refresh();
    }
  });
}

void PeerSet::Refresh() {
  absl::MutexLock refresh_lock(&refresh_mu_);
  std::vector<std::string> addresses;
  for (Entry& e : entries_) {
    if (!e.dns) {
      addresses.push_back(absl::StrCat(e.host, ":", e.port));
      continue;
    }
    absl::StatusOr<std::vector<std::string>> ips = options_.resolve(e.host);
    if (ips.ok()) {
      e.last.clear();
      for (const std::string& ip : *ips) {
        e.last.push_back(absl::StrCat(ip, ":", e.port));
      }
    } else {
      LogWarning(absl::StrCat("peers: ", ips.status().message(),
                              "; keeping its last ", e.last.size(),
                              " addresses"));
    }
    addresses.insert(addresses.end(), e.last.begin(), e.last.end());
  }

  absl::flat_hash_map<std::string, std::shared_ptr<const Peer>> old;
  {
    absl::MutexLock lock(&mu_);
    old = peers_;
  }
  absl::flat_hash_map<std::string, std::shared_ptr<const Peer>> next;
  std::vector<std::string> added;
  for (const std::string& address : addresses) {
    std::string id = ReplicaId(address);
    if (next.contains(id)) continue;
    auto it = old.find(id);
    if (it != old.end()) {
      next[id] = it->second;  // keep the long-lived channel
      continue;
    }
    auto peer = std::make_shared<Peer>();
    peer->id = id;
    peer->address = address;
    if (id != self_id_) {
      peer->channel = options_.make_channel(address);
      peer->stub = v1::PyExec::NewStub(peer->channel);
    }
    next[id] = std::move(peer);
    added.push_back(address);
  }
  std::vector<std::string> removed;
  for (const auto& [id, peer] : old) {
    if (!next.contains(id)) removed.push_back(peer->address);
  }
  {
    absl::MutexLock lock(&mu_);
    peers_.swap(next);
  }
  if (!added.empty() || !removed.empty()) {
    LogInfo(absl::StrCat("peers: ", addresses.size(), " replicas",
                         added.empty() ? "" : "; added ",
                         absl::StrJoin(added, " "),
                         removed.empty() ? "" : "; removed ",
                         absl::StrJoin(removed, " ")));
  }
}

std::shared_ptr<const Peer> PeerSet::Find(absl::string_view replica_id) const {
  absl::MutexLock lock(&mu_);
  auto it = peers_.find(replica_id);
  return it == peers_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<const Peer>> PeerSet::Others() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<const Peer>> others;
  for (const auto& [id, peer] : peers_) {
    if (id != self_id_) others.push_back(peer);
  }
  return others;
}

int PeerSet::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(peers_.size());
}

}  // namespace pyexec

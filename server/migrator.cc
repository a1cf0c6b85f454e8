#include "server/migrator.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "grpcpp/client_context.h"
#include "pyexec/v1/peer.grpc.pb.h"
#include "server/call_metadata.h"
#include "server/forwarder.h"

namespace pyexec {
namespace {

std::chrono::system_clock::time_point Chrono(absl::Time t) { return absl::ToChronoTime(t); }

// A peer and how many more sessions it can take, as it said at the start.
struct Target {
  std::shared_ptr<const Peer> peer;
  int room = 0;
};

}  // namespace

MigrationReport Migrator::MoveAll(absl::Time deadline) {
  MigrationReport report;
  std::vector<SessionTable::Listed> sessions = sessions_->List();
  if (sessions.empty()) return report;
  // Room on each peer, asked once: the move goes where there is most.
  std::vector<Target> targets;
  for (const std::shared_ptr<const Peer>& peer : peers_->Others()) {
    grpc::ClientContext context;
    context.set_deadline(Chrono(std::min(deadline, absl::Now() + absl::Seconds(2))));
    for (const auto& [key, value] : ForwardMetadata(auth_, "")) context.AddMetadata(key, value);
    internal::RoomResponse room;
    grpc::Status asked =
        internal::Peer::NewStub(peer->channel)->Room(&context, internal::RoomRequest(), &room);
    if (!asked.ok()) {
      LogWarning(absl::StrCat("draining: peer ", peer->address,
                              " cannot take sessions: ", asked.error_message()));
    } else if (room.bindable_workers() > 0) {
      targets.push_back({peer, static_cast<int>(room.bindable_workers())});
    }
  }
  LogInfo(absl::StrCat("draining: moving ", sessions.size(), " sessions to ", targets.size(),
                       " peers"));
  absl::Mutex mu;
  std::atomic<size_t> next{0};
  auto move_one = [&](const SessionTable::Listed& session) {
    auto record = [&](MigrationOutcome outcome, uint64_t bytes, absl::Duration took) {
      if (metrics_ != nullptr) metrics_->RecordMigration(outcome, bytes, took);
      absl::MutexLock lock(&mu);
      switch (outcome) {
        case MigrationOutcome::kMigrated:
          ++report.migrated;
          report.bytes += bytes;
          break;
        case MigrationOutcome::kFailed: ++report.failed; break;
        case MigrationOutcome::kLeftBehind: ++report.left_behind; break;
      }
    };
    const absl::Time start = absl::Now();
    if (start >= deadline) {
      record(MigrationOutcome::kLeftBehind, 0, absl::ZeroDuration());
      return;
    }
    std::shared_ptr<const Peer> target;
    {
      absl::MutexLock lock(&mu);
      auto most = std::max_element(targets.begin(), targets.end(),
                                   [](const Target& a, const Target& b) { return a.room < b.room; });
      if (most != targets.end() && most->room > 0) {
        --most->room;
        target = most->peer;
      }
    }
    if (target == nullptr) {
      LogWarning(absl::StrCat("session ", TokenForLog(session.token),
                              " stays: no peer has room for it"));
      record(MigrationOutcome::kFailed, 0, absl::ZeroDuration());
      return;
    }
    absl::StatusOr<v1::SnapshotResponse> snapshot =
        core_->SnapshotForMove(session.token, session.owner, deadline);
    if (!snapshot.ok()) {
      LogWarning(absl::StrCat("session ", TokenForLog(session.token),
                              " stays (its state cannot be carried): ",
                              snapshot.status().message()));
      core_->MoveFailed(session.token);
      record(snapshot.status().code() == absl::StatusCode::kDeadlineExceeded
                 ? MigrationOutcome::kLeftBehind
                 : MigrationOutcome::kFailed,
             0, absl::Now() - start);
      return;
    }
    grpc::ClientContext context;
    context.set_deadline(Chrono(deadline));
    for (const auto& [key, value] : ForwardMetadata(auth_, session.owner)) {
      context.AddMetadata(key, value);
    }
    context.AddMetadata(kMovedTokenHeader, session.token);
    v1::BindRequest bind;
    bind.set_idle_timeout_seconds(
        static_cast<uint32_t>(std::max<int64_t>(1, absl::ToInt64Seconds(session.idle_timeout))));
    bind.set_restore(snapshot->blob());
    v1::BindResponse bound;
    grpc::Status restored = target->stub->Bind(&context, bind, &bound);
    if (!restored.ok()) {
      LogWarning(absl::StrCat("session ", TokenForLog(session.token), " stays (", target->address,
                              " did not take it: ", restored.error_message(), ")"));
      core_->MoveFailed(session.token);
      record(MigrationOutcome::kFailed, 0, absl::Now() - start);
      return;
    }
    directory_->Moved(session.token, target->id);
    core_->MovedOut(session.token, session.owner);
    std::string lost;
    for (const v1::LostName& name : snapshot->lost()) absl::StrAppend(&lost, " ", name.name());
    LogInfo(absl::StrCat("session ", TokenForLog(session.token), " moved to ", target->address,
                         " (", snapshot->blob().size(), " bytes",
                         lost.empty() ? "" : absl::StrCat("; left out:", lost), ")"));
    record(MigrationOutcome::kMigrated, snapshot->blob().size(), absl::Now() - start);
  };
  std::vector<std::thread> movers;
  for (int i = 0; i < kConcurrentMoves; ++i) {
    movers.emplace_back([&] {
      for (size_t k = next++; k < sessions.size(); k = next++) move_one(sessions[k]);
    });
  }
  for (std::thread& t : movers) t.join();
  LogInfo(absl::StrCat("draining: ", report.migrated, " sessions moved (", report.bytes,
                       " bytes), ", report.failed, " could not be moved, ", report.left_behind,
                       " left behind"));
  return report;
}

}  // namespace pyexec

// Two in-process replicas (fake workers, real gRPC) that forward to each
// other: the owner's answers come back unchanged, deadlines and cancellation
// reach the owner, calls are forwarded at most once, and an unknown or
// unreachable owner gets the documented status.
#include "server/forwarder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "context_pool/fake_worker_launcher.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "server/pyexec_core.h"
#include "server/pyexec_service.h"
#include "server/session_table.h"

namespace pyexec {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A port that was free a moment ago (peers must be named before they start).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// One replica: pool of fake workers, sessions, core, peers, forwarder,
// metrics, service, gRPC server.
struct Replica {
  Replica(const std::string& address, const std::vector<std::string>& peers,
          AuthOptions auth_options = {}) {
    auth = std::move(Authenticator::Create(std::move(auth_options)).value());
    PeerSetOptions po;
    po.entries = peers;
    po.self_address = address;
    po.make_channel = [](const std::string& a) { return PeerChannel(a, 4 << 20); };
    peer_set = std::move(PeerSet::Create(std::move(po)).value());
    peer_set->Start();
    metrics = std::make_unique<Metrics>([] { return MetricsSnapshot(); });
    forwarder = std::make_unique<Forwarder>(peer_set.get(), metrics.get(),
                                            absl::Seconds(30), auth.get());
    ContextPoolOptions options;
    options.workers = 1;
    options.max_workers = 4;
    options.kill_grace = absl::Seconds(5);
    pool = std::make_unique<ContextPool>(options,
                                         std::make_unique<FakeWorkerLauncher>());
    sessions = std::make_unique<SessionTable>(
        absl::Now, absl::StrCat(peer_set->self_id(), "."));
    core = std::make_unique<PyExecCore>(CoreOptions{}, sessions.get(), pool.get());
    EXPECT_TRUE(pool->Start().ok());
    EXPECT_TRUE(pool->WaitUntilWarm(absl::Seconds(10)));
    service = std::make_unique<PyExecService>(core.get(), auth.get(),
                                              absl::Seconds(30), absl::Hours(1),
                                              forwarder.get(), metrics.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    EXPECT_NE(server, nullptr);
    stub = v1::PyExec::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  ~Replica() { Stop(); }
  void Stop() {
    if (server == nullptr) return;
    pool->Shutdown();
    server->Shutdown(std::chrono::system_clock::now());
    server->Wait();
    server.reset();
  }

  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<PeerSet> peer_set;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<Forwarder> forwarder;
  std::unique_ptr<ContextPool> pool;
  std::unique_ptr<SessionTable> sessions;
  std::unique_ptr<PyExecCore> core;
  std::unique_ptr<PyExecService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::PyExec::Stub> stub;
};

class ForwarderTest : public ::testing::Test {
 protected:
  ForwarderTest() {
    std::string a = absl::StrCat("127.0.0.1:", FreePort());
    std::string b = absl::StrCat("127.0.0.1:", FreePort());
    owner_ = std::make_unique<Replica>(a, std::vector<std::string>{a, b});
    other_ = std::make_unique<Replica>(b, std::vector<std::string>{a, b});
  }

  std::string Bind() {
    grpc::ClientContext ctx;
    v1::BindResponse response;
    grpc::Status s = owner_->stub->Bind(&ctx, v1::BindRequest(), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.session();
  }

  grpc::Status Eval(Replica& via, const std::string& session,
                    const std::string& code, v1::EvalResponse* response,
                    absl::Duration timeout = absl::Seconds(10),
                    bool forwarded = false) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    if (forwarded) ctx.AddMetadata(kForwardedHeader, "1");
    v1::EvalRequest request;
    request.set_session(session);
    request.set_code(code);
    return via.stub->Eval(&ctx, request, response);
  }

  std::string Render(Replica& r) { return r.metrics->Render(); }

  std::unique_ptr<Replica> owner_;
  std::unique_ptr<Replica> other_;
};

TEST_F(ForwarderTest, TokenNamesTheOwner) {
  std::string token = Bind();
  EXPECT_THAT(token, StartsWith(absl::StrCat(owner_->peer_set->self_id(), ".")));
  // 128 random bits after the replica id.
  EXPECT_EQ(token.size(), 16u + 1u + 32u);
}

TEST_F(ForwarderTest, CallsOnAnotherReplicasSessionReachTheOwner) {
  std::string token = Bind();
  v1::EvalResponse direct, forwarded;
  ASSERT_TRUE(Eval(*owner_, token, "hello", &direct).ok());
  ASSERT_TRUE(Eval(*other_, token, "hello", &forwarded).ok());
  // Same worker, same answer, byte for byte.
  EXPECT_EQ(direct.SerializeAsString(), forwarded.SerializeAsString());
  EXPECT_EQ(other_->sessions->size(), 0u);
  EXPECT_THAT(Render(*other_),
              HasSubstr("pyexec_forwarded_calls_total{rpc=\"Eval\",outcome=\"answered\"} 1\n"));
  EXPECT_THAT(Render(*owner_),
              HasSubstr("pyexec_forwarded_calls_total{rpc=\"Eval\",outcome=\"answered\"} 0\n"));

  // Status codes and messages come back unchanged too: the fake worker
  // "exits" with code 3 mid-call (ABORTED), and the session is then gone.
  v1::EvalResponse r;
  grpc::Status died = Eval(*other_, token, "exit:3", &r);
  EXPECT_EQ(died.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(died.error_message(), HasSubstr("exited with code 3"));
  grpc::Status gone = Eval(*other_, token, "hello", &r);
  EXPECT_EQ(gone.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(gone.error_message(), HasSubstr("session not found"));
}

TEST_F(ForwarderTest, UnbindIsForwarded) {
  std::string token = Bind();
  EXPECT_EQ(owner_->sessions->size(), 1u);
  grpc::ClientContext ctx;
  v1::UnbindRequest request;
  request.set_session(token);
  v1::UnbindResponse response;
  ASSERT_TRUE(other_->stub->Unbind(&ctx, request, &response).ok());
  EXPECT_EQ(owner_->sessions->size(), 0u);
}

TEST_F(ForwarderTest, ForwardedAtMostOnce) {
  std::string token = Bind();
  v1::EvalResponse r;
  // A call that says it was forwarded is served where it lands.
  grpc::Status s = Eval(*other_, token, "hello", &r, absl::Seconds(10), true);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(Render(*other_),
              HasSubstr("pyexec_forwarded_calls_total{rpc=\"Eval\",outcome=\"answered\"} 0\n"));
}

TEST_F(ForwarderTest, UnknownReplicaIsNotFound) {
  std::string token = Bind();
  std::string forged = absl::StrCat(ReplicaId("attacker.example:443"),
                                    token.substr(token.find('.')));
  v1::EvalResponse r;
  grpc::Status s = Eval(*other_, forged, "hello", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("not among the current peers"));
  EXPECT_THAT(Render(*other_), HasSubstr("outcome=\"unknown_replica\"} 1\n"));
}

TEST_F(ForwarderTest, DeadlineTravelsAndInterruptsTheOwner) {
  std::string token = Bind();
  v1::EvalResponse r;
  absl::Time start = absl::Now();
  grpc::Status s = Eval(*other_, token, "sleep:20000", &r, absl::Milliseconds(300));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  // The owner interrupted the call: the session answers again at once.
  ASSERT_TRUE(Eval(*other_, token, "hello", &r, absl::Seconds(3)).ok());
}

TEST_F(ForwarderTest, CancellationReachesTheOwner) {
  std::string token = Bind();
  grpc::ClientContext ctx;
  v1::EvalRequest request;
  request.set_session(token);
  request.set_code("sleep:20000");
  v1::EvalResponse response;
  absl::Notification done;
  grpc::Status status;
  other_->stub->async()->Eval(&ctx, &request, &response, [&](grpc::Status s) {
    status = s;
    done.Notify();
  });
  // Cancel once the owner runs the call.
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (owner_->pool->GetStats().busy_workers == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  ASSERT_EQ(owner_->pool->GetStats().busy_workers, 1);
  ctx.TryCancel();
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  // The owner's worker was interrupted, not left sleeping for 20 s.
  v1::EvalResponse r;
  absl::Time start = absl::Now();
  ASSERT_TRUE(Eval(*owner_, token, "hello", &r, absl::Seconds(5)).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST_F(ForwarderTest, UnreachableOwnerIsUnavailable) {
  std::string token = Bind();
  owner_->Stop();
  v1::EvalResponse r;
  grpc::Status s = Eval(*other_, token, "hello", &r, absl::Seconds(5));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("cannot be reached"));
  EXPECT_THAT(Render(*other_), HasSubstr("outcome=\"unreachable\"} 1\n"));
  // Stateless calls and binds stay local and work.
  ASSERT_TRUE(Eval(*other_, "", "hello", &r).ok());
}

}  // namespace
}  // namespace pyexec

namespace pyexec {
namespace {

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

// Two replicas with bearer tokens: the caller's principal travels with the
// forwarded call (proved by the shared peer secret), so the owner applies
// session ownership as if the call had come to it directly.
class ForwardedPrincipalTest : public ::testing::Test {
 protected:
  void Start(bool other_knows_the_secret) {
    std::string a = absl::StrCat("127.0.0.1:", FreePort());
    std::string b = absl::StrCat("127.0.0.1:", FreePort());
    AuthOptions options;
    options.tokens_file = WriteTemp("fwd_tokens", "alice tok-alice\nbob tok-bob\n");
    options.peer_secret_file = WriteTemp("fwd_secret", "fwd-peer-secret-0123456789\n");
    owner_ = std::make_unique<Replica>(a, std::vector<std::string>{a, b}, options);
    if (!other_knows_the_secret) {
      options.peer_secret_file = WriteTemp("fwd_wrong", "not-the-peer-secret-01234\n");
    }
    other_ = std::make_unique<Replica>(b, std::vector<std::string>{a, b}, options);
  }

  grpc::Status Call(Replica& via, const std::string& token,
                    const std::string& session, const std::string& code,
                    v1::EvalResponse* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::EvalRequest request;
    request.set_session(session);
    request.set_code(code);
    return via.stub->Eval(&ctx, request, response);
  }

  std::string BindAsAlice() {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok-alice");
    v1::BindResponse response;
    grpc::Status s = owner_->stub->Bind(&ctx, v1::BindRequest(), &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response.session();
  }

  std::unique_ptr<Replica> owner_;
  std::unique_ptr<Replica> other_;
};

TEST_F(ForwardedPrincipalTest, OwnerSeesTheOriginalCaller) {
  Start(/*other_knows_the_secret=*/true);
  std::string token = BindAsAlice();
  v1::EvalResponse r;
  grpc::Status alice = Call(*other_, "tok-alice", token, "hello", &r);
  ASSERT_TRUE(alice.ok()) << alice.error_message();
  EXPECT_THAT(r.value().str(), HasSubstr(":hello"));
  grpc::Status bob = Call(*other_, "tok-bob", token, "hello", &r);
  EXPECT_EQ(bob.error_code(), grpc::StatusCode::NOT_FOUND) << bob.error_message();
  grpc::Status nobody = Call(*other_, "tok-nobody", token, "hello", &r);
  EXPECT_EQ(nobody.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ForwardedPrincipalTest, OwnerRefusesAPeerWithTheWrongSecret) {
  Start(/*other_knows_the_secret=*/false);
  std::string token = BindAsAlice();
  v1::EvalResponse r;
  grpc::Status s = Call(*other_, "tok-alice", token, "hello", &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("authenticated peer"));
}

}  // namespace
}  // namespace pyexec

#include "bench/echo_server.h"

#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"

namespace pyexec {
namespace bench {
namespace {

TEST(EchoServerTest, EchoesPayload) {
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0");
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_NE(echo->address, "127.0.0.1:0");
  auto stub = Echo::NewStub(
      grpc::CreateChannel(echo->address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  EchoRequest request;
  request.set_payload(std::string("\0abc", 4));
  EchoResponse response;
  ASSERT_TRUE(stub->Echo(&context, request, &response).ok());
  EXPECT_EQ(response.payload(), request.payload());
  echo->server->Shutdown();
}

TEST(EchoServerTest, RelaysPayloadThroughAHelperProcess) {
  absl::StatusOr<std::unique_ptr<ProcessRelay>> relay = ProcessRelay::Start(2);
  ASSERT_TRUE(relay.ok()) << relay.status();
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0", *std::move(relay));
  ASSERT_TRUE(echo.ok()) << echo.status();
  auto stub = Echo::NewStub(
      grpc::CreateChannel(echo->address, grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 50; ++i) {
    grpc::ClientContext context;
    EchoRequest request;
    request.set_payload(std::string("\0relay", 6) + std::to_string(i));
    EchoResponse response;
    ASSERT_TRUE(stub->Relay(&context, request, &response).ok());
    EXPECT_EQ(response.payload(), request.payload());
  }
  echo->server->Shutdown();
}

TEST(EchoServerTest, RelayWithoutHelpersIsUnimplemented) {
  absl::StatusOr<EchoServer> echo = StartEchoServer("127.0.0.1:0");
  ASSERT_TRUE(echo.ok()) << echo.status();
  auto stub = Echo::NewStub(
      grpc::CreateChannel(echo->address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  EchoResponse response;
  EXPECT_EQ(stub->Relay(&context, EchoRequest(), &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  echo->server->Shutdown();
}

}  // namespace
}  // namespace bench
}  // namespace pyexec

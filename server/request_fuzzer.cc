// Fuzzes the server's request path: a gRPC request body parsed as gRPC does
// (protobuf's default recursion limit), validated by PyExecCore, turned into
// a worker request and framed to a worker, whose answer is moved into the
// response. The workers are in-process fakes (FakeWorkerLauncher) that parse
// every frame with the real worker's parser and die ("exited with code 5")
// when they cannot: so any request the server accepts but a worker could not
// read shows up as ABORTED, which is a bug.
//
// Input: byte 0 picks Eval, Exec or Call; the rest is the request.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "google/protobuf/stubs/logging.h"
#include <cstdio>
#include <memory>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "context_pool/context_pool.h"
#include "context_pool/fake_worker_launcher.h"
#include "server/pyexec_core.h"
#include "server/session_table.h"

namespace {

struct Server {
  Server() {
    pyexec::ContextPoolOptions options;
    options.workers = 2;
    options.max_workers = 2;
    pool = std::make_unique<pyexec::ContextPool>(
        options, std::make_unique<pyexec::FakeWorkerLauncher>());
    core = std::make_unique<pyexec::PyExecCore>(pyexec::CoreOptions{}, &sessions,
                                                pool.get());
    if (!pool->Start().ok() || !pool->WaitUntilWarm(absl::Seconds(30))) std::abort();
  }
  pyexec::SessionTable sessions;
  std::unique_ptr<pyexec::ContextPool> pool;
  std::unique_ptr<pyexec::PyExecCore> core;
};


Server* server = nullptr;

// The fake worker gives these Eval codes special behaviours (sleeping,
// dying, writing garbage) that are not server bugs.
void DefuseFakeBehaviour(std::string* code) {
  for (const char* prefix : {"sleep:", "spin", "exit:", "garbage", "close"}) {
    if (absl::StartsWith(*code, prefix)) code->insert(0, "_");
  }
}

template <typename Request, typename Response, typename Method>
void RunOne(const uint8_t* data, size_t size, Method method) {
  Request request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;  // gRPC: INVALID_ARGUMENT
  if constexpr (std::is_same_v<Request, pyexec::v1::EvalRequest>) {
    DefuseFakeBehaviour(request.mutable_code());
  }
  Response response;
  absl::Notification done;
  absl::Status status;
  (server->core.get()->*method)("", request, absl::Now() + absl::Seconds(20), &response,
                                [&](absl::Status s) {
                                  status = s;
                                  done.Notify();
                                });
  done.WaitForNotification();
  switch (status.code()) {
    case absl::StatusCode::kOk:
    case absl::StatusCode::kInvalidArgument:  // empty code, function, module
    case absl::StatusCode::kNotFound:         // a made-up session token
      break;
    default:
      std::fprintf(stderr, "unexpected status %s\n", status.ToString().c_str());
      std::abort();
  }
  // What goes back to the client must serialise.
  std::string out;
  if (!response.SerializeToString(&out)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  server = new Server();  // lives for the process: libFuzzer never returns
  // Invalid UTF-8 in string fields is routine here; do not log each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using namespace pyexec;
  switch (data[0] % 3) {
    case 0:
      RunOne<v1::EvalRequest, v1::EvalResponse>(data + 1, size - 1, &PyExecCore::Eval);
      break;
    case 1:
      RunOne<v1::ExecRequest, v1::ExecResponse>(data + 1, size - 1, &PyExecCore::Exec);
      break;
    default:
      RunOne<v1::CallRequest, v1::CallResponse>(data + 1, size - 1, &PyExecCore::Call);
      break;
  }
  return 0;
}

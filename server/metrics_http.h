#ifndef PYEXEC_SERVER_METRICS_HTTP_H_
#define PYEXEC_SERVER_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct mg_connection;
struct mg_context;

namespace pyexec {

// A small embedded HTTP server (civetweb) that answers GET /metrics with
// `render()` as Prometheus text (version 0.0.4), and 404 elsewhere. It runs
// its own two threads, so a scrape never takes a gRPC thread.
class MetricsHttpServer {
 public:
  // Listens on `address` (HOST:PORT; port 0 picks one). Returns the address
  // actually listened on through address().
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, std::function<std::string()> render);
  ~MetricsHttpServer();  // stops the server

  const std::string& address() const { return address_; }

 private:
  MetricsHttpServer(std::function<std::string()> render)
      : render_(std::move(render)) {}
  static int Handle(::mg_connection* conn, void* self);

  const std::function<std::string()> render_;
  struct mg_context* ctx_ = nullptr;
  std::string address_;
};

}  // namespace pyexec

#endif  // PYEXEC_SERVER_METRICS_HTTP_H_

#include "server/metrics_http.h"

#include <civetweb.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pyexec {

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, std::function<std::string()> render) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen wants HOST:PORT, got \"", address, "\""));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  // civetweb takes "IP:PORT" (and "[IPv6]:PORT" with a + for dual stack);
  // it only accepts literal addresses, so map the usual names.
  if (host == "localhost") host = "127.0.0.1";
  std::string port = address.substr(colon + 1);
  std::string ports = host.find(':') != std::string::npos
                          ? absl::StrCat("[", host, "]:", port)
                          : absl::StrCat(host, ":", port);
  mg_init_library(0);
  // Scrapes are rare and small: two threads are plenty.
  const char* options[] = {"listening_ports", ports.c_str(),
                           "num_threads", "2",
                           "request_timeout_ms", "10000",
                           nullptr};
  std::unique_ptr<MetricsHttpServer> server(
      new MetricsHttpServer(std::move(render)));
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  server->ctx_ = mg_start(&callbacks, nullptr, options);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address));
  }
  mg_set_request_handler(server->ctx_, "/metrics$", &MetricsHttpServer::Handle,
                         server.get());
  mg_server_port listening[4];
  int n = mg_get_server_ports(server->ctx_, 4, listening);
  int actual = n > 0 ? listening[0].port : 0;
  server->address_ = host.find(':') != std::string::npos
                         ? absl::StrCat("[", host, "]:", actual)
                         : absl::StrCat(host, ":", actual);
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

int MetricsHttpServer::Handle(::mg_connection* conn, void* self) {
  const mg_request_info* info = mg_get_request_info(conn);
  if (std::strcmp(info->request_method, "GET") != 0 &&
      std::strcmp(info->request_method, "HEAD") != 0) {
    mg_send_http_error(conn, 405, "%s", "only GET /metrics\n");
    return 405;
  }
  std::string body = static_cast<MetricsHttpServer*>(self)->render_();
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n",
            body.size());
  if (std::strcmp(info->request_method, "GET") == 0) {
    mg_write(conn, body.data(), body.size());
  }
  return 200;
}

}  // namespace pyexec

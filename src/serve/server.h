// `linformer serve`'s HTTP side (cpp-httplib): the routes, the limits, JSON errors and the metrics, in
// front of a Batcher. POST /v1/{predict,embed,classify,generate} (those the model has), GET /health,
// /metrics, /openapi.json. Every answer is JSON (or Prometheus text); every refusal is a 4xx/5xx with
// {"error": "..."}. httplib stays behind this header.
#pragma once
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "serve/batcher.h"
#include "serve/request.h"

namespace lf::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (see Server::bind)
  int64_t max_body = 1 << 20;      // bytes of a request body; more is 413
  int timeout_ms = 30000;          // from queueing to the results; longer is 504
  int read_timeout_s = 5;          // a client that sends nothing for this long is dropped
  int connections = 64;            // connections served at once (httplib's thread pool)
  RequestLimits limits;
  BatcherOptions batcher;
  std::set<Endpoint> endpoints;    // those the model has; the others answer 404 with why
  std::string why_not;             // e.g. "this checkpoint is a masked LM": the 404's reason
  json model_info;                 // shown by GET /health
};

// The OpenAPI 3 document of the routes (src/serve/openapi.json, compiled in).
const char* openapi_document();

class Server {
 public:
  // Starts the workers (building their backends); nothing listens yet.
  Server(const BackendFactory& factory, const ServerOptions& options);
  ~Server();
  // Binds host:port; returns the port (the chosen one for port 0). lf::IoError when it cannot.
  int bind();
  // Serves until stop(); then the requests in flight are answered and the workers finish the queue.
  void run();
  // Stops accepting connections; run() returns once the requests in flight are answered. From any
  // thread (not from a signal handler).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lf::serve

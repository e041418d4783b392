#include "serve/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <exception>

#include "linformer/error.h"

namespace lf::serve {
namespace {

using Clock = std::chrono::steady_clock;

constexpr Endpoint kEndpoints[kNumEndpoints] = {Endpoint::predict, Endpoint::embed, Endpoint::classify,
                                                Endpoint::generate};
const char* const kGetRoutes[] = {"/health", "/metrics", "/openapi.json"};

// Bodies are built from user text and model output, which need not be UTF-8: invalid bytes become
// U+FFFD instead of an exception.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, json{{"error", message}});
}

int http_status(Outcome o) {
  switch (o) {
    case Outcome::ok: return 200;
    case Outcome::bad_request: return 400;
    case Outcome::queue_full: return 503;
    case Outcome::stopped: return 503;
    case Outcome::timeout: return 504;
    default: return 500;
  }
}

// A request path as it may appear in a message: short, whatever the client sent.
std::string shown_path(const std::string& path) { return path.size() > 80 ? path.substr(0, 80) + "..." : path; }

// Whether the current request was counted by its handler (httplib runs routing, the handler and the
// logger of one request on one thread). Handlers count before the answer is written, so a client that
// reads /metrics right after an answer sees it; the logger, which runs after writing, counts only
// what no handler saw (unknown routes, bodies refused before routing).
thread_local bool t_counted = false;

}  // namespace

struct Server::Impl {
  ServerOptions options;
  Metrics metrics;
  Batcher batcher;
  httplib::Server http;
  std::atomic<bool> run_called{false}, run_done{false}, stop_requested{false};
  int listen_socket = -1;

  Impl(const BackendFactory& factory, const ServerOptions& o) : options(o), batcher(factory, o.batcher, &metrics) {}

  std::string route_label(const std::string& path) const {
    for (Endpoint e : kEndpoints)
      if (path == std::string("/v1/") + endpoint_name(e)) return path;
    for (const char* r : kGetRoutes)
      if (path == r) return path;
    return "other";
  }

  // Runs a handler, then counts its answer with the handler's time for the latency histogram.
  template <class F>
  httplib::Server::Handler timed(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      const auto start = Clock::now();
      f(req, res);
      if (res.status < 0) res.status = 200;  // what httplib would send
      metrics.count_request(route_label(req.path), res.status,
                            std::chrono::duration<double>(Clock::now() - start).count());
      t_counted = true;
    };
  }

  void model_route(Endpoint e, const httplib::Request& req, httplib::Response& res) {
    if (!options.endpoints.contains(e))
      return send_error(res, 404, str_cat("/v1/", endpoint_name(e), " is not available: ", options.why_not));
    Request r;
    try {
      r = parse_request(e, req.body, options.limits);
    } catch (const Error& err) {
      return send_error(res, 400, err.what());
    }
    Reply reply = batcher.submit(r, std::chrono::milliseconds(options.timeout_ms));
    if (reply.outcome != Outcome::ok) return send_error(res, http_status(reply.outcome), reply.error);
    send_json(res, 200, r.single ? json{{"result", std::move(reply.results[0])}}
                                 : json{{"results", std::move(reply.results)}});
  }

  void health(httplib::Response& res) {
    json endpoints = json::array();
    for (Endpoint e : options.endpoints) endpoints.push_back(std::string("/v1/") + endpoint_name(e));
    send_json(res, 200, json{{"status", "ok"}, {"model", options.model_info}, {"endpoints", endpoints},
                             {"queue_depth", batcher.queue_depth()}});
  }

  void set_up() {
    http.new_task_queue = [n = options.connections] { return new httplib::ThreadPool(size_t(n)); };
    http.set_payload_max_length(size_t(options.max_body));
    http.set_read_timeout(options.read_timeout_s, 0);
    http.set_write_timeout(options.read_timeout_s, 0);
    http.set_keep_alive_timeout(2);  // an idle connection delays shutdown at most this long
    http.set_keep_alive_max_count(1000);
    http.set_tcp_nodelay(true);
    // httplib's default also sets SO_REUSEPORT, which lets a second server bind the same port and
    // silently share its connections: only SO_REUSEADDR (a restart need not wait for TIME_WAIT).
    // The socket is kept to raise its listen backlog after bind (see bind()).
    http.set_socket_options([this](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_socket = sock;
    });

    for (Endpoint e : kEndpoints) {
      const std::string path = std::string("/v1/") + endpoint_name(e);
      http.Post(path, timed([this, e](const httplib::Request& req, httplib::Response& res) { model_route(e, req, res); }));
      wrong_method(path, "POST");
    }
    http.Get("/health", timed([this](const httplib::Request&, httplib::Response& res) { health(res); }));
    http.Get("/metrics", timed([this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.prometheus_text(batcher.queue_depth()), "text/plain; version=0.0.4");
    }));
    http.Get("/openapi.json", timed([](const httplib::Request&, httplib::Response& res) {
      res.set_content(openapi_document(), "application/json");
    }));
    for (const char* r : kGetRoutes) wrong_method(r, "GET");

    // Whatever httplib answers itself (unknown route 404, body too large 413, malformed HTTP 400) or a
    // handler left without a body gets a JSON error too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message;
      if (res.status == 404)
        message = str_cat("no route ", req.method, " ", shown_path(req.path),
                          "; the routes are POST /v1/predict, /v1/embed, /v1/classify, /v1/generate and GET /health, "
                          "/metrics, /openapi.json");
      else if (res.status == 413)
        message = str_cat("the request body is larger than the limit of ", options.max_body, " bytes (--max-body)");
      else if (res.status == 400)
        message = "malformed HTTP request";
      else
        message = str_cat("HTTP status ", res.status);
      send_error(res, res.status, message);
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, 500, "internal error: " + what);
    });
    http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      t_counted = false;
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      if (!t_counted) metrics.count_request(route_label(req.path), res.status, -1);
      t_counted = false;
    });
  }

  // GET on a POST route and the like: 405 naming the method to use.
  void wrong_method(const std::string& path, const std::string& allowed) {
    auto refuse = timed([path, allowed](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allowed);
      send_error(res, 405, str_cat(req.method, " is not allowed on ", path, "; use ", allowed));
    });
    if (allowed != "GET") http.Get(path, refuse);
    if (allowed != "POST") http.Post(path, refuse);
    http.Put(path, refuse);
    http.Delete(path, refuse);
    http.Patch(path, refuse);
    http.Options(path, refuse);
  }
};

namespace {
const ServerOptions& checked(const ServerOptions& o) {
  LF_REQUIRE(o.max_body >= 1, "`max_body` must be >= 1, got ", o.max_body);
  LF_REQUIRE(o.timeout_ms >= 1, "`timeout_ms` must be >= 1, got ", o.timeout_ms);
  LF_REQUIRE(o.connections >= 1, "`connections` must be >= 1, got ", o.connections);
  LF_REQUIRE(o.read_timeout_s >= 1, "`read_timeout_s` must be >= 1, got ", o.read_timeout_s);
  return o;
}
}  // namespace

Server::Server(const BackendFactory& factory, const ServerOptions& options)
    : impl_(std::make_unique<Impl>(factory, checked(options))) {
  impl_->set_up();
}

Server::~Server() {
  stop();
  impl_->batcher.stop();
}

int Server::bind() {
  const ServerOptions& o = impl_->options;
  int port = o.port;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
    if (port < 0) port = 0;
  } else if (!impl_->http.bind_to_port(o.host, port)) {
    port = 0;
  }
  if (port <= 0)
    throw IoError(str_cat("cannot listen on ", o.host, ":", o.port,
                          " (is the port in use, or the address not this machine's?)"));
  // httplib listens with a backlog of 5: a burst of new connections (64 clients connecting at once)
  // overflows it and the kernel resets some. Listening again on the bound socket raises it.
  if (impl_->listen_socket >= 0) ::listen(impl_->listen_socket, SOMAXCONN);
  return port;
}

void Server::run() {
  impl_->run_called = true;
  // listen_after_bind returns after http.stop(), once the connections' threads are done.
  if (!impl_->stop_requested) impl_->http.listen_after_bind();
  impl_->run_done = true;
  impl_->batcher.stop();
}

// httplib's stop() does nothing before listening has begun, so a stop that comes while run() is
// starting waits for it (run() itself returns at once when the stop came first).
void Server::stop() {
  impl_->stop_requested = true;
  for (int i = 0; i < 2000 && impl_->run_called && !impl_->run_done; ++i) {
    if (impl_->http.is_running()) return impl_->http.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace lf::serve

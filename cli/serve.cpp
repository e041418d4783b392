// `linformer serve`: an HTTP/JSON server on a checkpoint (src/serve/, docs/serve.md). This file
// parses the flags, loads the model, and turns SIGTERM/SIGINT into a graceful stop: no new
// connections, the requests in flight answered, exit 0.
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "cli/common.h"
#include "linformer/error.h"
#include "linformer/inference.h"
#include "serve/model_backend.h"
#include "serve/server.h"

namespace lf::cli {
namespace {

struct ServeCommand {
  std::string checkpoint;
  serve::ServerOptions server;
  int64_t max_seq_len = 0;  // 0: the model's max_len
};

// The signal handler only writes the signal's number to a pipe (async-signal-safe); a thread reads
// it and stops the server from outside the handler.
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  const unsigned char s = static_cast<unsigned char>(sig);
  const int saved = errno;
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &s, 1);
  errno = saved;
}

void check_flags(const ServeCommand& c) {
  const serve::ServerOptions& o = c.server;
  LF_REQUIRE(o.port >= 0 && o.port <= 65535, "--port must be in [0, 65535] (0: any free port), got ", o.port);
  LF_REQUIRE(o.batcher.workers >= 1 && o.batcher.workers <= 256, "--workers must be in [1, 256], got ", o.batcher.workers);
  LF_REQUIRE(o.batcher.max_batch >= 1 && o.batcher.max_batch <= 4096, "--max-batch must be in [1, 4096], got ",
             o.batcher.max_batch);
  LF_REQUIRE(o.batcher.max_wait_ms >= 0 && o.batcher.max_wait_ms <= 1000, "--max-wait-ms must be in [0, 1000], got ",
             o.batcher.max_wait_ms);
  LF_REQUIRE(o.batcher.max_queue >= 1, "--max-queue must be >= 1, got ", o.batcher.max_queue);
  LF_REQUIRE(o.max_body >= 1, "--max-body must be >= 1 (bytes), got ", o.max_body);
  LF_REQUIRE(o.limits.max_texts >= 1, "--max-texts must be >= 1, got ", o.limits.max_texts);
  LF_REQUIRE(c.max_seq_len >= 0, "--max-seq-len must be >= 1 (bytes), got ", c.max_seq_len);
  LF_REQUIRE(o.limits.max_new_tokens >= 1, "--max-new-tokens must be >= 1, got ", o.limits.max_new_tokens);
  LF_REQUIRE(o.timeout_ms >= 1, "--timeout-ms must be >= 1, got ", o.timeout_ms);
  LF_REQUIRE(o.read_timeout_s >= 1, "--read-timeout must be >= 1 (seconds), got ", o.read_timeout_s);
  LF_REQUIRE(o.connections >= 1 && o.connections <= 4096, "--connections must be in [1, 4096], got ", o.connections);
  LF_REQUIRE(o.batcher.max_queue >= o.limits.max_texts, "--max-queue (", o.batcher.max_queue,
             ") must be at least --max-texts (", o.limits.max_texts, "), or a full request could never be queued");
}

int run_serve(ServeCommand c) {
  check_flags(c);
  serve::ServerOptions& o = c.server;
  // The workers share the cores: each runs its model on its share of the threads.
  PredictorOptions popt;
  popt.runtime = runtime_options();
  popt.runtime.threads = std::max(1, resolve_threads(popt.runtime.threads) / o.batcher.workers);
  popt.batch_size = o.batcher.max_batch;
  popt.caller = "serve";
  std::unique_ptr<Predictor> first;
  try {
    first = std::make_unique<Predictor>(c.checkpoint, popt);
  } catch (const Error& e) {
    // The memory guard's advice names the Predictor's `batch_size`, which here is --max-batch (not
    // train's --batch-size, the flag that name becomes by default). Only that plain Error is reworded.
    const std::string what = e.what();
    const size_t at = what.find("`batch_size`");
    if (at == std::string::npos || dynamic_cast<const InvalidArgument*>(&e) || dynamic_cast<const IoError*>(&e)) throw;
    throw Error(what.substr(0, at) + "--max-batch" + what.substr(at + 12));
  }
  const serve::ModelEndpoints model = serve::model_endpoints(*first);
  o.endpoints = model.endpoints;
  o.why_not = model.why_not;
  o.model_info = model.info;
  o.limits.max_text_bytes = c.max_seq_len > 0 ? c.max_seq_len : first->max_len();

  LF_REQUIRE(::pipe2(g_signal_pipe, O_CLOEXEC) == 0, "cannot create a pipe: ", std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);

  serve::Server server(serve::predictor_backends(std::move(first), popt), o);
  const int port = server.bind();
  int signal_seen = 0;
  std::thread watcher([&] {
    unsigned char s = 0;
    while (::read(g_signal_pipe[0], &s, 1) < 0 && errno == EINTR) {
    }
    signal_seen = s;  // 0: woken by run_serve itself, after run() returned
    server.stop();
  });
  std::string endpoints;
  for (serve::Endpoint e : o.endpoints) endpoints += str_cat(" /v1/", serve::endpoint_name(e));
  std::printf("linformer serve: listening on http://%s:%d (%s, %d worker(s), endpoints:%s)\n", o.host.c_str(), port,
              o.model_info["task"].get<std::string>().c_str(), o.batcher.workers, endpoints.c_str());
  std::fflush(stdout);
  server.run();
  const unsigned char wake = 0;
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &wake, 1);
  watcher.join();
  std::fprintf(stderr, "linformer serve: stopped%s; the requests in flight were answered\n",
               signal_seen == SIGTERM ? " by SIGTERM" : signal_seen == SIGINT ? " by SIGINT" : "");
  return 0;
}

}  // namespace

CLI::App* add_serve_command(CLI::App& app, std::function<int()>& run) {
  auto cmd = std::make_shared<ServeCommand>();
  serve::ServerOptions& o = cmd->server;
  o.batcher.max_batch = 16;
  CLI::App* sub = app.add_subcommand("serve", "Serve a checkpoint over HTTP/JSON (docs/serve.md)");
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint directory, or a run directory (its latest)")->required();
  sub->add_option("--host", o.host, "address to listen on (default 127.0.0.1: this machine only)");
  sub->add_option("--port", o.port, "port (default 8080; 0: any free port, printed at start)");
  sub->add_option("--workers", o.batcher.workers, "model workers, each with its own copy of the model (default 1)");
  sub->add_option("--max-batch", o.batcher.max_batch, "texts per batched model call (default 16)");
  sub->add_option("--max-wait-ms", o.batcher.max_wait_ms,
                  "how long a worker waits for a batch to fill (default 0: batches form from what queues while the model runs)");
  sub->add_option("--max-queue", o.batcher.max_queue, "texts waiting for a worker; beyond, 503 (default 256)");
  sub->add_option("--max-body", o.max_body, "bytes of a request body; beyond, 413 (default 1048576)");
  sub->add_option("--max-texts", o.limits.max_texts, "texts in one request (default 64)");
  sub->add_option("--max-seq-len", cmd->max_seq_len, "bytes of one text (default: the model's max_len)");
  sub->add_option("--max-new-tokens", o.limits.max_new_tokens, "generate: the most bytes a request may ask for (default 256)");
  sub->add_option("--timeout-ms", o.timeout_ms, "a request's time from queueing to results; beyond, 504 (default 30000)");
  sub->add_option("--read-timeout", o.read_timeout_s, "seconds a client may stay silent mid-request (default 5)");
  sub->add_option("--connections", o.connections, "connections served at once (default 64)");
  run = [cmd] { return run_serve(*cmd); };
  return sub;
}

}  // namespace lf::cli

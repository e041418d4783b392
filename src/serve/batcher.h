// The fixed worker pool of `linformer serve`. Requests put their texts on one bounded queue; a worker
// takes the oldest text and up to max_batch - 1 more of the same batch key (endpoint and options),
// waiting at most max_wait_ms for the batch to fill, runs them in one call of its own backend, and
// hands each result back to its request. The HTTP threads only wait; the model runs on the workers.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "serve/metrics.h"
#include "serve/request.h"

namespace lf::serve {

// The model side: one per worker, so a backend needs no locking (a model's buffers are not shared).
class Backend {
 public:
  virtual ~Backend() = default;
  // One result per text, in order. `options` gives the endpoint and options, which all `texts` share
  // (its own texts are not read). lf::InvalidArgument is answered 400, any other exception 500.
  virtual std::vector<json> run(const Request& options, const std::vector<std::string>& texts) = 0;
};
using BackendFactory = std::function<std::unique_ptr<Backend>()>;

struct BatcherOptions {
  int workers = 1;
  int64_t max_batch = 8;   // texts per model call
  // How long a worker waits for a batch to fill. 0 by default: texts that arrive while the model runs
  // queue up and make the next batch anyway, and waiting only delayed a lone client (loopback load
  // test, docs/serve.md: 1 connection 271 -> 1101 requests/s, 64 connections 1669 -> 5082).
  int max_wait_ms = 0;
  int64_t max_queue = 256; // texts waiting; a request that does not fit is refused (503)
};

enum class Outcome { ok, queue_full, timeout, bad_request, failed, stopped };

struct Reply {
  Outcome outcome = Outcome::ok;
  std::vector<json> results;  // one per text when ok
  std::string error;          // why, otherwise
};

class Batcher {
 public:
  // Makes the workers' backends (on the workers' threads) and starts them.
  Batcher(const BackendFactory& factory, const BatcherOptions& options, Metrics* metrics);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues the request's texts and waits for their results, at most `timeout`; a request that timed
  // out is taken off the queue (a batch already running finishes, its results dropped).
  Reply submit(const Request& request, std::chrono::milliseconds timeout);
  // Refuses new requests, lets the workers finish what is queued, and joins them. Idempotent.
  void stop();
  int64_t queue_depth() const;

 private:
  struct Pending;
  struct Item {
    std::shared_ptr<Pending> pending;
    size_t index;
  };
  void work_with(Backend& backend);

  BatcherOptions options_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace lf::serve

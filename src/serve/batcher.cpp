#include "serve/batcher.h"

#include <exception>

#include "linformer/error.h"

namespace lf::serve {

// One request's shared state: the workers fill `results`; the HTTP thread waits for `remaining` = 0.
struct Batcher::Pending {
  Request request;
  std::string key;
  std::mutex mu;
  std::condition_variable done;
  std::vector<json> results;
  size_t remaining = 0;
  Outcome failure = Outcome::ok;
  std::string error;
  bool cancelled = false;  // timed out: its queued texts are skipped
};

Batcher::Batcher(const BackendFactory& factory, const BatcherOptions& options, Metrics* metrics)
    : options_(options), metrics_(metrics) {
  LF_REQUIRE(options.workers >= 1, "`workers` must be >= 1, got ", options.workers);
  LF_REQUIRE(options.max_batch >= 1, "`max_batch` must be >= 1, got ", options.max_batch);
  LF_REQUIRE(options.max_queue >= 1, "`max_queue` must be >= 1, got ", options.max_queue);
  // Each worker builds its backend before taking work; the first failure is thrown here, after the
  // others are stopped.
  std::mutex start_mu;
  std::condition_variable started;
  int ready = 0;
  std::exception_ptr failed;
  for (int w = 0; w < options.workers; ++w)
    workers_.emplace_back([&, this] {
      std::unique_ptr<Backend> backend;
      try {
        backend = factory();
      } catch (...) {
        const std::lock_guard<std::mutex> lock(start_mu);
        if (!failed) failed = std::current_exception();
      }
      {
        // Notified under the lock: once `ready` is full the constructor may return and end these locals.
        const std::lock_guard<std::mutex> lock(start_mu);
        ++ready;
        started.notify_all();
      }
      if (backend) work_with(*backend);
    });
  std::unique_lock<std::mutex> lock(start_mu);
  started.wait(lock, [&] { return ready == options.workers; });
  if (failed) {
    lock.unlock();
    stop();
    std::rethrow_exception(failed);
  }
}

Batcher::~Batcher() { stop(); }

void Batcher::stop() {
  {
    const std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
}

int64_t Batcher::queue_depth() const {
  const std::lock_guard<std::mutex> lock(mu_);
  return int64_t(queue_.size());
}

Reply Batcher::submit(const Request& request, std::chrono::milliseconds timeout) {
  auto p = std::make_shared<Pending>();
  p->request = request;
  p->key = request.batch_key();
  p->results.resize(request.texts.size());
  p->remaining = request.texts.size();
  {
    const std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return {Outcome::stopped, {}, "the server is shutting down"};
    if (int64_t(queue_.size() + request.texts.size()) > options_.max_queue)
      return {Outcome::queue_full, {}, str_cat("the server is busy: ", queue_.size(), " texts are queued (limit ",
                                               options_.max_queue, ", --max-queue); retry later")};
    for (size_t i = 0; i < request.texts.size(); ++i) queue_.push_back({p, i});
  }
  cv_.notify_all();
  std::unique_lock<std::mutex> lock(p->mu);
  if (!p->done.wait_for(lock, timeout, [&] { return p->remaining == 0; })) {
    p->cancelled = true;
    lock.unlock();
    {
      const std::lock_guard<std::mutex> qlock(mu_);
      std::erase_if(queue_, [&](const Item& it) { return it.pending == p; });
    }
    return {Outcome::timeout, {}, str_cat("the request took longer than ", timeout.count(), " ms (--timeout-ms)")};
  }
  if (p->failure != Outcome::ok) return {p->failure, {}, p->error};
  return {Outcome::ok, std::move(p->results), {}};
}

namespace {

struct Attempt {
  std::vector<json> results;
  Outcome failure = Outcome::ok;
  std::string error;
};

Attempt attempt(Backend& backend, const Request& options, const std::vector<std::string>& texts) {
  Attempt a;
  try {
    a.results = backend.run(options, texts);
    if (a.results.size() != texts.size())
      throw Error(str_cat("the backend returned ", a.results.size(), " results for ", texts.size(), " texts"));
  } catch (const InvalidArgument& e) {
    a.failure = Outcome::bad_request;
    a.error = e.what();
  } catch (const std::exception& e) {
    a.failure = Outcome::failed;
    a.error = e.what();
  }
  return a;
}

}  // namespace

void Batcher::work_with(Backend& backend) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left to finish
    // Wait a little for the batch to fill: texts of one key arriving together run together.
    const std::string first_key = queue_.front().pending->key;
    auto same_key = [&] {
      int64_t n = 0;
      for (const Item& it : queue_) n += it.pending->key == first_key;
      return n;
    };
    if (same_key() < options_.max_batch && !stopping_)
      cv_.wait_for(lock, std::chrono::milliseconds(options_.max_wait_ms),
                   [&] { return stopping_ || queue_.empty() || same_key() >= options_.max_batch; });
    if (queue_.empty()) continue;  // another worker took them
    const std::string key = queue_.front().pending->key;
    std::vector<Item> batch;
    for (auto it = queue_.begin(); it != queue_.end() && int64_t(batch.size()) < options_.max_batch;) {
      if (it->pending->key != key) {
        ++it;
        continue;
      }
      batch.push_back(std::move(*it));
      it = queue_.erase(it);
    }
    lock.unlock();
    cv_.notify_all();  // the rest of the queue, for another worker
    std::vector<std::string> texts;
    for (const Item& it : batch) texts.push_back(it.pending->request.texts[it.index]);
    const Request& options = batch.front().pending->request;
    Attempt all = attempt(backend, options, texts);
    if (metrics_) metrics_->count_batch(endpoint_name(options.endpoint), batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      // A failed batch of several texts is run again text by text, so that one text the model
      // refuses fails only its own request.
      Attempt one, *a = &all;
      size_t k = i;
      if (all.failure != Outcome::ok && batch.size() > 1) {
        one = attempt(backend, options, {texts[i]});
        a = &one;
        k = 0;
      }
      Pending& p = *batch[i].pending;
      const std::lock_guard<std::mutex> plock(p.mu);
      if (a->failure != Outcome::ok) {
        p.failure = a->failure;
        p.error = a->error;
      } else {
        p.results[batch[i].index] = std::move(a->results[k]);
      }
      if (--p.remaining == 0) p.done.notify_all();
    }
    lock.lock();
  }
}

}  // namespace lf::serve

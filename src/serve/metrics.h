// The server's counters for GET /metrics, in Prometheus' text format (version 0.0.4): requests by
// endpoint and status, a latency histogram per endpoint, the batch sizes the workers ran and the
// queue depth. Thread-safe; one mutex, taken once per request and once per batch.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace lf::serve {

class Metrics {
 public:
  // A request answered: its route ("/v1/predict", "/health", or "other" for unknown routes, so that
  // a scan of random paths cannot grow the table), status and the time its handler took (< 0: none ran,
  // e.g. a body refused before routing; not in the histogram).
  void count_request(const std::string& route, int status, double seconds);
  // A batch of `size` texts run by a worker for `endpoint` ("predict", ...).
  void count_batch(const std::string& endpoint, size_t size);
  // Everything in Prometheus' text format; queue_depth is read by the caller at that moment.
  std::string prometheus_text(int64_t queue_depth) const;

  // Bucket bounds (upper, inclusive), in seconds and in texts; +Inf is implicit.
  static const std::vector<double>& latency_bounds();
  static const std::vector<double>& batch_bounds();

 private:
  struct Histogram {
    std::vector<uint64_t> counts;  // one per bound, plus +Inf
    double sum = 0;
    uint64_t count = 0;
    void add(double x, const std::vector<double>& bounds);
  };
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_, batches_;
};

}  // namespace lf::serve

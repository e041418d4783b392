#include "serve/metrics.h"

#include <algorithm>
#include <sstream>

namespace lf::serve {
namespace {

void write_histogram(std::ostringstream& out, const std::string& name, const std::string& label_key,
                     const std::string& label, const std::vector<uint64_t>& counts, const std::vector<double>& bounds,
                     double sum, uint64_t count) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += counts[i];
    out << name << "_bucket{" << label_key << "=\"" << label << "\",le=\"";
    if (i < bounds.size()) out << bounds[i]; else out << "+Inf";
    out << "\"} " << cumulative << "\n";
  }
  out << name << "_sum{" << label_key << "=\"" << label << "\"} " << sum << "\n";
  out << name << "_count{" << label_key << "=\"" << label << "\"} " << count << "\n";
}

}  // namespace

const std::vector<double>& Metrics::latency_bounds() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  return b;
}

const std::vector<double>& Metrics::batch_bounds() {
  static const std::vector<double> b = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  return b;
}

void Metrics::Histogram::add(double x, const std::vector<double>& bounds) {
  if (counts.empty()) counts.assign(bounds.size() + 1, 0);
  ++counts[size_t(std::lower_bound(bounds.begin(), bounds.end(), x) - bounds.begin())];
  sum += x;
  ++count;
}

void Metrics::count_request(const std::string& route, int status, double seconds) {
  const std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
  if (seconds >= 0) latency_[route].add(seconds, latency_bounds());
}

void Metrics::count_batch(const std::string& endpoint, size_t size) {
  const std::lock_guard<std::mutex> lock(mu_);
  batches_[endpoint].add(double(size), batch_bounds());
}

std::string Metrics::prometheus_text(int64_t queue_depth) const {
  const std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream out;
  out << "# HELP linformer_requests_total Requests answered, by route and HTTP status.\n"
         "# TYPE linformer_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out << "linformer_requests_total{route=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << "\n";
  out << "# HELP linformer_request_duration_seconds Time from a request's arrival to its answer.\n"
         "# TYPE linformer_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_)
    write_histogram(out, "linformer_request_duration_seconds", "route", route, h.counts, latency_bounds(), h.sum,
                    h.count);
  out << "# HELP linformer_batch_size Texts per batched model call, by endpoint.\n"
         "# TYPE linformer_batch_size histogram\n";
  for (const auto& [endpoint, h] : batches_)
    write_histogram(out, "linformer_batch_size", "endpoint", endpoint, h.counts, batch_bounds(), h.sum, h.count);
  out << "# HELP linformer_queue_depth Texts waiting for a worker.\n"
         "# TYPE linformer_queue_depth gauge\n"
         "linformer_queue_depth " << queue_depth << "\n";
  return out.str();
}

}  // namespace lf::serve

#include <algorithm>
#include <cmath>
#include <numeric>

#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/sampling.h"

namespace lf {

void SamplingOptions::validate() const {
  LF_REQUIRE(std::isfinite(temperature) && temperature >= 0, "`temperature` must be >= 0 (0 = greedy), got ", temperature);
  LF_REQUIRE(top_k >= 0, "`top_k` must be >= 0 (0 = all tokens), got ", top_k);
  LF_REQUIRE(top_p > 0 && top_p <= 1, "`top_p` must be in (0, 1], got ", top_p);
  LF_REQUIRE(std::isfinite(repetition_penalty) && repetition_penalty > 0,
             "`repetition_penalty` must be > 0 (1 = off), got ", repetition_penalty);
  LF_REQUIRE(max_new_tokens >= 0, "`max_new_tokens` must be >= 0, got ", max_new_tokens);
  for (const std::string& s : stop) LF_REQUIRE(!s.empty(), "`stop`: a stop string is empty");
}

Sampler::Sampler(const SamplingOptions& options) : options_(options) { options_.validate(); }

namespace {
constexpr uint64_t kSamplerStream = 0x53414d504c455253ull;  // "SAMPLERS": apart from dropout's streams

// The penalised logits in double (CTRL: divide a positive logit, multiply a negative one, once per id).
std::vector<double> penalised(const float* logits, int64_t n, const std::vector<int32_t>& context, double penalty) {
  std::vector<double> z(logits, logits + n);
  if (penalty != 1.0) {
    std::vector<bool> seen(size_t(n), false);
    for (int32_t id : context)
      if (id >= 0 && id < n && !seen[size_t(id)]) {
        seen[size_t(id)] = true;
        double& v = z[size_t(id)];
        v = v > 0 ? v / penalty : v * penalty;
      }
  }
  return z;
}

int32_t argmax(const std::vector<double>& z) { return int32_t(std::max_element(z.begin(), z.end()) - z.begin()); }
}  // namespace

std::vector<double> Sampler::distribution(const float* logits, int64_t n, const std::vector<int32_t>& context) const {
  LF_REQUIRE(n > 0, "Sampler: no logits");
  const std::vector<double> z = penalised(logits, n, context, options_.repetition_penalty);
  for (double v : z) LF_REQUIRE(!std::isnan(v), "Sampler: the logits hold a NaN");
  std::vector<double> p(size_t(n), 0.0);
  if (options_.temperature == 0) {
    p[size_t(argmax(z))] = 1;
    return p;
  }
  const double mx = *std::max_element(z.begin(), z.end());
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = std::exp((z[size_t(i)] - mx) / options_.temperature);
  // Most likely first; ties by id, so the kept set is a function of the logits alone.
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  size_t keep = options_.top_k > 0 ? std::min<size_t>(size_t(options_.top_k), order.size()) : order.size();
  if (options_.top_p < 1) {
    double cum = 0;
    size_t i = 0;
    while (i < keep) {
      cum += p[size_t(order[i++])] / total;
      if (cum >= options_.top_p * (1 - 1e-12)) break;  // the smallest prefix reaching p, rounding aside
    }
    keep = i;
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += p[size_t(order[i])];
  std::vector<double> out(size_t(n), 0.0);
  for (size_t i = 0; i < keep; ++i) out[size_t(order[i])] = p[size_t(order[i])] / kept;
  return out;
}

int32_t Sampler::next(const float* logits, int64_t n, const std::vector<int32_t>& context) {
  const std::vector<double> p = distribution(logits, n, context);
  if (options_.temperature == 0) return int32_t(std::max_element(p.begin(), p.end()) - p.begin());
  const double u = uniform01_f64(options_.seed, kSamplerStream, draws_++);
  double cum = 0;
  int32_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (p[size_t(i)] == 0) continue;
    last = int32_t(i);
    cum += p[size_t(i)];
    if (u < cum) return last;
  }
  return last;  // u within rounding of 1
}

}  // namespace lf

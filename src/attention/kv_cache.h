// The keys and values a decoding layer keeps between steps (Attention::decode), shared by the kinds
// that attend to cached rows: `full` and `flash` (DenseAttention), and the sparse-pattern kinds
// (`local` with a window, `strided`, `global`, `longformer`, `bigbird` whole). Also the checks every
// decode() of a state of its own makes.
//
// K and V are (B, capacity, d) each: sequence b's positions [first, end) in its rows [0, end − first),
// so that one sequence's cached keys are a contiguous (rows, h·d_h) block, the layout the attention ops
// take. Appending grows the capacity geometrically (to twice the rows held): a token costs amortised
// O(d), never a copy of the whole cache. With a window w, a step keeps only the w positions before its
// first new one (the oldest a new query can see); the kept rows move to the front of a new buffer when
// the current one is full (or four times too large, after a long prefill), and the capacity stays twice
// the rows held, so memory is O(B·(w + n_new)·d) and the moves cost amortised O(d) per token, whatever
// the context.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "linformer/attention.h"
#include "linformer/error.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"

namespace lf {

template <class T>
class KvCache {
 public:
  static constexpr int64_t kWhole = -1;  // a window that keeps every position

  KvCache(int64_t B, int64_t d, int64_t window = kWhole) : B_(B), d_(d), window_(window) {}

  // Appends k, v (B, n_new, d): positions [end, end + n_new) of each sequence.
  void append(const T* k, const T* v, int64_t n_new) {
    const int64_t keep_from = window_ == kWhole ? first_ : std::max(first_, end_ - window_);
    const int64_t needed = end_ + n_new - keep_from;  // rows held after the append
    // Full: a new buffer. A window also moves to a smaller one once it holds four times what it needs
    // (after a long prefill), so its memory follows the window, not the longest step.
    if (end_ + n_new - first_ > cap_ || (window_ != kWhole && 4 * needed < cap_)) relayout(keep_from, needed);
    const int64_t at = end_ - first_;
    ops::copy_strided<T>(matrices(k, B_, n_new * d_, n_new, d_),
                         matrices(k_.data() + at * d_, B_, cap_ * d_, n_new, d_));
    ops::copy_strided<T>(matrices(v, B_, n_new * d_, n_new, d_),
                         matrices(v_.data() + at * d_, B_, cap_ * d_, n_new, d_));
    end_ += n_new;
  }

  int64_t first() const { return first_; }  // the oldest position held
  int64_t end() const { return end_; }      // one past the newest
  int64_t rows() const { return end_ - first_; }
  // Elements between two sequences' first cached rows.
  int64_t stride() const { return cap_ * d_; }
  // Sequence b's cached rows (rows(), d), contiguous.
  const T* keys(int64_t b) const { return k_.data() + b * cap_ * d_; }
  const T* values(int64_t b) const { return v_.data() + b * cap_ * d_; }
  // All sequences' cached rows, (B, rows(), d) views with stride() between sequences.
  TensorView<const T> keys() const { return matrices<const T>(k_.data(), B_, stride(), rows(), d_); }
  TensorView<const T> values() const { return matrices<const T>(v_.data(), B_, stride(), rows(), d_); }
  double bytes() const { return double(k_.size() + v_.size()) * sizeof(T); }

 private:
  // A new buffer of twice the rows needed, holding positions [keep_from, end) at its front.
  void relayout(int64_t keep_from, int64_t needed) {
    const int64_t cap = std::max<int64_t>(2 * needed, 16), kept = end_ - keep_from, from = keep_from - first_;
    Buffer<T> k(B_ * cap * d_), v(B_ * cap * d_);
    if (kept > 0) {
      ops::copy_strided<T>(matrices<const T>(k_.data() + from * d_, B_, cap_ * d_, kept, d_),
                           matrices(k.data(), B_, cap * d_, kept, d_));
      ops::copy_strided<T>(matrices<const T>(v_.data() + from * d_, B_, cap_ * d_, kept, d_),
                           matrices(v.data(), B_, cap * d_, kept, d_));
    }
    std::swap(k_, k);
    std::swap(v_, v);
    cap_ = cap;
    first_ = keep_from;
  }

  int64_t B_, d_, window_;
  int64_t cap_ = 0, first_ = 0, end_ = 0;
  Buffer<T> k_, v_;
};

// A decoding state that is a KV cache.
template <class T>
struct KvCacheState final : DecodeState<T> {
  KvCacheState(int64_t B, int64_t d, int64_t window) : cache(B, d, window) { this->B = B; }
  KvCache<T> cache;
  double bytes() const override { return cache.bytes(); }
};

// begin_decode()'s checks: a causal layer, a positive batch, the layer's own width.
inline void check_begin_decode(const std::string& kind, int64_t B, int64_t d_model, const AttentionDims& dims) {
  LF_REQUIRE(dims.causal, kind, " attention: decoding needs a layer built causal (a position would see the future)");
  LF_REQUIRE(B > 0, kind, " attention: decoding needs a positive batch, got B=", B);
  LF_REQUIRE(d_model == dims.d_model, kind, " attention: decoding needs the layer's width d_model=", dims.d_model,
             ", got ", d_model);
}

// decode()'s checks, and the state as the class the layer's begin_decode() made.
template <class State, class T>
State& decode_state_as(DecodeState<T>& state, const std::string& kind, int64_t n_new, const AttentionDims& dims) {
  auto* own = dynamic_cast<State*>(&state);
  LF_REQUIRE(own != nullptr, kind, " attention: decode() was given a state begun by another layer");
  LF_REQUIRE(n_new > 0, kind, " attention: decode() needs at least one new position, got ", n_new);
  LF_REQUIRE(state.length + n_new <= dims.max_len, kind, " attention: decoding past max_len = ", dims.max_len, " (",
             state.length, " positions held, ", n_new, " new)");
  return *own;
}

}  // namespace lf

// The decoding state of the position-biased AFT kinds (aft_full, aft_local, aft_conv), for
// ops::aft_window_decode: the keys and values a new row still weighs with its position bias, and the
// prefix state of the older ones.
//   window 0 (aft_full, kKvCache): every position's K and V, in a cache whose capacity doubles when full
//     (amortised O(1) copies per position); memory O(t·d) at context t.
//   window s (aft_local, aft_conv, kWindow): the last s − 1 positions' K and V, fixed at begin_decode,
//     and the running max, Σ exp(K) and Σ exp(K)·V of the older keys per channel; memory O(s·d) whatever
//     the context.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "linformer/attention.h"
#include "linformer/error.h"
#include "ops/elementwise.h"

namespace lf {

template <class T>
class AftDecodeState final : public DecodeState<T> {
 public:
  // B sequences, K dk and V d wide (aft_conv: dk = heads), window 0 or s ≥ 1.
  AftDecodeState(int64_t B, int64_t dk, int64_t d, int64_t window) : dk_(dk), d_(d), window_(window) {
    this->B = B;
    if (window_ > 0) {
      cap_ = window_ - 1;
      k_.resize(B * cap_ * dk_);
      v_.resize(B * cap_ * d_);
      mx_.assign(B * d_, -std::numeric_limits<T>::infinity());
      sum_.resize(B * d_);
      num_.resize(B * d_);
    }
  }

  double bytes() const override {
    return double(k_.size() + v_.size() + mx_.size() + sum_.size() + num_.size()) * sizeof(T);
  }

  // `state` as an AftDecodeState of these widths and window (begun by a layer like the caller), or a
  // clear error; also refuses an empty step and one past the layer's max_len (the position bias ends there).
  static AftDecodeState& of(DecodeState<T>& state, const char* kind, int64_t n_new, int64_t dk, int64_t d,
                            int64_t window, int64_t max_len) {
    auto* s = dynamic_cast<AftDecodeState*>(&state);
    LF_REQUIRE(s != nullptr && s->dk_ == dk && s->d_ == d && s->window_ == window, kind,
               " attention: decode() was given a state begun by another kind of layer");
    LF_REQUIRE(n_new > 0, kind, " attention: decode() needs at least one new position, got ", n_new);
    LF_REQUIRE(s->length + n_new <= max_len, kind, " attention: decoding ", n_new, " more positions after ", s->length,
               " passes max_len = ", max_len);
    return *s;
  }

  // The cache with the n new rows k (B, n, dk), v (B, n, d) after the kept ones: sets K, V (B, cap, ·) and
  // L, the rows in use (the new ones last). A window state builds it in a scratch of L rows.
  void append(const T* k, const T* v, int64_t n) {
    const int64_t B = this->B, kept = kept_rows();
    L = kept + n;
    if (window_ > 0) {
      work_k_.resize(B * L * dk_);
      work_v_.resize(B * L * d_);
      move_rows(k_.data(), cap_, work_k_.data(), L, 0, kept, dk_);
      move_rows(v_.data(), cap_, work_v_.data(), L, 0, kept, d_);
      cache_k_ = work_k_.data();
      cache_v_ = work_v_.data();
      rows_ = L;
    } else {
      if (L > cap_) grow(std::max<int64_t>({L, 2 * cap_, 16}));
      cache_k_ = k_.data();
      cache_v_ = v_.data();
      rows_ = cap_;
    }
    move_rows(k, n, cache_k_, rows_, kept, n, dk_);
    move_rows(v, n, cache_v_, rows_, kept, n, d_);
  }

  // After the op: the window keeps the last s − 1 rows; every state advances by n.
  void finish(int64_t n) {
    if (window_ > 0) {
      const int64_t keep = std::min(L, cap_);
      if (keep > 0) {
        move_rows(work_k_.data() + (L - keep) * dk_, L, k_.data(), cap_, 0, keep, dk_);
        move_rows(work_v_.data() + (L - keep) * d_, L, v_.data(), cap_, 0, keep, d_);
      }
      release_buffers(work_k_, work_v_);
    }
    this->length += n;
  }

  // The op's views of the cache and the prefix state (empty for a KV cache).
  TensorView<const T> K() const { return TensorView<const T>(cache_k_, {this->B, rows_, dk_}); }
  TensorView<const T> V() const { return TensorView<const T>(cache_v_, {this->B, rows_, d_}); }
  TensorView<T> mx() { return window_ > 0 ? mx_.view({this->B, d_}) : TensorView<T>(); }
  TensorView<T> sum() { return window_ > 0 ? sum_.view({this->B, d_}) : TensorView<T>(); }
  TensorView<T> num() { return window_ > 0 ? num_.view({this->B, d_}) : TensorView<T>(); }

  int64_t L = 0;  // rows in use after append(): the kept ones and the new ones

 private:
  // Rows a window keeps from earlier calls (a KV cache: every position so far).
  int64_t kept_rows() const { return window_ > 0 ? std::min(this->length, cap_) : this->length; }

  // rows [0, count) of each sequence of src (rows src_rows apart) to rows [at, at + count) of dst.
  void move_rows(const T* src, int64_t src_rows, T* dst, int64_t dst_rows, int64_t at, int64_t count,
                 int64_t width) const {
    if (count == 0) return;
    ops::copy_strided<T>(matrices<const T>(src, this->B, src_rows * width, count, width),
                         matrices(dst + at * width, this->B, dst_rows * width, count, width));
  }

  // A KV cache of `cap` rows per sequence, the rows so far copied over.
  void grow(int64_t cap) {
    Buffer<T> k(this->B * cap * dk_), v(this->B * cap * d_);
    move_rows(k_.data(), cap_, k.data(), cap, 0, this->length, dk_);
    move_rows(v_.data(), cap_, v.data(), cap, 0, this->length, d_);
    std::swap(k_, k);
    std::swap(v_, v);
    cap_ = cap;
  }

  int64_t dk_, d_, window_;
  int64_t cap_ = 0;   // rows per sequence in k_, v_
  int64_t rows_ = 0;  // rows per sequence of the cache the op reads
  Buffer<T> k_, v_;   // (B, cap, dk), (B, cap, d)
  Buffer<T> mx_, sum_, num_;  // (B, d) each, windows only
  Buffer<T> work_k_, work_v_;  // a window's scratch during a call
  T* cache_k_ = nullptr;
  T* cache_v_ = nullptr;
};

}  // namespace lf

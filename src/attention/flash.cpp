// `flash`: exact softmax attention, memory-efficient. The same parameters, options and results as
// `full` (Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ, O_i = softmax(Q_i K_iᵀ/√d_h + masks) V_i, Y = O W_oᵀ + b_o),
// but the scores are computed tile by tile with an online softmax and recomputed in the backward
// (FlashAttention-2), so only O and the per-row log-sum-exp are kept: time O(B·h·n·m·d_h), memory
// O(B·n·d) plus O(tile²) scratch per thread. The op is ops/flash.h.
#include <algorithm>
#include <cstdint>

#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/attention.h"
#include "ops/flash.h"

namespace lf {
namespace {

const AttentionKindInfo& flash_info() {
  static const AttentionKindInfo info{
      "flash", "exact softmax attention in tiles with an online softmax (FlashAttention-2), O(n·m) time, O(n) memory",
      AttentionSupport{.causal = true, .key_padding_mask = true, .variable_length = true, .cross_attention = true,
                       .attention_mask = true}};
  return info;
}

// The views of ops/flash.h over DenseAttention's buffers: queries and outputs (B, n, h·d_h), keys and
// values (B, mk, hk·d_h) (the log-sum-exp (B, h, n) is the core's own buffer).
template <class T>
TensorView<T> queries(const SdpaShape& s, T* x) {
  return TensorView<T>(x, {s.B, s.n, s.h * s.d_h});
}
template <class T>
TensorView<T> keys(const SdpaShape& s, T* x) {
  return TensorView<T>(x, {s.B, s.mk, s.hk * s.d_h});
}

// The tiled online softmax of ops/flash.h: only the row statistics are kept for the backward.
template <class T>
struct FlashCore {
  static const AttentionKindInfo& info() { return flash_info(); }

  void forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* o, bool /*keep*/) {
    lse.resize(s.B * s.h * s.n);
    ops::flash_attention_forward<T>(s, queries(s, q), keys(s, k), keys(s, v), queries(s, o), lse.view({s.B, s.h, s.n}));
  }

  void backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* o, const T* d_o, T* dq, T* dk,
                T* dv) const {
    ops::flash_attention_backward<T>(s, queries(s, q), keys(s, k), keys(s, v), queries(s, o), lse.view({s.B, s.h, s.n}),
                                     queries(s, d_o), queries(s, dq), keys(s, dk), keys(s, dv));
  }

  void release() { release_buffers(lse); }

  double activation_bytes(const AttentionDims& dims, int64_t B, int64_t n, int64_t m, bool training) const {
    // q, k, v, o (and dO, dq, dk, dv in the backward) and the row statistics; tiles are O(1) in n.
    // The kernels' transient copies (cpu/flash.h): K and V of one head per thread in the forward (less
    // than all heads' on machines with fewer threads than heads); Q, dO and up to three partial dQ in
    // the backward.
    const double d = double(dims.d_model);
    const double transient = training ? std::max(2.0 * m, 5.0 * n) : 2.0 * m;
    return sizeof(T) * ((training ? 2.0 : 1.0) * B * (2.0 * n + 2.0 * m) * d + B * transient * d +
                        2.0 * B * dims.n_heads * n);
  }

  Buffer<T> lse;  // (B, h, n) log-sum-exp of each query's scores
};

template <class T>
using FlashAttention = DenseAttention<T, FlashCore<T>>;

}  // namespace

void register_flash_attention(AttentionRegistry& registry) {
  register_kind<FlashAttention>(registry, flash_info(), dense_parser("flash"));
}

}  // namespace lf

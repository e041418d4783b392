// `full`: exact softmax attention, the quality reference every efficient kind is compared with.
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ (c = context, or x for self-attention)
//   O_i = softmax(Q_i K_iᵀ / √d_h + masks) V_i per head, Y = O W_oᵀ + b_o
// Time O(B·h·n·m·d_h), memory O(B·h·n·m) for the kept probabilities.
#include <cmath>

#include "attention/options.h"
#include "attention/projections.h"
#include "attention/sdpa.h"
#include "linformer/attention.h"

namespace lf {
namespace {

const AttentionKindInfo& full_info() {
  static const AttentionKindInfo info{
      "full", "exact softmax attention, O(n·m) time and memory",
      AttentionSupport{.causal = true, .key_padding_mask = true, .variable_length = true, .cross_attention = true,
                       .attention_mask = true},
      // Its h×n×n probabilities (kept for the backward) and their gradients are 2 GiB each at n = 8192,
      // with seconds per iteration: the benchmarks stop at 4096.
      /*quadratic_memory=*/true, /*bench_options=*/json::object(), /*bench_max_len=*/4096};
  return info;
}

// The exact softmax of sdpa.h, its probabilities kept for the backward.
template <class T>
struct FullCore {
  static const AttentionKindInfo& info() { return full_info(); }

  void forward(const SdpaShape& s, const T* q, const T* k, const T* v, T* o, bool keep) {
    probs.resize((keep ? s.B * s.h : 1) * s.n * s.mk);  // inference: one head's n×m at a time
    sdpa_forward(s, q, k, v, probs.data(), o, keep);
  }

  void backward(const SdpaShape& s, const T* q, const T* k, const T* v, const T* /*o*/, const T* d_o, T* dq, T* dk,
                T* dv) const {
    Buffer<T> scratch(sdpa_backward_scratch(s));
    sdpa_backward(s, q, k, v, probs.data(), d_o, dq, dk, dv, scratch.data());
  }

  void release() { release_buffers(probs); }

  double activation_bytes(const AttentionDims& dims, int64_t B, int64_t n, int64_t m, bool training) const {
    const double d = double(dims.d_model), bnm = double(B) * n * m;
    if (!training) return sizeof(T) * (double(n) * m + B * (2.0 * n + 2.0 * m) * d);  // one head's scores; q, k, v, o
    // Kept: q, k, v, o and the B·h·n·m probabilities; backward: dO, dq, dk, dv and 2 (n × m) scratch.
    return sizeof(T) * (double(dims.n_heads) * bnm + 2.0 * n * m + 2.0 * B * (2.0 * n + 2.0 * m) * d);
  }

  Buffer<T> probs;  // (B, h, n, m), or one head's (n, m) in inference
};

template <class T>
using FullAttention = DenseAttention<T, FullCore<T>>;

}  // namespace

void register_full_attention(AttentionRegistry& registry) {
  register_kind<FullAttention>(registry, full_info(), dense_parser("full"));
}

}  // namespace lf

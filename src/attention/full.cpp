// `full`: exact softmax attention, the quality reference every efficient kind is compared with.
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ (c = context, or x for self-attention)
//   O_i = softmax(Q_i K_iᵀ / √d_h + masks) V_i per head, Y = O W_oᵀ + b_o
// Time O(B·h·n·m·d_h), memory O(B·h·n·m) for the kept probabilities.
#include <cmath>
#include <vector>

#include "attention/attention.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "attention/sdpa.h"

namespace lf {
namespace {

const AttentionKindInfo& full_info() {
  static const AttentionKindInfo info{
      "full", "exact softmax attention, O(n·m) time and memory",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true},
      // Its h×n×n probabilities (kept for the backward) and their gradients are 2 GiB each at n = 8192,
      // with seconds per iteration: the benchmarks stop at 4096.
      /*quadratic_memory=*/true, /*bench_options=*/json::object(), /*bench_max_len=*/4096};
  return info;
}

template <class T>
class FullAttention final : public Attention<T> {
 public:
  FullAttention(const AttentionSpec& spec, bool qkv_bias, ParamArena<T>& arena)
      : dims_(spec.dims), maps_(arena, spec.prefix, spec.dims.d_model, qkv_bias) {}

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, full_info());
    in_ = in;
    const int64_t B = in.B, n = in.n, m = in.kv_len();
    const bool keep = in.keep_for_backward;
    kept_ = keep;
    maps_.project_in(in, q_, k_, v_);
    o_.resize(size_t(B * n * dims_.d_model));
    probs_.resize(size_t((keep ? B * dims_.n_heads : 1) * n * m));  // inference: one head's n×m at a time
    shape_ = dense_sdpa_shape(in, dims_, training, seed);
    sdpa_forward(shape_, q_.data(), k_.data(), v_.data(), probs_.data(), o_.data(), keep);
    maps_.project_out(o_.data(), out, B * n);
    if (!keep) {
      release_buffers(q_, k_, v_, o_, probs_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "full");
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len();
    std::vector<T> d_o(size_t(B * n * d)), dq(size_t(B * n * d)), dk(size_t(B * m * d)), dv(size_t(B * m * d));
    std::vector<T> scratch(size_t(sdpa_backward_scratch(shape_)));
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    sdpa_backward(shape_, q_.data(), k_.data(), v_.data(), probs_.data(), d_o.data(), dq.data(), dk.data(),
                  dv.data(), scratch.data());
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "full");
    release_buffers(q_, k_, v_, o_, probs_);  // one backward per forward, as in PyTorch
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    return maps_.flops(B, n, m) + 2.0 * B * 2.0 * n * m * double(dims_.d_model);
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double d = double(dims_.d_model), bnm = double(B) * n * m;
    if (!training) return sizeof(T) * (double(n) * m + B * (2.0 * n + 2.0 * m) * d);  // one head's scores; q, k, v, o
    // Kept: q, k, v, o and the B·h·n·m probabilities; backward: dO, dq, dk, dv and 2 (n × m) scratch.
    return sizeof(T) * (double(dims_.n_heads) * bnm + 2.0 * n * m + 2.0 * B * (2.0 * n + 2.0 * m) * d);
  }

 private:
  AttentionDims dims_;
  QkvoProjections<T> maps_;
  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  SdpaShape shape_;
  std::vector<T> q_, k_, v_, o_, probs_;
};

}  // namespace

void register_full_attention(AttentionRegistry& registry) {
  register_kind<FullAttention>(registry, full_info(), qkv_bias_parser("full"));
}

}  // namespace lf

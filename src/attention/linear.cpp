// `linear`: the Linear Transformer (Katharopoulos, Vyas, Pappas, Fleuret 2020, "Transformers are
// RNNs"): softmax(q·k) replaced by the kernel φ(q)·φ(k) with φ(x) = elu(x) + 1 > 0, so attention
// factorises through a d_h × d_h summary of the keys:
//   Q = x W_qᵀ, K = c W_kᵀ, V = c W_vᵀ (c = context, or x for self-attention)
//   O_t = φ(Q_t) Σ_s φ(K_s)ᵀ V_s / (φ(Q_t) · Σ_s φ(K_s) + eps) per head, Y = O W_oᵀ + b_o
// causal: the sums over s ≤ t (the RNN form), computed in chunks (linear_core.h). No 1/√d_h scale
// (as in the paper and fast-transformers); eps = 1e-6, fast-transformers' value. Padded keys are
// selected out of both sums. No probabilities are formed, so attention dropout does not apply.
// Time O(B·n·d·d_h) (+ O(B·n·d·C) causal, chunk C), memory O(B·n·d); never n×m.
#include <algorithm>
#include <cmath>
#include <vector>

#include "linformer/attention.h"
#include "attention/linear_core.h"
#include "attention/options.h"
#include "attention/projections.h"
#include "linformer/error.h"
#include "linformer/runtime.h"
#include "cpu/vmath.h"

namespace lf {
namespace {

constexpr double kLinearEps = 1e-6;

struct LinearOptions {
  bool qkv_bias = false;
  int64_t chunk = 64;
};

LinearOptions parse_linear(const AttentionDims&, const json& options, json* resolved) {
  OptionReader r("linear", options);
  LinearOptions o;
  o.qkv_bias = r.get_bool("qkv_bias", false);
  o.chunk = read_linear_chunk(r);
  r.finish(resolved);
  return o;
}

const AttentionKindInfo& linear_info() {
  static const AttentionKindInfo info{
      "linear", "linear transformer: elu(x)+1 feature maps, attention as prefix sums, O(n·d·d_h)",
      AttentionSupport{/*causal=*/true, /*key_padding_mask=*/true, /*variable_length=*/true, /*cross_attention=*/true}};
  return info;
}

// x ← elu(x) + 1 (x for x > 0 plus 1, e^x otherwise), in place over (rows, d); rows at padding
// (mask (B, rows/B), nonzero) selected to 0.
template <class T>
void elu_plus_one(std::vector<T>& x, int64_t rows, int64_t d, const uint8_t* mask) {
#pragma omp parallel for schedule(static) if (rows * d > 65536)
  for (int64_t i = 0; i < rows; ++i) {
    T* row = x.data() + i * d;
    if (mask && mask[i]) {
      std::fill(row, row + d, T(0));
      continue;
    }
#pragma omp simd
    for (int64_t e = 0; e < d; ++e) row[e] = row[e] > T(0) ? row[e] + T(1) : exp_fast<T>(row[e]);
  }
}

// g ← g · φ'(x) where φ' = 1 for x > 0, e^x = φ otherwise: min(φ, 1), from φ alone.
template <class T>
void elu_plus_one_backward(const std::vector<T>& phi, std::vector<T>& g) {
  const int64_t n = int64_t(g.size());
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) g[size_t(i)] *= std::min(phi[size_t(i)], T(1));
}

template <class T>
class LinearAttention final : public Attention<T> {
 public:
  LinearAttention(const AttentionSpec& spec, const LinearOptions& options, ParamArena<T>& arena)
      : dims_(spec.dims), opt_(options), maps_(arena, spec.prefix, spec.dims.d_model, opt_.qkv_bias) {}

  void forward(const AttentionInput<T>& in, T* out, bool training, uint64_t seed) override {
    validate_input(in, dims_, linear_info());
    in_ = in;
    kept_ = in.keep_for_backward;
    const int64_t B = in.B, n = in.n, m = in.kv_len(), d = dims_.d_model;
    maps_.project_in(in, q_, k_, v_);
    elu_plus_one(q_, B * n, d, nullptr);
    elu_plus_one(k_, B * m, d, in.key_padding_mask);  // φk (B, m, d); v's padded rows are skipped by the core
    shape_ = core_shape(B, n, m, in.key_padding_mask);
    o_.resize(size_t(B * n * d));
    den_.resize(size_t(B * dims_.n_heads * n));
    linear_core_forward<T>(shape_, q_.data(), k_.data(), v_.data(), nullptr, o_.data(), den_.data());
    maps_.project_out(o_.data(), out, B * n);
    if (!kept_) {
      release_buffers(q_, k_, v_, o_, den_);
      maps_.release();
    }
  }

  void backward(const T* dout, T* dx, T* dcontext) override {
    require_kept_for_backward(kept_, "linear");
    const int64_t d = dims_.d_model, B = in_.B, n = in_.n, m = in_.kv_len();
    std::vector<T> d_o(size_t(B * n * d)), dq(size_t(B * n * d)), dk(size_t(B * m * d)), dv(size_t(B * m * d));
    maps_.backward_out(o_.data(), dout, d_o.data(), B * n);
    linear_core_backward<T>(shape_, q_.data(), k_.data(), v_.data(), nullptr, o_.data(), den_.data(), d_o.data(),
                            dq.data(), dk.data(), dv.data());
    elu_plus_one_backward(q_, dq);
    elu_plus_one_backward(k_, dk);  // padded rows: φk = 0 and dk = 0
    maps_.backward_in(in_, dq.data(), dk.data(), dv.data(), dx, dcontext, "linear");
    release_buffers(q_, k_, v_, o_, den_);  // one backward per forward
    kept_ = false;
  }

  double forward_flops(int64_t B, int64_t n, int64_t m) const override {
    return maps_.flops(B, n, m) + linear_core_flops(core_shape(B, n, m));
  }

  double activation_bytes(int64_t B, int64_t n, int64_t m, bool training) const override {
    const double d = double(dims_.d_model), nd = double(B) * n * d, md = double(B) * m * d;
    const double den = double(B) * dims_.n_heads * n;
    const double scratch = linear_core_scratch_bytes(core_shape(B, n, m), sizeof(T));
    // φq, o (B, n, d); φk, v and the masked copy of the context (B, m, d); the denominators.
    const double fwd = sizeof(T) * (2.0 * nd + 3.0 * md + den) + scratch;
    if (!training) return fwd;
    // Backward: dO, dq (B, n, d); dk, dv and backward_in's own (B, m, d).
    return fwd + sizeof(T) * (2.0 * nd + 3.0 * md);
  }

 private:
  LinearCoreShape core_shape(int64_t B, int64_t n, int64_t m, const uint8_t* key_mask = nullptr) const {
    return linear_core_shape(dims_, dims_.d_model / dims_.n_heads, opt_.chunk, kLinearEps, B, n, m, key_mask);
  }

  AttentionDims dims_;
  LinearOptions opt_;
  QkvoProjections<T> maps_;
  // Kept from the last forward for the backward: the caller keeps in_.x / in_.context alive.
  AttentionInput<T> in_;
  bool kept_ = false;
  LinearCoreShape shape_;
  std::vector<T> q_, k_, v_;  // φ(Q) (B, n, d), φ(K) (B, m, d) (zero rows at padding), V (B, m, d)
  std::vector<T> o_, den_;    // O (B, n, d) before the output map; denominators (B, h, n)
};

}  // namespace

void register_linear_attention(AttentionRegistry& registry) {
  register_kind<LinearAttention>(registry, linear_info(), parse_linear);
}

}  // namespace lf

// `mlm`: RoBERTa's masked-LM head. logits (B, n, V) = LN(GELU(dense(h))) · E_tokᵀ + bias, tied to the
// token embedding (its input scaled by d^{-1/2} with scale_tied_output). Trained on BERT-style masking.
#include <cmath>

#include "linformer/tensor.h"
#include "model/head.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/norm_act.h"

namespace lf {
namespace {

template <class T>
class MlmHead final : public Head<T> {
 public:
  MlmHead(const HeadInfo& info, const HeadContext<T>& ctx) : Head<T>(info, ctx) {
    const ModelConfig& c = ctx.config;
    const int64_t d = c.d_model;
    const Init lin_d = Init::uniform(1 / std::sqrt(double(d)));  // nn.Linear(d, d)'s default
    dense_w_ = ctx.arena.declare("mlm_head.dense.weight", {d, d}, lin_d);
    dense_b_ = ctx.arena.declare("mlm_head.dense.bias", {d}, lin_d);
    norm_w_ = ctx.arena.declare("mlm_head.norm.weight", {d}, Init::ones());
    norm_b_ = ctx.arena.declare("mlm_head.norm.bias", {d}, Init::zeros());
    out_.token_embedding = ctx.token_embedding;
    out_.bias = ctx.arena.declare("mlm_head.bias", {c.vocab_size}, Init::zeros());
  }

  const T* forward(const T* h, const uint8_t*, int64_t B, int64_t n, bool keep) override {
    T* logits = this->begin_forward(B, n);
    const ModelConfig& c = this->config_;
    const ParamArena<T>& a = this->arena_;
    const int64_t N = B * n, d = c.d_model, N_d = N * d;
    // Inference computes dense → GELU → LayerNorm in one buffer.
    u_.resize(N_d);
    g_.resize(keep ? N_d : 0);
    z_.resize(keep ? N_d : 0);
    T* g = keep ? g_.data() : u_.data();
    T* z = keep ? z_.data() : u_.data();
    mean_.resize(N);
    rstd_.resize(N);
    ops::linear_forward(matrix<const T>(h, N, d), a.value_view(dense_w_), a.value_view(dense_b_), u_.view({N, d}));
    ops::gelu_forward<T>(u_.view({N_d}), vector_view(g, N_d));
    ops::layernorm_forward(matrix<const T>(g, N, d), a.value_view(norm_w_), a.value_view(norm_b_), matrix(z, N, d), mean_.view({N}),
                           rstd_.view({N}), c.ln_eps);
    if (const T s = tied_output_scale<T>(c); s != T(1))  // z is kept scaled: the tied product's input
      ops::scale(vector_view(z, N_d), double(s));
    out_.forward(a, c, z, logits, N);
    return logits;
  }

  void backward(const T* h, const T* dlogits, T* dh) override {
    const ModelConfig& c = this->config_;
    ParamArena<T>& a = this->arena_;
    const int64_t N = this->B_ * this->n_, d = c.d_model, N_d = N * d;
    Buffer<T> dz(N_d), dg(N_d);
    out_.backward(a, c, z_.data(), dlogits, dz.data(), N);
    ops::layernorm_backward(g_.view({N, d}), a.value_view(norm_w_), mean_.view({N}), rstd_.view({N}), dz.view({N, d}),
                            dg.view({N, d}), a.grad_view(norm_w_), a.grad_view(norm_b_));
    ops::gelu_backward<T>(u_.view({N_d}), dg.view({N_d}), dg.view({N_d}));
    ops::linear_backward<T>(matrix<const T>(h, N, d), a.value_view(dense_w_), dg.view({N, d}), matrix(dh, N, d),
                            a.grad_view(dense_w_), a.grad_view(dense_b_));
  }

  double forward_flops(int64_t n) const override {
    const double d = double(this->config_.d_model);
    return 2.0 * n * d * d + 2.0 * n * d * double(this->config_.vocab_size);
  }

  // Training keeps u, GELU(u), z (3 (B, n, d)) and the LayerNorm's statistics, the logits and their
  // gradient; its backward adds dz and dg. Inference: one (B, n, d) buffer and the logits.
  static double activation_bytes(const ModelConfig& c, double B, double n, bool training) {
    const double rows = B * n, d = double(c.d_model), V = double(c.vocab_size);
    return sizeof(float) * (training ? rows * (5 * d + 2 + 2 * V) : rows * (d + 2 + V));
  }

 private:
  int dense_w_ = -1, dense_b_ = -1, norm_w_ = -1, norm_b_ = -1;
  TiedOutput<T> out_;
  Buffer<T> u_, g_, z_, mean_, rstd_;  // dense's output, GELU's, the scaled LayerNorm output; its statistics
};

}  // namespace

void register_mlm_head(HeadRegistry& r) {
  register_head<MlmHead>(r, {.name = "mlm",
                             .summary = "masked LM (RoBERTa's head: dense, GELU, LayerNorm, tied embedding), (B, n, V)",
                             .causal = false,
                             .targets = HeadTargets::kTokens,
                             .objective = "masked_lm",
                             .linear_output_head = true});
}

}  // namespace lf

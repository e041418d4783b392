// `clm`: the causal LM head. logits (B, n, V) = h · E_tokᵀ + bias, tied to the token embedding (h scaled
// by d^{-1/2} with scale_tied_output); the target of position t is token t + 1, so every layer is causal.
#include <cmath>

#include "model/head.h"
#include "ops/elementwise.h"

namespace lf {
namespace {

template <class T>
class ClmHead final : public Head<T> {
 public:
  ClmHead(const HeadInfo& info, const HeadContext<T>& ctx) : Head<T>(info, ctx) {
    out_.token_embedding = ctx.token_embedding;
    out_.bias = ctx.arena.declare("lm_head.bias", {ctx.config.vocab_size}, Init::zeros());
  }

  const T* forward(const T* h, const uint8_t*, int64_t B, int64_t n, bool) override {
    T* logits = this->begin_forward(B, n);
    const int64_t N_d = B * n * this->config_.d_model;
    if (const T s = tied_output_scale<T>(this->config_); s != T(1)) {
      scaled_.resize(N_d);  // the scaled input of the tied product, kept for its backward
      ops::copy<T>(vector_view(h, N_d), scaled_.view({N_d}));
      ops::scale(scaled_.view({N_d}), double(s));
      h = scaled_.data();
    }
    out_.forward(this->arena_, this->config_, h, logits, B * n);
    return logits;
  }

  void backward(const T* h, const T* dlogits, T* dh) override {
    const bool scaled = tied_output_scale<T>(this->config_) != T(1);
    out_.backward(this->arena_, this->config_, scaled ? scaled_.data() : h, dlogits, dh, this->B_ * this->n_);
  }

  double forward_flops(int64_t n) const override {
    return 2.0 * n * double(this->config_.d_model) * double(this->config_.vocab_size);
  }

  // The scaled input (scale_tied_output only), the logits and, training, their gradient.
  static double activation_bytes(const ModelConfig& c, double B, double n, bool training) {
    const double scaled = c.scale_tied_output ? double(c.d_model) : 0;
    return sizeof(float) * B * n * (scaled + (training ? 2 : 1) * double(c.vocab_size));
  }

 private:
  TiedOutput<T> out_;
  Buffer<T> scaled_;  // (B, n, d): s·h, with scale_tied_output
};

}  // namespace

void register_clm_head(HeadRegistry& r) {
  register_head<ClmHead>(r, {.name = "clm",
                             .summary = "causal LM (tied embedding; needs causal attention), (B, n, V)",
                             .causal = true,
                             .targets = HeadTargets::kTokens,
                             .objective = "causal_lm",
                             .linear_output_head = true});
}

}  // namespace lf

// output_head "linear": logits = h · `lm_head.weight`ᵀ + `lm_head.bias`, (B, n, V), an untied
// nn.Linear(d, V) from the last hidden states, as lucidrains' LinformerLM's to_logits. It replaces any
// token head whose HeadInfo has linear_output_head (mlm, clm), which then only decides the training.
#include <cmath>

#include "linformer/tensor.h"
#include "model/head.h"
#include "ops/linear.h"

namespace lf {
namespace {

template <class T>
class UntiedLinearHead final : public Head<T> {
 public:
  UntiedLinearHead(const HeadInfo& info, const HeadContext<T>& ctx) : Head<T>(info, ctx) {
    const ModelConfig& c = ctx.config;
    const Init lin_d = Init::uniform(1 / std::sqrt(double(c.d_model)));  // nn.Linear(d, V)'s default
    weight_ = ctx.arena.declare("lm_head.weight", {c.vocab_size, c.d_model}, lin_d);
    bias_ = ctx.arena.declare("lm_head.bias", {c.vocab_size}, lin_d);
  }

  const T* forward(const T* h, const uint8_t*, int64_t B, int64_t n, bool) override {
    T* logits = this->begin_forward(B, n);
    const ModelConfig& c = this->config_;
    ops::linear_forward(matrix<const T>(h, B * n, c.d_model), this->arena_.value_view(weight_), this->arena_.value_view(bias_), matrix(logits, B * n, c.vocab_size));
    return logits;
  }

  void backward(const T* h, const T* dlogits, T* dh) override {
    const ModelConfig& c = this->config_;
    ParamArena<T>& a = this->arena_;
    ops::linear_backward<T>(matrix<const T>(h, this->B_ * this->n_, c.d_model), a.value_view(weight_), matrix<const T>(dlogits, this->B_ * this->n_, c.vocab_size), matrix(dh, this->B_ * this->n_, c.d_model),
                            a.grad_view(weight_), a.grad_view(bias_));
  }

  double forward_flops(int64_t n) const override {
    return 2.0 * n * double(this->config_.d_model) * double(this->config_.vocab_size);
  }

 private:
  int weight_ = -1, bias_ = -1;
};

}  // namespace

template <class T>
std::unique_ptr<Head<T>> make_untied_linear_head(const HeadInfo& info, const HeadContext<T>& ctx) {
  return std::make_unique<UntiedLinearHead<T>>(info, ctx);
}
template std::unique_ptr<Head<float>> make_untied_linear_head(const HeadInfo&, const HeadContext<float>&);
template std::unique_ptr<Head<double>> make_untied_linear_head(const HeadInfo&, const HeadContext<double>&);

double untied_linear_head_activation_bytes(const ModelConfig& c, double B, double n, bool training) {
  return sizeof(float) * (training ? 2 : 1) * B * n * double(c.vocab_size);  // the logits (and their gradient)
}

}  // namespace lf

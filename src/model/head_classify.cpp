// `classify`: sequence classification. Pools the hidden states over the sequence — `mean` over the
// unpadded positions or the `first` position — then `classifier` (d → C): logits (B, C).
#include <cmath>
#include <vector>

#include "linformer/error.h"
#include "linformer/tensor.h"
#include "model/head.h"
#include "ops/linear.h"
#include "ops/sequence.h"

namespace lf {
namespace {

template <class T>
class ClassifyHead final : public Head<T> {
 public:
  ClassifyHead(const HeadInfo& info, const HeadContext<T>& ctx) : Head<T>(info, ctx) {
    const ModelConfig& c = ctx.config;
    const Init lin_d = Init::uniform(1 / std::sqrt(double(c.d_model)));  // nn.Linear(d, C)'s default
    weight_ = ctx.arena.declare("classifier.weight", {c.n_classes, c.d_model}, lin_d);
    bias_ = ctx.arena.declare("classifier.bias", {c.n_classes}, lin_d);
  }

  const T* forward(const T* h, const uint8_t* padding, int64_t B, int64_t n, bool) override {
    T* logits = this->begin_forward(B, n);
    const ModelConfig& c = this->config_;
    const int64_t d = c.d_model;
    padding_.assign(padding, padding ? padding + B * n : padding);
    pooled_.resize(B * d);
    ops::sequence_pool_forward<T>(TensorView<const T>(h, {B, n, d}), padding_view(), pooling(), pooled_.view({B, d}));
    ops::linear_forward(pooled_.view({B, d}), this->arena_.value_view(weight_), this->arena_.value_view(bias_), matrix(logits, B, c.n_classes));
    return logits;
  }

  void backward(const T*, const T* dlogits, T* dh) override {
    const ModelConfig& c = this->config_;
    ParamArena<T>& a = this->arena_;
    const int64_t B = this->B_, n = this->n_, d = c.d_model;
    Buffer<T> dpooled(B * d);
    ops::linear_backward<T>(pooled_.view({B, d}), a.value_view(weight_), matrix<const T>(dlogits, B, c.n_classes), dpooled.view({B, d}),
                            a.grad_view(weight_), a.grad_view(bias_));
    ops::sequence_pool_backward<T>(dpooled.view({B, d}), padding_view(), pooling(), TensorView<T>(dh, {B, n, d}));
  }

  double forward_flops(int64_t) const override {
    return 2.0 * double(this->config_.d_model) * double(this->config_.n_classes);
  }

  // The padding mask and pooled (B, d), the logits (B, C) and, training, their gradient and dpooled.
  static double activation_bytes(const ModelConfig& c, double B, double n, bool training) {
    const double d = double(c.d_model), C = double(c.n_classes);
    return B * n + sizeof(float) * B * (training ? 2 * d + 2 * C : d + C);
  }

  static void validate(const ModelConfig& c) {
    LF_REQUIRE(c.pooling == "mean" || c.pooling == "first", "`pooling` must be mean or first, got '", c.pooling, "'");
  }

 private:
  ops::SequencePooling pooling() const {
    return this->config_.pooling == "first" ? ops::SequencePooling::kFirst : ops::SequencePooling::kMean;
  }
  TensorView<const uint8_t> padding_view() const {
    return padding_.empty() ? TensorView<const uint8_t>() : vector_view(padding_.data(), int64_t(padding_.size()));
  }

  int weight_ = -1, bias_ = -1;
  std::vector<uint8_t> padding_;  // (B, n) of the last forward, or empty: a host copy of the caller's mask
  Buffer<T> pooled_;              // (B, d)
};

}  // namespace

void register_classify_head(HeadRegistry& r) {
  register_head<ClassifyHead>(r,
                              {.name = "classify",
                               .summary = "sequence classification (mean or first-position pooling, linear), (B, C)",
                               .causal = false,
                               .targets = HeadTargets::kClasses,
                               .objective = "classification"},
                              &ClassifyHead<float>::validate);
}

}  // namespace lf

// A model's output head: the layer from the encoder's final hidden states (B, n, d) to the logits, behind
// one interface, one file per head (src/model/head_<name>.cpp), registered under the name the config's
// `task` gives it. Its HeadInfo tells the rest of the library what it needs, so nothing outside the head's
// file switches on the task: whether the encoder must be causal, whether it predicts tokens (a language
// model) or classes, and which training objective (src/train/objective.h) makes its batches.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "linformer/arena.h"
#include "linformer/config.h"
#include "linformer/registry.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"
#include "ops/linear.h"

namespace lf {

enum class HeadTargets {
  kTokens,   // a language model: logits (B, n, V), one distribution over the vocabulary per position; the
             // targets are token ids (bytes), so a loss per token is a loss per byte (bits/byte reported)
  kClasses,  // a classifier: logits (B, C), one distribution over `n_classes` per sequence; labelled data
};

struct HeadInfo {
  std::string name;     // the config's `task`
  std::string summary;  // one line: what it predicts and from what
  // Position t's logits may depend on positions <= t only: every layer's attention must support causal
  // masking, and the convolution before it (conv_kernel) is causal.
  bool causal = false;
  HeadTargets targets = HeadTargets::kTokens;
  // The training objective that makes the head's batches and scores them (src/train/objective.h), and
  // that `linformer predict` serves: "masked_lm", "causal_lm" or "classification". Heads trained
  // alike share one, so a new head on an existing objective is one file.
  std::string objective;
  // Accepts `output_head: "linear"`: an untied linear map with bias from the hidden states to the
  // logits (LinformerLM's to_logits, make_untied_linear_head) then replaces the head.
  bool linear_output_head = false;
};

// Rows of logits for B sequences of n tokens: B·n for tokens, B for classes.
int64_t logits_rows(const HeadInfo& info, int64_t B, int64_t n);
// Logits per row: vocab_size for tokens, n_classes for classes.
int64_t logits_per_row(const HeadInfo& info, const ModelConfig& config);

// What a head's constructor gets: it declares its parameters in the arena under PyTorch's names.
template <class T>
struct HeadContext {
  const ModelConfig& config;
  ParamArena<T>& arena;
  int token_embedding = -1;  // embeddings.token.weight (V, d): the tied output matrix of the LM heads
};

template <class T>
class Head {
 public:
  Head(const HeadInfo& info, const HeadContext<T>& ctx) : info_(info), config_(ctx.config), arena_(ctx.arena) {}
  virtual ~Head() = default;
  Head(const Head&) = delete;
  Head& operator=(const Head&) = delete;

  // h (B, n, d): the final hidden states, which the caller keeps unchanged until backward(); padding
  // (B, n), nonzero = padding, or null. Returns the logits (logits_rows(B, n), logits_per_row()), valid
  // until the next forward. keep_for_backward = false (inference) may keep less.
  virtual const T* forward(const T* h, const uint8_t* padding, int64_t B, int64_t n, bool keep_for_backward) = 0;
  // dlogits: shaped as the logits. Overwrites dh (B, n, d) and accumulates (+=) the parameter gradients
  // (a tied head's into the token embedding's). h: the forward's input.
  virtual void backward(const T* h, const T* dlogits, T* dh) = 0;
  // Forward FLOPs of one sequence of n tokens (matrix products).
  virtual double forward_flops(int64_t n) const = 0;

  const HeadInfo& info() const { return info_; }
  int64_t logits_per_row() const { return lf::logits_per_row(info_, config_); }
  const Buffer<T>& logits() const { return logits_; }  // of the last forward

 protected:
  // Each forward's start: records B and n and returns the logits' buffer, sized.
  T* begin_forward(int64_t B, int64_t n) {
    B_ = B;
    n_ = n;
    logits_.resize(logits_rows(info_, B, n) * logits_per_row());
    return logits_.data();
  }

  HeadInfo info_;
  ModelConfig config_;
  ParamArena<T>& arena_;
  int64_t B_ = 0, n_ = 0;  // of the last forward
  Buffer<T> logits_;
};

// The tied LM heads' input scale: d^{-1/2} with scale_tied_output (T5), else 1.
template <class T>
T tied_output_scale(const ModelConfig& c);

// The tied output product the LM heads share: logits (N, V) = z · E_tokᵀ + bias, z (N, d) already
// multiplied by tied_output_scale (the heads keep it so, as the product's input).
template <class T>
struct TiedOutput {
  int token_embedding = -1, bias = -1;

  void forward(const ParamArena<T>& a, const ModelConfig& c, const T* z, T* logits, int64_t N) const {
    ops::linear_forward(matrix<const T>(z, N, c.d_model), a.value_view(token_embedding), a.value_view(bias), matrix(logits, N, c.vocab_size));
  }
  // Overwrites dx (N, d), the gradient of the unscaled input.
  void backward(ParamArena<T>& a, const ModelConfig& c, const T* z, const T* dlogits, T* dx, int64_t N) const {
    ops::linear_backward<T>(matrix<const T>(z, N, c.d_model), a.value_view(token_embedding), matrix<const T>(dlogits, N, c.vocab_size), matrix(dx, N, c.d_model),
                            a.grad_view(token_embedding), a.grad_view(bias));
    if (const T s = tied_output_scale<T>(c); s != T(1)) ops::scale(vector_view(dx, N * c.d_model), double(s));
  }
};

// Checks a config's fields that only its head reads (throws lf::InvalidArgument naming the field); the
// shared ones ModelConfig::validate checks from the HeadInfo.
using HeadConfigCheck = void (*)(const ModelConfig&);
// Bytes (float) of the activations a forward over B × n keeps and, with training, the logits' gradient
// and the head's backward buffers; in double, as the memory estimate runs before anything is built.
using HeadActivationBytes = double (*)(const ModelConfig&, double B, double n, bool training);

struct HeadFactory {
  HeadInfo info;
  HeadConfigCheck validate = nullptr;  // none: the head reads no field of its own
  HeadActivationBytes activation_bytes = nullptr;
  std::function<std::unique_ptr<Head<float>>(const HeadContext<float>&)> make_f32;
  std::function<std::unique_ptr<Head<double>>(const HeadContext<double>&)> make_f64;
};

// The registry of heads (get, has, names, entries: linformer/registry.h); an unknown name is a bad
// `task`. The built-in heads are registered on first use (see head_registry.cpp: one line per head).
class HeadRegistry : public Registry<HeadFactory> {
 public:
  HeadRegistry();
  static HeadRegistry& instance();
};

// The one registration every head uses: `Layer<T>(info, context)` builds it for T = float and double,
// and the static `Layer<float>::activation_bytes` is its HeadActivationBytes.
template <template <class> class Layer>
void register_head(HeadRegistry& registry, HeadInfo info, HeadConfigCheck validate = nullptr) {
  HeadFactory f;
  f.info = std::move(info);
  f.validate = validate;
  f.activation_bytes = &Layer<float>::activation_bytes;
  f.make_f32 = [info = f.info](const HeadContext<float>& ctx) -> std::unique_ptr<Head<float>> {
    return std::make_unique<Layer<float>>(info, ctx);
  };
  f.make_f64 = [info = f.info](const HeadContext<double>& ctx) -> std::unique_ptr<Head<double>> {
    return std::make_unique<Layer<double>>(info, ctx);
  };
  registry.add(std::move(f));
}

// The HeadInfo of a config's `task`; throws lf::InvalidArgument listing the known heads.
const HeadInfo& head_info(const std::string& task);

// Builds the config's head (or, with output_head "linear", the untied linear map in its place),
// declaring its parameters in the arena. The config must be valid.
template <class T>
std::unique_ptr<Head<T>> make_head(const HeadContext<T>& ctx);
// The HeadActivationBytes of the head make_head builds.
double head_activation_bytes(const ModelConfig& config, double B, double n, bool training);

// output_head "linear" (src/model/head_linear.cpp): logits = h · `lm_head.weight`ᵀ + `lm_head.bias`,
// (B, n, V), an untied nn.Linear(d, V), in place of a token head that accepts it.
template <class T>
std::unique_ptr<Head<T>> make_untied_linear_head(const HeadInfo& info, const HeadContext<T>& ctx);
double untied_linear_head_activation_bytes(const ModelConfig& config, double B, double n, bool training);

}  // namespace lf

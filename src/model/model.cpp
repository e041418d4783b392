#include "linformer/model.h"

#include <algorithm>
#include <cmath>

#include "linformer/error.h"
#include "linformer/rng.h"
#include "cpu/conv1d.h"
#include "cpu/dropout.h"
#include "cpu/embedding.h"
#include "cpu/gelu.h"
#include "cpu/gemm.h"
#include "cpu/layernorm.h"
#include "cpu/linear.h"

namespace lf {

namespace {
// Dropout streams: one per (layer, site), so no two sites share a mask.
uint64_t dropout_stream(int64_t layer, int site) { return 0xd0d0ull + uint64_t(layer) * 16 + uint64_t(site); }
enum Site { kEmbedding = 0, kAttentionOut = 1, kFfnOut = 2 };
uint64_t attention_seed(uint64_t seed, int64_t layer) { return seed ^ (0x9E3779B97F4A7C15ull * uint64_t(layer + 1)); }
}  // namespace

template <class T>
struct Model<T>::Block {
  int64_t index = 0;
  std::unique_ptr<Attention<T>> attn;
  int ln1_w = -1, ln1_b = -1, ln2_w = -1, ln2_b = -1, fc1_w = -1, fc1_b = -1, fc2_w = -1, fc2_b = -1;
  int conv_w = -1, conv_b = -1;  // conv_kernel > 0
  // Activations kept for the backward, all (B·n, ·): ln1 = the attention's input (pre-LN: LN1(x);
  // post-LN: unused, x itself), r1 = x + drop(attn) (post-LN only: before LN1), x1 = the FFN
  // sub-block's input, u = fc1(LN2(x1) or x1), r2 = x1 + drop(fc2(gelu(u))) (post-LN only: before
  // LN2), and the LayerNorm statistics. LN2(x1) and gelu(u) are recomputed in the backward.
  std::vector<T> ln1, mean1, rstd1, r1, x1, mean2, rstd2, u, r2;
  // conv_kernel > 0: the convolution's input (the attention input with padded rows zeroed) and output
  // (what the attention sees).
  std::vector<T> conv_in, conv_out;
};

template <class T>
Model<T>::Model(const ModelConfig& config, ParamArena<T>& arena) : config_(config), arena_(arena) {
  config_.validate();
  const ModelConfig& c = config_;
  const int64_t d = c.d_model;
  // PyTorch's nn.Embedding default N(0, 1), as in the linformer package's LinformerLM. BERT's 0.02 leaves
  // the token signal tiny next to the blocks' outputs (nn.Linear-default weights) and, measured on
  // GCIDE, slows masked-LM learning markedly (4.0 vs 3.8 bits/byte after 400 steps).
  const Init emb = Init::normal(1.0);
  tok_emb_ = arena.declare("embeddings.token.weight", {c.vocab_size, d}, emb);
  if (c.position == "learned") pos_emb_ = arena.declare("embeddings.position.weight", {c.max_len, d}, emb);
  if (!c.pre_ln) {
    emb_norm_w_ = arena.declare("embeddings.norm.weight", {d}, Init::ones());
    emb_norm_b_ = arena.declare("embeddings.norm.bias", {d}, Init::zeros());
  }
  const Init lin_d = Init::uniform(1 / std::sqrt(double(d))), lin_ff = Init::uniform(1 / std::sqrt(double(c.d_ff)));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    auto blk = std::make_unique<Block>();
    const std::string p = "layers." + std::to_string(i) + ".";
    blk->index = i;
    blk->ln1_w = arena.declare(p + "attn_norm.weight", {d}, Init::ones());
    blk->ln1_b = arena.declare(p + "attn_norm.bias", {d}, Init::zeros());
    if (c.conv_kernel > 0) {  // nn.Conv1d(d, d, K, groups=d)'s default init: U(±1/√fan_in), fan_in = K
      const Init conv = Init::uniform(1 / std::sqrt(double(c.conv_kernel)));
      blk->conv_w = arena.declare(p + "attn_conv.weight", {d, 1, c.conv_kernel}, conv);
      blk->conv_b = arena.declare(p + "attn_conv.bias", {d}, conv);
    }
    blk->attn = make_attention<T>(c.attention_spec(i), arena);
    blk->ln2_w = arena.declare(p + "ffn_norm.weight", {d}, Init::ones());
    blk->ln2_b = arena.declare(p + "ffn_norm.bias", {d}, Init::zeros());
    blk->fc1_w = arena.declare(p + "ffn.fc1.weight", {c.d_ff, d}, lin_d);
    blk->fc1_b = arena.declare(p + "ffn.fc1.bias", {c.d_ff}, lin_d);
    blk->fc2_w = arena.declare(p + "ffn.fc2.weight", {d, c.d_ff}, lin_ff);
    blk->fc2_b = arena.declare(p + "ffn.fc2.bias", {d}, lin_ff);
    blocks_.push_back(std::move(blk));
  }
  if (c.pre_ln && c.final_norm) {
    final_norm_w_ = arena.declare("final_norm.weight", {d}, Init::ones());
    final_norm_b_ = arena.declare("final_norm.bias", {d}, Init::zeros());
  }
  if (c.output_head == "linear") {  // nn.Linear(d, V)'s default init (validate() allows it for mlm, clm)
    head_w_ = arena.declare("lm_head.weight", {c.vocab_size, d}, lin_d);
    head_bias_ = arena.declare("lm_head.bias", {c.vocab_size}, lin_d);
  } else {
    switch (c.task) {
      case Task::MaskedLM:
        head_dense_w_ = arena.declare("mlm_head.dense.weight", {d, d}, lin_d);
        head_dense_b_ = arena.declare("mlm_head.dense.bias", {d}, lin_d);
        head_norm_w_ = arena.declare("mlm_head.norm.weight", {d}, Init::ones());
        head_norm_b_ = arena.declare("mlm_head.norm.bias", {d}, Init::zeros());
        head_bias_ = arena.declare("mlm_head.bias", {c.vocab_size}, Init::zeros());
        break;
      case Task::CausalLM:
        head_bias_ = arena.declare("lm_head.bias", {c.vocab_size}, Init::zeros());
        break;
      case Task::Classify:
        cls_w_ = arena.declare("classifier.weight", {c.n_classes, d}, lin_d);
        cls_b_ = arena.declare("classifier.bias", {c.n_classes}, lin_d);
        break;
    }
  }
}

template <class T>
Model<T>::~Model() = default;

template <class T>
bool Model<T>::conv_causal() const {
  return config_.task == Task::CausalLM;
}

// The block's convolution before its attention: conv_in = attn_in with padded rows zeroed (nothing
// behind the padding reaches a real position), out = conv(conv_in). Both (B·n, d).
template <class T>
void Model<T>::conv_forward(const Block& b, const T* attn_in, T* conv_in, T* out) const {
  const int64_t N_d = B_ * n_ * config_.d_model;
  std::copy(attn_in, attn_in + N_d, conv_in);
  if (!padding_.empty())
    for (int64_t r = 0; r < B_ * n_; ++r)
      if (padding_[size_t(r)]) std::fill_n(conv_in + r * config_.d_model, config_.d_model, T(0));
  depthwise_conv1d_forward(conv_in, arena_.value(b.conv_w), arena_.value(b.conv_b), out, B_, n_, config_.d_model,
                           config_.conv_kernel, conv_causal());
}

// dattn_in (B·n, d) from dout, the gradient of the convolution's output; padded rows get none (the
// forward replaced them by zeros).
template <class T>
void Model<T>::conv_backward(Block& b, const T* dout, T* dattn_in) {
  depthwise_conv1d_backward(b.conv_in.data(), arena_.value(b.conv_w), dout, dattn_in, arena_.grad(b.conv_w),
                            arena_.grad(b.conv_b), B_, n_, config_.d_model, config_.conv_kernel, conv_causal());
  if (!padding_.empty())
    for (int64_t r = 0; r < B_ * n_; ++r)
      if (padding_[size_t(r)]) std::fill_n(dattn_in + r * config_.d_model, config_.d_model, T(0));
}

// The tied LM head's input scale: d^{-1/2} with scale_tied_output (T5), else 1.
template <class T>
T Model<T>::tied_output_scale() const {
  return config_.scale_tied_output ? T(1 / std::sqrt(double(config_.d_model))) : T(1);
}

template <class T>
void Model<T>::set_training_step(int64_t step) {
  for (const auto& blk : blocks_) blk->attn->set_training_step(step);
}

template <class T>
int64_t Model<T>::logits_per_row() const {
  return config_.task == Task::Classify ? config_.n_classes : config_.vocab_size;
}

// Inference (no dropout, nothing kept): two (B·n, d) buffers and the FFN's hidden activations for
// kInferenceFfnRows rows at a time, instead of the ten (B·n, d) and two (B·n, d_ff) buffers a training
// forward keeps.
template <class T>
void Model<T>::block_forward_inference(Block& b, const T* x, T* y) {
  const ModelConfig& c = config_;
  const int64_t N = B_ * n_, d = c.d_model, N_d = N * d, ff = c.d_ff;
  std::vector<T> a(static_cast<size_t>(N_d)), s(c.pre_ln ? static_cast<size_t>(N_d) : 0), stats(static_cast<size_t>(2 * N));
  T* mean = stats.data();
  T* rstd = mean + N;
  const T* attn_in = x;
  if (c.pre_ln) {
    layernorm_forward(x, arena_.value(b.ln1_w), arena_.value(b.ln1_b), s.data(), mean, rstd, N, d, c.ln_eps);
    attn_in = s.data();
  }
  std::vector<T> conv_in, conv_out;
  if (c.conv_kernel > 0) {
    conv_in.resize(size_t(N_d));
    conv_out.resize(size_t(N_d));
    conv_forward(b, attn_in, conv_in.data(), conv_out.data());
    attn_in = conv_out.data();
  }
  AttentionInput<T> in;
  in.x = attn_in;
  in.B = B_;
  in.n = n_;
  in.key_padding_mask = padding_.empty() ? nullptr : padding_.data();
  in.keep_for_backward = false;
  if (attention_observer_) attention_observer_(b.index, attn_in, B_, n_);
  b.attn->forward(in, a.data(), /*training=*/false, 0);
  for (int64_t i = 0; i < N_d; ++i) a[size_t(i)] += x[i];  // a = x1 (pre-LN) or r1
  if (!c.pre_ln)
    layernorm_forward(a.data(), arena_.value(b.ln1_w), arena_.value(b.ln1_b), a.data(), mean, rstd, N, d, c.ln_eps);
  const T* ffn_in = a.data();
  if (c.pre_ln) {
    layernorm_forward(a.data(), arena_.value(b.ln2_w), arena_.value(b.ln2_b), s.data(), mean, rstd, N, d, c.ln_eps);
    ffn_in = s.data();
  }
  std::vector<T> hidden(size_t(std::min(N, kInferenceFfnRows) * ff));
  for (int64_t r0 = 0; r0 < N; r0 += kInferenceFfnRows) {
    const int64_t rows = std::min(kInferenceFfnRows, N - r0);
    linear_forward(ffn_in + r0 * d, arena_.value(b.fc1_w), arena_.value(b.fc1_b), hidden.data(), rows, d, ff);
    gelu_forward(hidden.data(), hidden.data(), rows * ff);
    linear_forward(hidden.data(), arena_.value(b.fc2_w), arena_.value(b.fc2_b), y + r0 * d, rows, ff, d);
  }
  for (int64_t i = 0; i < N_d; ++i) y[i] += a[size_t(i)];
  if (!c.pre_ln) layernorm_forward(y, arena_.value(b.ln2_w), arena_.value(b.ln2_b), y, mean, rstd, N, d, c.ln_eps);
}

template <class T>
void Model<T>::block_forward(Block& b, const T* x, T* y, bool training, uint64_t seed, bool keep) {
  if (!keep && !training) {
    block_forward_inference(b, x, y);
    return;
  }
  const ModelConfig& c = config_;
  const int64_t N = B_ * n_, d = c.d_model, N_d = N * d, ff = c.d_ff;
  auto resize = [](std::vector<T>& v, int64_t size) { v.resize(size_t(size)); };
  resize(b.x1, N_d);
  resize(b.u, N * ff);
  resize(b.mean1, N);
  resize(b.rstd1, N);
  resize(b.mean2, N);
  resize(b.rstd2, N);
  const double p_drop = training ? c.dropout_ffn : 0.0;
  const uint8_t* mask = padding_.empty() ? nullptr : padding_.data();
  std::vector<T> tmp(static_cast<size_t>(N_d));  // attention output, then FFN output: not kept

  // Attention sub-block.
  const T* attn_in = x;
  if (c.pre_ln) {
    resize(b.ln1, N_d);
    layernorm_forward(x, arena_.value(b.ln1_w), arena_.value(b.ln1_b), b.ln1.data(), b.mean1.data(), b.rstd1.data(), N,
                      d, c.ln_eps);
    attn_in = b.ln1.data();
  }
  if (c.conv_kernel > 0) {
    resize(b.conv_in, N_d);
    resize(b.conv_out, N_d);
    conv_forward(b, attn_in, b.conv_in.data(), b.conv_out.data());
    attn_in = b.conv_out.data();
  }
  AttentionInput<T> in;
  in.x = attn_in;
  in.B = B_;
  in.n = n_;
  in.key_padding_mask = mask;
  in.keep_for_backward = keep;
  if (attention_observer_) attention_observer_(b.index, attn_in, B_, n_);
  b.attn->forward(in, tmp.data(), training, attention_seed(seed, b.index));
  // r1 = x + drop(attn): pre-LN it is x1 itself; post-LN x1 = LN1(r1) and r1 is kept for LN1's backward.
  T* r1 = b.x1.data();
  if (!c.pre_ln) {
    resize(b.r1, N_d);
    r1 = b.r1.data();
  }
  dropout_forward(tmp.data(), r1, N_d, p_drop, seed, dropout_stream(b.index, kAttentionOut));
  for (int64_t i = 0; i < N_d; ++i) r1[i] += x[i];
  if (!c.pre_ln)
    layernorm_forward(r1, arena_.value(b.ln1_w), arena_.value(b.ln1_b), b.x1.data(), b.mean1.data(), b.rstd1.data(), N,
                      d, c.ln_eps);

  // FFN sub-block. GELU's output and LN2's output are recomputed in the backward (elementwise, cheap)
  // rather than kept.
  const T* ffn_in = b.x1.data();
  std::vector<T> ln2, g(static_cast<size_t>(N * ff));
  if (c.pre_ln) {
    ln2.resize(size_t(N_d));
    layernorm_forward(b.x1.data(), arena_.value(b.ln2_w), arena_.value(b.ln2_b), ln2.data(), b.mean2.data(),
                      b.rstd2.data(), N, d, c.ln_eps);
    ffn_in = ln2.data();
  }
  linear_forward(ffn_in, arena_.value(b.fc1_w), arena_.value(b.fc1_b), b.u.data(), N, d, ff);
  gelu_forward(b.u.data(), g.data(), N * ff);
  linear_forward(g.data(), arena_.value(b.fc2_w), arena_.value(b.fc2_b), tmp.data(), N, ff, d);
  // r2 = x1 + drop(fc2): pre-LN it is the block's output; post-LN y = LN2(r2) and r2 is kept.
  T* r2 = y;
  if (!c.pre_ln) {
    resize(b.r2, N_d);
    r2 = b.r2.data();
  }
  dropout_forward(tmp.data(), r2, N_d, p_drop, seed, dropout_stream(b.index, kFfnOut));
  for (int64_t i = 0; i < N_d; ++i) r2[i] += b.x1[size_t(i)];
  if (!c.pre_ln)
    layernorm_forward(r2, arena_.value(b.ln2_w), arena_.value(b.ln2_b), y, b.mean2.data(), b.rstd2.data(), N, d,
                      c.ln_eps);
  if (!keep) release_block_activations(b);
}

template <class T>
void Model<T>::release_block_activations(Block& b) {
  release_buffers(b.ln1, b.mean1, b.rstd1, b.r1, b.x1, b.mean2, b.rstd2, b.u, b.r2, b.conv_in, b.conv_out);
}

template <class T>
void Model<T>::block_backward(Block& b, const T* dy, T* dx) {
  const ModelConfig& c = config_;
  const int64_t N = B_ * n_, d = c.d_model, N_d = N * d, ff = c.d_ff;
  const double p_drop = training_ ? c.dropout_ffn : 0.0;
  std::vector<T> dr2(static_cast<size_t>(N_d)), dx1(static_cast<size_t>(N_d)), dv(static_cast<size_t>(N_d)),
      dg(static_cast<size_t>(N * ff)), dffn_in(static_cast<size_t>(N_d));

  // FFN sub-block: y = r2 (pre-LN) or LN2(r2) (post-LN), r2 = x1 + drop(v), v = fc2(gelu(fc1(ffn_in))).
  if (c.pre_ln)
    std::copy(dy, dy + N_d, dr2.begin());
  else
    layernorm_backward(b.r2.data(), arena_.value(b.ln2_w), b.mean2.data(), b.rstd2.data(), dy, dr2.data(),
                       arena_.grad(b.ln2_w), arena_.grad(b.ln2_b), N, d);
  dropout_backward(dr2.data(), dv.data(), N_d, p_drop, seed_, dropout_stream(b.index, kFfnOut));
  {
    std::vector<T> g(static_cast<size_t>(N * ff));  // recomputed: gelu(u)
    gelu_forward(b.u.data(), g.data(), N * ff);
    linear_backward(g.data(), arena_.value(b.fc2_w), dv.data(), dg.data(), arena_.grad(b.fc2_w), arena_.grad(b.fc2_b),
                    N, ff, d);
  }
  gelu_backward(b.u.data(), dg.data(), dg.data(), N * ff);
  std::vector<T> ln2;  // recomputed: LN2(x1) with the kept statistics (pre-LN)
  const T* ffn_in = b.x1.data();
  if (c.pre_ln) {
    ln2.resize(size_t(N_d));
    layernorm_apply(b.x1.data(), arena_.value(b.ln2_w), arena_.value(b.ln2_b), b.mean2.data(), b.rstd2.data(), ln2.data(),
                    N, d);
    ffn_in = ln2.data();
  }
  linear_backward(ffn_in, arena_.value(b.fc1_w), dg.data(), dffn_in.data(), arena_.grad(b.fc1_w),
                  arena_.grad(b.fc1_b), N, d, ff);
  dx1 = dr2;  // the residual path
  if (c.pre_ln) {
    std::vector<T> dln(static_cast<size_t>(N_d));
    layernorm_backward(b.x1.data(), arena_.value(b.ln2_w), b.mean2.data(), b.rstd2.data(), dffn_in.data(), dln.data(),
                       arena_.grad(b.ln2_w), arena_.grad(b.ln2_b), N, d);
    for (int64_t i = 0; i < N_d; ++i) dx1[size_t(i)] += dln[size_t(i)];
  } else {
    for (int64_t i = 0; i < N_d; ++i) dx1[size_t(i)] += dffn_in[size_t(i)];
  }

  // Attention sub-block: x1 = r1 (pre-LN) or LN1(r1) (post-LN), r1 = x + drop(attn(in)).
  std::vector<T> dr1(static_cast<size_t>(N_d)), dattn(static_cast<size_t>(N_d)), din(static_cast<size_t>(N_d));
  if (c.pre_ln)
    dr1 = dx1;
  else
    layernorm_backward(b.r1.data(), arena_.value(b.ln1_w), b.mean1.data(), b.rstd1.data(), dx1.data(), dr1.data(),
                       arena_.grad(b.ln1_w), arena_.grad(b.ln1_b), N, d);
  dropout_backward(dr1.data(), dattn.data(), N_d, p_drop, seed_, dropout_stream(b.index, kAttentionOut));
  b.attn->backward(dattn.data(), din.data());
  if (c.conv_kernel > 0) {
    std::vector<T> dconv_out = din;
    conv_backward(b, dconv_out.data(), din.data());
  }
  if (c.pre_ln) {
    const T* x = hidden_.data() + b.index * N_d;
    layernorm_backward(x, arena_.value(b.ln1_w), b.mean1.data(), b.rstd1.data(), din.data(), dx, arena_.grad(b.ln1_w),
                       arena_.grad(b.ln1_b), N, d);
  } else {
    std::copy(din.begin(), din.end(), dx);
  }
  for (int64_t i = 0; i < N_d; ++i) dx[i] += dr1[size_t(i)];
}

template <class T>
const T* Model<T>::forward(const int32_t* tokens, const uint8_t* padding, int64_t B, int64_t n, bool training,
                           uint64_t seed, bool keep_for_backward) {
  const ModelConfig& c = config_;
  LF_REQUIRE(B > 0 && n > 0, "model input must have positive batch and length, got B=", B, " n=", n);
  LF_REQUIRE(n <= c.max_len, "sequence of ", n, " tokens exceeds the model's max_len of ", c.max_len);
  B_ = B;
  n_ = n;
  training_ = training;
  kept_ = keep_for_backward;
  seed_ = seed;
  const int64_t N = B * n, d = c.d_model, N_d = N * d;
  tokens_.assign(tokens, tokens + N);
  padding_.clear();
  if (padding) {
    padding_.assign(padding, padding + N);
    for (int64_t b = 0; b < B; ++b)
      LF_REQUIRE(std::any_of(padding + b * n, padding + (b + 1) * n, [](uint8_t p) { return p == 0; }), "sequence ", b,
                 " of the batch is padding only");
  }
  positions_.resize(size_t(N));
  for (int64_t i = 0; i < N; ++i) positions_[size_t(i)] = int32_t(i % n);

  // Embeddings: token + position, (LayerNorm for post-LN), dropout.
  hidden_.resize(size_t((keep_for_backward ? c.n_layers + 1 : 2) * N_d));
  // Block i reads slot i and writes slot i + 1 (inference: two slots in turn).
  auto slot = [&](int64_t i) { return hidden_.data() + (keep_for_backward ? i : i % 2) * N_d; };
  emb_sum_.resize(size_t(N_d));
  embedding_forward(tokens_.data(), arena_.value(tok_emb_), emb_sum_.data(), N, c.vocab_size, d);
  if (c.position == "learned")
    embedding_forward(positions_.data(), arena_.value(pos_emb_), emb_sum_.data(), N, c.max_len, d, /*accumulate=*/true);
  else if (c.position == "sinusoidal")
    sinusoidal_positions_add(emb_sum_.data(), B, n, d);
  const T* emb = emb_sum_.data();
  std::vector<T> normed;
  if (!c.pre_ln) {
    normed.resize(size_t(N_d));
    emb_norm_mean_.resize(size_t(N));
    emb_norm_rstd_.resize(size_t(N));
    layernorm_forward(emb_sum_.data(), arena_.value(emb_norm_w_), arena_.value(emb_norm_b_), normed.data(),
                      emb_norm_mean_.data(), emb_norm_rstd_.data(), N, d, c.ln_eps);
    emb = normed.data();
  }
  dropout_forward(emb, hidden_.data(), N_d, training ? c.dropout_embedding : 0.0, seed, dropout_stream(-1, kEmbedding));

  // With checkpointing the blocks run as in inference (their inputs stay in hidden_) and backward()
  // runs each again, keeping its activations, just before its backward.
  for (auto& blk : blocks_)
    block_forward(*blk, slot(blk->index), slot(blk->index + 1), training, seed, keep_for_backward && !checkpointing_);
  recompute_ = keep_for_backward && checkpointing_;

  const T* h = slot(c.n_layers);
  if (final_norm_w_ >= 0) {
    final_.resize(size_t(N_d));
    final_mean_.resize(size_t(N));
    final_rstd_.resize(size_t(N));
    layernorm_forward(h, arena_.value(final_norm_w_), arena_.value(final_norm_b_), final_.data(), final_mean_.data(),
                      final_rstd_.data(), N, d, c.ln_eps);
    h = final_.data();
  }

  if (head_w_ >= 0) {  // output_head "linear": logits = h W_lmᵀ + b_lm
    logits_.resize(size_t(N * c.vocab_size));
    linear_forward(h, arena_.value(head_w_), arena_.value(head_bias_), logits_.data(), N, d, c.vocab_size);
    return logits_.data();
  }
  switch (c.task) {
    case Task::MaskedLM: {
      // Inference computes dense → GELU → LayerNorm in one buffer.
      const bool keep = keep_for_backward;
      head_u_.resize(size_t(N_d));
      head_g_.resize(keep ? size_t(N_d) : 0);
      head_z_.resize(keep ? size_t(N_d) : 0);
      T* g = keep ? head_g_.data() : head_u_.data();
      T* z = keep ? head_z_.data() : head_u_.data();
      head_mean_.resize(size_t(N));
      head_rstd_.resize(size_t(N));
      linear_forward(h, arena_.value(head_dense_w_), arena_.value(head_dense_b_), head_u_.data(), N, d, d);
      gelu_forward(head_u_.data(), g, N_d);
      layernorm_forward(g, arena_.value(head_norm_w_), arena_.value(head_norm_b_), z, head_mean_.data(),
                        head_rstd_.data(), N, d, c.ln_eps);
      if (const T s = tied_output_scale(); s != T(1))  // z is kept scaled: the tied product's input
        for (int64_t i = 0; i < N_d; ++i) z[i] *= s;
      logits_.resize(size_t(N * c.vocab_size));
      linear_forward(z, arena_.value(tok_emb_), arena_.value(head_bias_), logits_.data(), N, d, c.vocab_size);
      break;
    }
    case Task::CausalLM:
      if (const T s = tied_output_scale(); s != T(1)) {
        head_u_.resize(size_t(N_d));  // the scaled input of the tied product, kept for its backward
        for (int64_t i = 0; i < N_d; ++i) head_u_[size_t(i)] = s * h[i];
        h = head_u_.data();
      }
      logits_.resize(size_t(N * c.vocab_size));
      linear_forward(h, arena_.value(tok_emb_), arena_.value(head_bias_), logits_.data(), N, d, c.vocab_size);
      break;
    case Task::Classify: {
      pooled_.assign(size_t(B * d), T(0));
      for (int64_t b = 0; b < B; ++b) {
        T* pb = pooled_.data() + b * d;
        if (c.pooling == "first") {
          std::copy(h + b * n * d, h + b * n * d + d, pb);
          continue;
        }
        int64_t count = 0;
        for (int64_t t = 0; t < n; ++t) {
          if (padding && padding[b * n + t]) continue;
          ++count;
          for (int64_t e = 0; e < d; ++e) pb[e] += h[(b * n + t) * d + e];
        }
        for (int64_t e = 0; e < d; ++e) pb[e] /= T(count);
      }
      logits_.resize(size_t(B * c.n_classes));
      linear_forward(pooled_.data(), arena_.value(cls_w_), arena_.value(cls_b_), logits_.data(), B, d, c.n_classes);
      break;
    }
  }
  return logits_.data();
}

template <class T>
void Model<T>::backward(const T* dlogits) {
  LF_REQUIRE(kept_, "model backward() needs a forward() with keep_for_backward = true");
  const ModelConfig& c = config_;
  const int64_t N = B_ * n_, d = c.d_model, N_d = N * d;
  std::vector<T> dh(size_t(N_d), T(0));
  const T* h_top = final_norm_w_ >= 0 ? final_.data() : hidden_.data() + c.n_layers * N_d;

  if (head_w_ >= 0) {  // output_head "linear"
    linear_backward(h_top, arena_.value(head_w_), dlogits, dh.data(), arena_.grad(head_w_), arena_.grad(head_bias_), N,
                    d, c.vocab_size);
  } else {
    switch (c.task) {
      case Task::MaskedLM: {
        std::vector<T> dz(static_cast<size_t>(N_d)), dg(static_cast<size_t>(N_d));
        linear_backward(head_z_.data(), arena_.value(tok_emb_), dlogits, dz.data(), arena_.grad(tok_emb_),
                        arena_.grad(head_bias_), N, d, c.vocab_size);
        if (const T s = tied_output_scale(); s != T(1))
          for (T& v : dz) v *= s;
        layernorm_backward(head_g_.data(), arena_.value(head_norm_w_), head_mean_.data(), head_rstd_.data(), dz.data(),
                           dg.data(), arena_.grad(head_norm_w_), arena_.grad(head_norm_b_), N, d);
        gelu_backward(head_u_.data(), dg.data(), dg.data(), N_d);
        linear_backward(h_top, arena_.value(head_dense_w_), dg.data(), dh.data(), arena_.grad(head_dense_w_),
                        arena_.grad(head_dense_b_), N, d, d);
        break;
      }
      case Task::CausalLM: {
        const T s = tied_output_scale();
        linear_backward(s != T(1) ? head_u_.data() : h_top, arena_.value(tok_emb_), dlogits, dh.data(),
                        arena_.grad(tok_emb_), arena_.grad(head_bias_), N, d, c.vocab_size);
        if (s != T(1))
          for (T& v : dh) v *= s;
        break;
      }
      case Task::Classify: {
        std::vector<T> dpooled(size_t(B_ * d));
        linear_backward(pooled_.data(), arena_.value(cls_w_), dlogits, dpooled.data(), arena_.grad(cls_w_),
                        arena_.grad(cls_b_), B_, d, c.n_classes);
        for (int64_t b = 0; b < B_; ++b) {
          const T* dp = dpooled.data() + b * d;
          if (c.pooling == "first") {
            std::copy(dp, dp + d, dh.data() + b * n_ * d);
            continue;
          }
          int64_t count = 0;
          for (int64_t t = 0; t < n_; ++t) count += padding_.empty() || !padding_[size_t(b * n_ + t)];
          for (int64_t t = 0; t < n_; ++t) {
            if (!padding_.empty() && padding_[size_t(b * n_ + t)]) continue;
            for (int64_t e = 0; e < d; ++e) dh[size_t((b * n_ + t) * d + e)] = dp[e] / T(count);
          }
        }
        break;
      }
    }
  }

  if (final_norm_w_ >= 0) {
    std::vector<T> dfinal = dh;
    layernorm_backward(hidden_.data() + c.n_layers * N_d, arena_.value(final_norm_w_), final_mean_.data(),
                       final_rstd_.data(), dfinal.data(), dh.data(), arena_.grad(final_norm_w_),
                       arena_.grad(final_norm_b_), N, d);
  }
  std::vector<T> dx(static_cast<size_t>(N_d));
  for (int64_t i = c.n_layers - 1; i >= 0; --i) {
    Block& blk = *blocks_[size_t(i)];
    if (recompute_) {  // the same inputs, seed and dropout masks: the block's output is rewritten unchanged
      T* io = hidden_.data() + i * N_d;
      block_forward(blk, io, io + N_d, training_, seed_, /*keep=*/true);
    }
    block_backward(blk, dh.data(), dx.data());
    release_block_activations(blk);
    std::swap(dh, dx);
  }
  kept_ = false;
  // Embeddings: dropout, (LayerNorm), then scatter into the token and position tables.
  dropout_backward(dh.data(), dh.data(), N_d, training_ ? c.dropout_embedding : 0.0, seed_, dropout_stream(-1, kEmbedding));
  if (!c.pre_ln) {
    std::vector<T> dsum(static_cast<size_t>(N_d));
    layernorm_backward(emb_sum_.data(), arena_.value(emb_norm_w_), emb_norm_mean_.data(), emb_norm_rstd_.data(),
                       dh.data(), dsum.data(), arena_.grad(emb_norm_w_), arena_.grad(emb_norm_b_), N, d);
    dh.swap(dsum);
  }
  embedding_backward(tokens_.data(), dh.data(), arena_.grad(tok_emb_), N, c.vocab_size, d);
  if (c.position == "learned") embedding_backward(positions_.data(), dh.data(), arena_.grad(pos_emb_), N, c.max_len, d);
}

namespace {
template <class T>
bool all_finite(const std::vector<T>& v, size_t begin, size_t count) {
  for (size_t i = begin; i < begin + count; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}
}  // namespace

template <class T>
std::string Model<T>::nonfinite_activation_site() const {
  LF_REQUIRE(kept_, "nonfinite_activation_site() needs a forward() with keep_for_backward = true");
  const size_t N_d = size_t(B_ * n_ * config_.d_model);
  if (!all_finite(hidden_, 0, N_d)) return "the embeddings";
  for (int64_t i = 0; i < config_.n_layers; ++i)
    if (!all_finite(hidden_, size_t(i + 1) * N_d, N_d)) return str_cat("layer ", i);
  if (final_norm_w_ >= 0 && !all_finite(final_, 0, final_.size())) return "the final LayerNorm";
  if (!all_finite(logits_, 0, logits_.size())) return "the output head";
  return "";
}

template <class T>
double Model<T>::forward_flops(int64_t n) const {
  const ModelConfig& c = config_;
  const double d = double(c.d_model), ff = double(c.d_ff);
  double flops = 0;
  for (const auto& blk : blocks_)
    flops += blk->attn->forward_flops(1, n, n) + 2.0 * n * d * ff * 2 + 2.0 * n * d * double(c.conv_kernel);
  const double head = c.output_head == "linear" ? 2.0 * n * d * double(c.vocab_size)
                      : c.task == Task::MaskedLM ? 2.0 * n * d * d + 2.0 * n * d * double(c.vocab_size)
                      : c.task == Task::CausalLM ? 2.0 * n * d * double(c.vocab_size)
                                                 : 2.0 * d * double(c.n_classes);
  return flops + head;
}

template <class T>
double Model<T>::activation_bytes(const ModelConfig& c, int64_t B, int64_t n) {
  // Per block: about 10 (B, n, d) tensors, 2 (B, n, d_ff), the attention's probabilities (B, h, n, m_eff)
  // where m_eff = n for score-matrix kinds and k for Linformer, plus its Q/K/V buffers (≈ 6 (B, n, d)).
  double bytes = 0;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const AttentionSpec s = c.attention_spec(i);
    int64_t m_eff = n;
    if (s.kind == "linformer") m_eff = std::min<int64_t>(s.options.value("k", std::min<int64_t>(256, c.max_len)), n);
    const double conv = c.conv_kernel > 0 ? 3.0 : 0.0;  // its input and output kept, its gradient
    bytes += double(B) * n * ((16.0 + conv) * c.d_model + 2.0 * c.d_ff + double(c.n_heads) * double(m_eff));
  }
  bytes += double(B) * n * (5.0 * c.d_model + 2.0 * double(c.vocab_size));  // embeddings, head, logits and their gradient
  return bytes * sizeof(float);
}

template class Model<float>;
template class Model<double>;

}  // namespace lf

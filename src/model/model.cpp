#include "linformer/model.h"

#include <algorithm>
#include <cmath>

#include "linformer/error.h"
#include "linformer/rng.h"
#include "linformer/tensor.h"
#include "model/head.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/norm_act.h"
#include "ops/sequence.h"

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
  Buffer<T> ln1, mean1, rstd1, r1, x1, mean2, rstd2, u, r2;
  // conv_kernel > 0: the convolution's input (the attention input with padded rows zeroed) and output
  // (what the attention sees).
  Buffer<T> conv_in, conv_out;
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
  if (!c.pre_ln && c.embedding_norm) {
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
  head_ = make_head<T>(HeadContext<T>{c, arena, tok_emb_});
}

template <class T>
Model<T>::~Model() = default;

template <class T>
int64_t Model<T>::logits_per_row() const {
  return head_->logits_per_row();
}

template <class T>
bool Model<T>::conv_causal() const {
  return head_->info().causal;
}

// The block's convolution before its attention: conv_in = attn_in with padded rows zeroed (nothing
// behind the padding reaches a real position), out = conv(conv_in). Both (B·n, d).
template <class T>
void Model<T>::conv_forward(const Block& b, const T* attn_in, T* conv_in, T* out) const {
  const int64_t N_d = B_ * n_ * config_.d_model;
  const int64_t d = config_.d_model;
  ops::copy<T>(vector_view(attn_in, N_d), vector_view(conv_in, N_d));
  ops::zero_masked_rows(padding_view(), matrix(conv_in, B_ * n_, d));
  ops::depthwise_conv1d_forward(TensorView<const T>(conv_in, {B_, n_, d}), arena_.value_view(b.conv_w),
                                arena_.value_view(b.conv_b), TensorView<T>(out, {B_, n_, d}), conv_causal());
}

// dattn_in (B·n, d) from dout, the gradient of the convolution's output; padded rows get none (the
// forward replaced them by zeros).
template <class T>
void Model<T>::conv_backward(Block& b, const T* dout, T* dattn_in) {
  const int64_t d = config_.d_model;
  ops::depthwise_conv1d_backward(b.conv_in.view({B_, n_, d}), arena_.value_view(b.conv_w),
                                 TensorView<const T>(dout, {B_, n_, d}), TensorView<T>(dattn_in, {B_, n_, d}),
                                 arena_.grad_view(b.conv_w), arena_.grad_view(b.conv_b), conv_causal());
  ops::zero_masked_rows(padding_view(), matrix(dattn_in, B_ * n_, d));
}

template <class T>
void Model<T>::set_training_step(int64_t step) {
  for (const auto& blk : blocks_) blk->attn->set_training_step(step);
}

// Inference (no dropout, nothing kept): two (B·n, d) buffers and the FFN's hidden activations for
// kInferenceFfnRows rows at a time, instead of the ten (B·n, d) and two (B·n, d_ff) buffers a training
// forward keeps.
template <class T>
template <class Attend>
void Model<T>::block_inference(Block& b, const T* x, T* y, int64_t N, Attend&& attend) {
  const ModelConfig& c = config_;
  const int64_t d = c.d_model, N_d = N * d, ff = c.d_ff;
  Buffer<T> a(N_d), s(c.pre_ln ? N_d : 0), stats(2 * N);
  T* mean = stats.data();
  T* rstd = mean + N;
  const T* attn_in = x;
  if (c.pre_ln) {
    ops::layernorm_forward(matrix<const T>(x, N, d), arena_.value_view(b.ln1_w), arena_.value_view(b.ln1_b), s.view({N, d}), vector_view(mean, N),
                           vector_view(rstd, N), c.ln_eps);
    attn_in = s.data();
  }
  attend(attn_in, a.data());
  ops::add<T>(vector_view(x, N_d), a.view({N_d}));  // a = x1 (pre-LN) or r1
  if (!c.pre_ln)
    ops::layernorm_forward(a.view({N, d}), arena_.value_view(b.ln1_w), arena_.value_view(b.ln1_b), a.view({N, d}), vector_view(mean, N),
                           vector_view(rstd, N), c.ln_eps);
  const T* ffn_in = a.data();
  if (c.pre_ln) {
    ops::layernorm_forward(a.view({N, d}), arena_.value_view(b.ln2_w), arena_.value_view(b.ln2_b), s.view({N, d}), vector_view(mean, N),
                           vector_view(rstd, N), c.ln_eps);
    ffn_in = s.data();
  }
  Buffer<T> hidden(std::min(N, kInferenceFfnRows) * ff);
  for (int64_t r0 = 0; r0 < N; r0 += kInferenceFfnRows) {
    const int64_t rows = std::min(kInferenceFfnRows, N - r0);
    ops::linear_forward(matrix<const T>(ffn_in + r0 * d, rows, d), arena_.value_view(b.fc1_w), arena_.value_view(b.fc1_b), hidden.view({rows, ff}));
    ops::gelu_forward<T>(hidden.view({rows * ff}), hidden.view({rows * ff}));
    ops::linear_forward(hidden.view({rows, ff}), arena_.value_view(b.fc2_w), arena_.value_view(b.fc2_b), matrix(y + r0 * d, rows, d));
  }
  ops::add<T>(a.view({N_d}), vector_view(y, N_d));
  if (!c.pre_ln) ops::layernorm_forward(matrix<const T>(y, N, d), arena_.value_view(b.ln2_w), arena_.value_view(b.ln2_b), matrix(y, N, d), vector_view(mean, N),
                           vector_view(rstd, N), c.ln_eps);
}


template <class T>
void Model<T>::block_forward_inference(Block& b, const T* x, T* y) {
  const int64_t N_d = B_ * n_ * config_.d_model;
  block_inference(b, x, y, B_ * n_, [&](const T* attn_in, T* out) {
    Buffer<T> conv_in, conv_out;
    if (config_.conv_kernel > 0) {
      conv_in.resize(N_d);
      conv_out.resize(N_d);
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
    b.attn->forward(in, out, /*training=*/false, 0);
  });
}

template <class T>
void Model<T>::block_forward(Block& b, const T* x, T* y, bool training, uint64_t seed, bool keep) {
  if (!keep && !training) {
    block_forward_inference(b, x, y);
    return;
  }
  const ModelConfig& c = config_;
  const int64_t N = B_ * n_, d = c.d_model, N_d = N * d, ff = c.d_ff;
  b.x1.resize(N_d);
  b.u.resize(N * ff);
  b.mean1.resize(N);
  b.rstd1.resize(N);
  b.mean2.resize(N);
  b.rstd2.resize(N);
  const double p_drop = training ? c.dropout_ffn : 0.0;
  const uint8_t* mask = padding_.empty() ? nullptr : padding_.data();
  Buffer<T> tmp(N_d);  // attention output, then FFN output: not kept

  // Attention sub-block.
  const T* attn_in = x;
  if (c.pre_ln) {
    b.ln1.resize(N_d);
    ops::layernorm_forward(matrix<const T>(x, N, d), arena_.value_view(b.ln1_w), arena_.value_view(b.ln1_b), b.ln1.view({N, d}), b.mean1.view({N}),
                           b.rstd1.view({N}), c.ln_eps);
    attn_in = b.ln1.data();
  }
  if (c.conv_kernel > 0) {
    b.conv_in.resize(N_d);
    b.conv_out.resize(N_d);
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
    b.r1.resize(N_d);
    r1 = b.r1.data();
  }
  ops::dropout_forward<T>(tmp.view({N_d}), vector_view(r1, N_d), p_drop, seed, dropout_stream(b.index, kAttentionOut));
  ops::add<T>(vector_view(x, N_d), vector_view(r1, N_d));
  if (!c.pre_ln)
    ops::layernorm_forward(matrix<const T>(r1, N, d), arena_.value_view(b.ln1_w), arena_.value_view(b.ln1_b), b.x1.view({N, d}), b.mean1.view({N}),
                           b.rstd1.view({N}), c.ln_eps);

  // FFN sub-block. GELU's output and LN2's output are recomputed in the backward (elementwise, cheap)
  // rather than kept.
  const T* ffn_in = b.x1.data();
  Buffer<T> ln2, g(N * ff);
  if (c.pre_ln) {
    ln2.resize(N_d);
    ops::layernorm_forward(b.x1.view({N, d}), arena_.value_view(b.ln2_w), arena_.value_view(b.ln2_b), ln2.view({N, d}), b.mean2.view({N}),
                           b.rstd2.view({N}), c.ln_eps);
    ffn_in = ln2.data();
  }
  ops::linear_forward(matrix<const T>(ffn_in, N, d), arena_.value_view(b.fc1_w), arena_.value_view(b.fc1_b), b.u.view({N, ff}));
  ops::gelu_forward<T>(b.u.view({N * ff}), g.view({N * ff}));
  ops::linear_forward(g.view({N, ff}), arena_.value_view(b.fc2_w), arena_.value_view(b.fc2_b), tmp.view({N, d}));
  // r2 = x1 + drop(fc2): pre-LN it is the block's output; post-LN y = LN2(r2) and r2 is kept.
  T* r2 = y;
  if (!c.pre_ln) {
    b.r2.resize(N_d);
    r2 = b.r2.data();
  }
  ops::dropout_forward<T>(tmp.view({N_d}), vector_view(r2, N_d), p_drop, seed, dropout_stream(b.index, kFfnOut));
  ops::add<T>(b.x1.view({N_d}), vector_view(r2, N_d));
  if (!c.pre_ln)
    ops::layernorm_forward(matrix<const T>(r2, N, d), arena_.value_view(b.ln2_w), arena_.value_view(b.ln2_b), matrix(y, N, d), b.mean2.view({N}),
                           b.rstd2.view({N}), c.ln_eps);
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
  Buffer<T> dr2(N_d), dx1(N_d), dv(N_d), dg(N * ff), dffn_in(N_d);

  // FFN sub-block: y = r2 (pre-LN) or LN2(r2) (post-LN), r2 = x1 + drop(v), v = fc2(gelu(fc1(ffn_in))).
  if (c.pre_ln)
    ops::copy<T>(vector_view(dy, N_d), dr2.view({N_d}));
  else
    ops::layernorm_backward(b.r2.view({N, d}), arena_.value_view(b.ln2_w), b.mean2.view({N}),
                            b.rstd2.view({N}), matrix<const T>(dy, N, d), dr2.view({N, d}),
                            arena_.grad_view(b.ln2_w), arena_.grad_view(b.ln2_b));
  ops::dropout_backward<T>(dr2.view({N_d}), dv.view({N_d}), p_drop, seed_, dropout_stream(b.index, kFfnOut));
  {
    Buffer<T> g(N * ff);  // recomputed: gelu(u)
    ops::gelu_forward<T>(b.u.view({N * ff}), g.view({N * ff}));
    ops::linear_backward<T>(g.view({N, ff}), arena_.value_view(b.fc2_w), dv.view({N, d}), dg.view({N, ff}),
                            arena_.grad_view(b.fc2_w), arena_.grad_view(b.fc2_b));
  }
  ops::gelu_backward<T>(b.u.view({N * ff}), dg.view({N * ff}), dg.view({N * ff}));
  Buffer<T> ln2;  // recomputed: LN2(x1) with the kept statistics (pre-LN)
  const T* ffn_in = b.x1.data();
  if (c.pre_ln) {
    ln2.resize(N_d);
    ops::layernorm_apply(b.x1.view({N, d}), arena_.value_view(b.ln2_w), arena_.value_view(b.ln2_b), b.mean2.view({N}),
                         b.rstd2.view({N}), ln2.view({N, d}));
    ffn_in = ln2.data();
  }
  ops::linear_backward<T>(matrix<const T>(ffn_in, N, d), arena_.value_view(b.fc1_w), dg.view({N, ff}), dffn_in.view({N, d}),
                            arena_.grad_view(b.fc1_w), arena_.grad_view(b.fc1_b));
  dx1 = dr2;  // the residual path
  if (c.pre_ln) {
    Buffer<T> dln(N_d);
    ops::layernorm_backward(b.x1.view({N, d}), arena_.value_view(b.ln2_w), b.mean2.view({N}),
                            b.rstd2.view({N}), dffn_in.view({N, d}), dln.view({N, d}),
                            arena_.grad_view(b.ln2_w), arena_.grad_view(b.ln2_b));
    ops::add<T>(dln.view({N_d}), dx1.view({N_d}));
  } else {
    ops::add<T>(dffn_in.view({N_d}), dx1.view({N_d}));
  }

  // Attention sub-block: x1 = r1 (pre-LN) or LN1(r1) (post-LN), r1 = x + drop(attn(in)).
  Buffer<T> dr1(N_d), dattn(N_d), din(N_d);
  if (c.pre_ln)
    dr1 = dx1;
  else
    ops::layernorm_backward(b.r1.view({N, d}), arena_.value_view(b.ln1_w), b.mean1.view({N}),
                            b.rstd1.view({N}), dx1.view({N, d}), dr1.view({N, d}),
                            arena_.grad_view(b.ln1_w), arena_.grad_view(b.ln1_b));
  ops::dropout_backward<T>(dr1.view({N_d}), dattn.view({N_d}), p_drop, seed_, dropout_stream(b.index, kAttentionOut));
  b.attn->backward(dattn.data(), din.data());
  if (c.conv_kernel > 0) {
    Buffer<T> dconv_out = din;
    conv_backward(b, dconv_out.data(), din.data());
  }
  if (c.pre_ln) {
    const T* x = hidden_.data() + b.index * N_d;
    ops::layernorm_backward(matrix<const T>(x, N, d), arena_.value_view(b.ln1_w), b.mean1.view({N}),
                            b.rstd1.view({N}), din.view({N, d}), matrix(dx, N, d),
                            arena_.grad_view(b.ln1_w), arena_.grad_view(b.ln1_b));
  } else {
    ops::copy<T>(din.view({N_d}), vector_view(dx, N_d));
  }
  ops::add<T>(dr1.view({N_d}), vector_view(dx, N_d));
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
  hidden_.resize((keep_for_backward ? c.n_layers + 1 : 2) * N_d);
  // Block i reads slot i and writes slot i + 1 (inference: two slots in turn).
  auto slot = [&](int64_t i) { return hidden_.data() + (keep_for_backward ? i : i % 2) * N_d; };
  emb_sum_.resize(N_d);
  embed(tokens_.data(), B, n, 0, emb_sum_.data());
  const T* emb = emb_sum_.data();
  Buffer<T> normed;
  if (emb_norm_w_ >= 0) {
    normed.resize(N_d);
    emb_norm_mean_.resize(N);
    emb_norm_rstd_.resize(N);
    ops::layernorm_forward(emb_sum_.view({N, d}), arena_.value_view(emb_norm_w_), arena_.value_view(emb_norm_b_), normed.view({N, d}), emb_norm_mean_.view({N}),
                           emb_norm_rstd_.view({N}), c.ln_eps);
    emb = normed.data();
  }
  ops::dropout_forward<T>(vector_view(emb, N_d), hidden_.view({N_d}), training ? c.dropout_embedding : 0.0, seed, dropout_stream(-1, kEmbedding));

  // With checkpointing the blocks run as in inference (their inputs stay in hidden_) and backward()
  // runs each again, keeping its activations, just before its backward.
  for (auto& blk : blocks_)
    block_forward(*blk, slot(blk->index), slot(blk->index + 1), training, seed, keep_for_backward && !checkpointing_);
  recompute_ = keep_for_backward && checkpointing_;

  const T* h = slot(c.n_layers);
  if (final_norm_w_ >= 0) {
    final_.resize(N_d);
    final_mean_.resize(N);
    final_rstd_.resize(N);
    ops::layernorm_forward(matrix<const T>(h, N, d), arena_.value_view(final_norm_w_), arena_.value_view(final_norm_b_), final_.view({N, d}), final_mean_.view({N}),
                           final_rstd_.view({N}), c.ln_eps);
    h = final_.data();
  }
  final_hidden_ = h;
  return head_->forward(h, padding, B, n, keep_for_backward);
}

template <class T>
void Model<T>::embed(const int32_t* tokens, int64_t B, int64_t n, int64_t offset, T* sum) const {
  const ModelConfig& c = config_;
  const int64_t N = B * n, d = c.d_model;
  ops::embedding_forward(vector_view<const int32_t>(tokens, N), arena_.value_view(tok_emb_), matrix(sum, N, d));
  if (c.position == "learned") {
    std::vector<int32_t> positions(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) positions[size_t(i)] = int32_t(offset + i % n);
    ops::embedding_forward(vector_view<const int32_t>(positions.data(), N), arena_.value_view(pos_emb_), matrix(sum, N, d), true);
  } else if (c.position == "sinusoidal") {
    ops::sinusoidal_positions_add(TensorView<T>(sum, {B, n, d}), offset);
  }
}

template <class T>
double ModelDecodeState<T>::attention_bytes() const {
  double bytes = 0;
  for (const auto& layer : layers_) bytes += layer->bytes();
  return bytes;
}

template <class T>
double ModelDecodeState<T>::bytes() const {
  double bytes = attention_bytes();
  for (const Buffer<T>& rows : conv_rows_) bytes += double(rows.size()) * sizeof(T);
  return bytes;
}

template <class T>
std::unique_ptr<ModelDecodeState<T>> Model<T>::begin_decode(int64_t B) const {
  const HeadInfo& head = head_->info();
  LF_REQUIRE(head.causal && head.targets == HeadTargets::kTokens,
             "incremental decoding needs a causal language model (task clm), but this model's task is '", config_.task,
             "'");
  LF_REQUIRE(B > 0, "decoding needs a positive batch, got B=", B);
  auto state = std::make_unique<ModelDecodeState<T>>();
  state->model_ = this;
  state->B_ = B;
  const int64_t history = std::max<int64_t>(config_.conv_kernel - 1, 0);
  for (const auto& blk : blocks_) {
    state->layers_.push_back(blk->attn->begin_decode(B, config_.d_model));
    if (config_.conv_kernel > 0) state->conv_rows_.emplace_back(B * history * config_.d_model);  // zeros
  }
  return state;
}

// The convolution runs over the (B, K − 1 + n_new, d) concatenation of the kept rows and the new ones
// and keeps its last n_new outputs: the same op and sums as the whole-sequence forward (the zeros kept
// before the first position add nothing), for K − 1 extra rows of work.
template <class T>
void Model<T>::conv_decode(const Block& b, Buffer<T>& rows, const T* x, int64_t B, int64_t n_new, T* out) const {
  const int64_t d = config_.d_model, H = config_.conv_kernel - 1, M = H + n_new;
  Buffer<T> cat(B * M * d), full(B * M * d);
  if (H > 0) ops::copy_strided<T>(matrices<const T>(rows.data(), B, H * d, H, d), matrices(cat.data(), B, M * d, H, d));
  ops::copy_strided<T>(matrices(x, B, n_new * d, n_new, d), matrices(cat.data() + H * d, B, M * d, n_new, d));
  ops::depthwise_conv1d_forward(cat.view({B, M, d}), arena_.value_view(b.conv_w), arena_.value_view(b.conv_b),
                                full.view({B, M, d}), /*causal=*/true);
  ops::copy_strided<T>(matrices<const T>(full.data() + H * d, B, M * d, n_new, d), matrices(out, B, n_new * d, n_new, d));
  if (H > 0)
    ops::copy_strided<T>(matrices<const T>(cat.data() + n_new * d, B, M * d, H, d), matrices(rows.data(), B, H * d, H, d));
}

template <class T>
const T* Model<T>::decode(ModelDecodeState<T>& state, const int32_t* tokens, int64_t n_new) {
  const ModelConfig& c = config_;
  LF_REQUIRE(state.model_ == this, "decode() was given a state begun by another model");
  LF_REQUIRE(n_new > 0, "decode() needs at least one new token, got ", n_new);
  LF_REQUIRE(state.length_ + n_new <= c.max_len, "decoding ", n_new, " more token", n_new == 1 ? "" : "s", " after ",
             state.length_, " would pass the model's max_len of ", c.max_len,
             " (positions are absolute: start a new state from the last tokens)");
  const int64_t B = state.B_, N = B * n_new, d = c.d_model, N_d = N * d;
  kept_ = recompute_ = false;  // the head's buffers are about to hold this step's logits
  final_hidden_ = nullptr;
  Buffer<T> x(N_d), y(N_d), stats(2 * N);
  embed(tokens, B, n_new, state.length_, x.data());  // refuses a bad id before any state moves
  if (emb_norm_w_ >= 0)
    ops::layernorm_forward(x.view({N, d}), arena_.value_view(emb_norm_w_), arena_.value_view(emb_norm_b_), x.view({N, d}),
                           stats.view({N}), vector_view(stats.data() + N, N), c.ln_eps);
  for (auto& blk : blocks_) {
    const size_t i = size_t(blk->index);
    block_inference(*blk, x.data(), y.data(), N, [&](const T* attn_in, T* out) {
      Buffer<T> conv_out;
      if (c.conv_kernel > 0) {
        conv_out.resize(N_d);
        conv_decode(*blk, state.conv_rows_[i], attn_in, B, n_new, conv_out.data());
        attn_in = conv_out.data();
      }
      blk->attn->decode(*state.layers_[i], attn_in, n_new, out);
    });
    std::swap(x, y);
  }
  if (final_norm_w_ >= 0)
    ops::layernorm_forward(x.view({N, d}), arena_.value_view(final_norm_w_), arena_.value_view(final_norm_b_), x.view({N, d}),
                           stats.view({N}), vector_view(stats.data() + N, N), c.ln_eps);
  state.length_ += n_new;
  return head_->forward(x.data(), nullptr, B, n_new, /*keep_for_backward=*/false);
}

template <class T>
void Model<T>::backward(const T* dlogits) {
  LF_REQUIRE(kept_, "model backward() needs a forward() with keep_for_backward = true");
  const ModelConfig& c = config_;
  const int64_t N = B_ * n_, d = c.d_model, N_d = N * d;
  Buffer<T> dh(N_d);  // zeros
  const T* h_top = final_norm_w_ >= 0 ? final_.data() : hidden_.data() + c.n_layers * N_d;

  head_->backward(h_top, dlogits, dh.data());

  if (final_norm_w_ >= 0) {
    Buffer<T> dfinal = dh;
    ops::layernorm_backward(matrix<const T>(hidden_.data() + c.n_layers * N_d, N, d), arena_.value_view(final_norm_w_), final_mean_.view({N}), final_rstd_.view({N}), dfinal.view({N, d}), dh.view({N, d}), arena_.grad_view(final_norm_w_), arena_.grad_view(final_norm_b_));
  }
  Buffer<T> dx(N_d);
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
  ops::dropout_backward<T>(dh.view({N_d}), dh.view({N_d}), training_ ? c.dropout_embedding : 0.0, seed_, dropout_stream(-1, kEmbedding));
  if (emb_norm_w_ >= 0) {
    Buffer<T> dsum(N_d);
    ops::layernorm_backward(emb_sum_.view({N, d}), arena_.value_view(emb_norm_w_), emb_norm_mean_.view({N}), emb_norm_rstd_.view({N}), dh.view({N, d}), dsum.view({N, d}), arena_.grad_view(emb_norm_w_), arena_.grad_view(emb_norm_b_));
    std::swap(dh, dsum);
  }
  ops::embedding_backward(vector_view<const int32_t>(tokens_.data(), N), dh.view({N, d}), arena_.grad_view(tok_emb_));
  if (c.position == "learned") ops::embedding_backward(vector_view<const int32_t>(positions_.data(), N), dh.view({N, d}), arena_.grad_view(pos_emb_));
}

template <class T>
std::string Model<T>::nonfinite_activation_site() const {
  LF_REQUIRE(kept_, "nonfinite_activation_site() needs a forward() with keep_for_backward = true");
  const int64_t N_d = B_ * n_ * config_.d_model;
  auto finite = [](const Buffer<T>& x, int64_t begin, int64_t count) {
    return ops::all_finite<T>(vector_view(x.data() + begin, count));
  };
  if (!finite(hidden_, 0, N_d)) return "the embeddings";
  for (int64_t i = 0; i < config_.n_layers; ++i)
    if (!finite(hidden_, (i + 1) * N_d, N_d)) return str_cat("layer ", i);
  if (final_norm_w_ >= 0 && !finite(final_, 0, final_.size())) return "the final LayerNorm";
  if (!finite(head_->logits(), 0, head_->logits().size())) return "the output head";
  return "";
}

template <class T>
double Model<T>::forward_flops(int64_t n) const {
  const ModelConfig& c = config_;
  const double d = double(c.d_model), ff = double(c.d_ff);
  double flops = 0;
  for (const auto& blk : blocks_)
    flops += blk->attn->forward_flops(1, n, n) + 2.0 * n * d * ff * 2 + 2.0 * n * d * double(c.conv_kernel);
  return flops + head_->forward_flops(n);
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

template class ModelDecodeState<float>;
template class ModelDecodeState<double>;
template class Model<float>;
template class Model<double>;

}  // namespace lf

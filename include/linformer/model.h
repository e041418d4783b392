// The encoder model: token embeddings plus positions (learned absolute, sinusoidal or none), a stack of
// blocks ([depthwise convolution →] attention of the layer's kind + GELU FFN, pre-LN by default or
// post-LN), and the head the config's `task` names (model/head.h: mlm, clm, classify, ...).
// final_norm = false drops the pre-LN stack's final LayerNorm.
// Parameter names follow PyTorch conventions (docs/model.md lists them). forward() keeps every
// activation the backward needs; backward() accumulates parameter gradients into the arena.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "linformer/arena.h"
#include "linformer/attention.h"
#include "linformer/config.h"
#include "linformer/tensor.h"

namespace lf {
template <class T>
class Head;  // model/head.h
}  // namespace lf

namespace lf {
// Rows of the FFN's (rows, d_ff) hidden activations computed at a time in inference (the memory
// estimate counts them too).
inline constexpr int64_t kInferenceFfnRows = 2048;
}  // namespace lf

namespace lf {

template <class T>
class Model;

// What a causal LM keeps between decoding steps of B sequences that advance together
// (Model::begin_decode / decode; docs/generation.md): each layer's attention state, the last
// conv_kernel − 1 rows of each layer's convolution input, and the positions consumed so far.
template <class T>
class ModelDecodeState {
 public:
  int64_t batch() const { return B_; }
  int64_t length() const { return length_; }  // positions each sequence has consumed
  // Bytes held now: every layer's attention state plus the convolution rows (the cache memory).
  double bytes() const;
  double attention_bytes() const;  // the layers' attention states alone

 private:
  friend class Model<T>;
  const Model<T>* model_ = nullptr;  // the model that began it: decode() refuses another's
  int64_t B_ = 0, length_ = 0;
  std::vector<std::unique_ptr<DecodeState<T>>> layers_;
  // Per layer, (B, conv_kernel − 1, d): the convolution input's last rows, zeros before the first
  // position (the convolution's own zero padding), so a new row's window is these rows + the new ones.
  std::vector<Buffer<T>> conv_rows_;
};

template <class T>
class Model {
 public:
  // Declares every parameter in the arena (call arena.allocate() and initialize() afterwards).
  Model(const ModelConfig& config, ParamArena<T>& arena);
  ~Model();

  // tokens (B, n) ids in [0, vocab); padding (B, n) nonzero = padding, or null. Returns the logits:
  // (B, n, vocab) for mlm/clm, (B, n_classes) for classify. Dropout (training only) is drawn from
  // the counter RNG keyed by seed. keep_for_backward = false is inference: each block's activations
  // are released as soon as the next block has its input, so memory is that of one block, and
  // backward() refuses to run. Throws lf::InvalidArgument for n > max_len or bad ids.
  const T* forward(const int32_t* tokens, const uint8_t* padding, int64_t B, int64_t n, bool training, uint64_t seed,
                   bool keep_for_backward = true);

  // Incremental decoding of a causal LM (a head with HeadInfo::causal, clm; refused otherwise):
  // begin_decode(B) starts B empty sequences; decode(state, tokens (B, n_new)) appends n_new tokens
  // to each and returns their logits (B, n_new, vocab), to rounding rows [length, length + n_new) of
  // an inference forward() over the whole prefix. Each block runs on the new rows only (its attention
  // through Attention::decode), so n_new > 1 (a prompt's prefill) runs in parallel and a single step
  // costs what the layers' decoding mechanisms cost. Refuses length + n_new > max_len (positions are
  // absolute: a caller that wants more context starts a new state). The logits are valid until the
  // next forward() or decode(); a decode() also ends what the last forward() kept for a backward().
  std::unique_ptr<ModelDecodeState<T>> begin_decode(int64_t B) const;
  const T* decode(ModelDecodeState<T>& state, const int32_t* tokens, int64_t n_new);

  // dlogits: the shape forward() returned. Accumulates (+=) into the arena's gradients. Activations
  // are released as the backward passes them (one backward per forward).
  void backward(const T* dlogits);

  // Activation checkpointing (off by default): a training forward keeps only each block's input and
  // backward() recomputes one block's activations at a time, bit for bit as the forward made them
  // (dropout masks are a function of the seed). Memory: one block's activations instead of all of
  // them; time: one more forward of the blocks.
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }

  // For analysis (`linformer spectrum`, src/analysis/): when set, every forward calls it with each
  // layer's attention input just before that attention runs, x (B, n, d): LN1(block input) pre-LN,
  // the block input itself post-LN (with activation checkpointing, again in backward()). Unset (the
  // default) costs nothing; set an empty function to stop.
  using AttentionInputObserver = std::function<void(int64_t layer, const T* x, int64_t B, int64_t n)>;
  void set_attention_input_observer(AttentionInputObserver f) { attention_observer_ = std::move(f); }

  // Tells every layer's attention which training step comes next (Attention::set_training_step):
  // the trainer calls it before each step's forward, resumed runs included.
  void set_training_step(int64_t step);

  // After a forward that kept its activations: where the first NaN or Inf appears going up the network,
  // as "the embeddings", "layer i" (the block's output), "the final LayerNorm" or "the output head";
  // "" when every activation is finite. For the trainer's divergence message; costs one pass over them.
  std::string nonfinite_activation_site() const;

  int64_t logits_per_row() const;  // vocab (LM heads) or n_classes (classify)
  const Head<T>& head() const { return *head_; }
  // The head's input in the last forward: the final hidden states (B, n, d), after the final
  // LayerNorm when there is one. Valid until the next forward; for embeddings (linformer/inference.h).
  const T* final_hidden() const { return final_hidden_; }
  const ModelConfig& config() const { return config_; }

  // Forward FLOPs of one sequence of n tokens (matrix products; ×3 for a training step).
  double forward_flops(int64_t n) const;
  // Estimated bytes of activations forward() keeps for B sequences of n tokens (float).
  static double activation_bytes(const ModelConfig& config, int64_t B, int64_t n);

 private:
  struct Block;
  void block_forward(Block& blk, const T* x, T* y, bool training, uint64_t seed, bool keep);
  void block_forward_inference(Block& blk, const T* x, T* y);
  // The inference block on N rows x -> y, its attention (convolution included) done by
  // attend(attention input, out): a whole-sequence forward, or a decoding step.
  template <class Attend>
  void block_inference(Block& blk, const T* x, T* y, int64_t N, Attend&& attend);
  // The embeddings of B × n tokens at positions offset.. (learned or sinusoidal), before the post-LN
  // LayerNorm and dropout: sum (B·n, d) overwritten.
  void embed(const int32_t* tokens, int64_t B, int64_t n, int64_t offset, T* sum) const;
  // The causal convolution of B × n_new new rows x given `rows` (B, conv_kernel − 1, d), the input's
  // previous rows: out (B, n_new, d), and rows advanced to end at the new ones.
  void conv_decode(const Block& blk, Buffer<T>& rows, const T* x, int64_t B, int64_t n_new, T* out) const;
  void block_backward(Block& blk, const T* dy, T* dx);
  static void release_block_activations(Block& blk);
  bool conv_causal() const;
  void conv_forward(const Block& blk, const T* attn_in, T* conv_in, T* out) const;
  void conv_backward(Block& blk, const T* dout, T* dattn_in);

  ModelConfig config_;
  ParamArena<T>& arena_;
  int tok_emb_ = -1, pos_emb_ = -1, emb_norm_w_ = -1, emb_norm_b_ = -1, final_norm_w_ = -1, final_norm_b_ = -1;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::unique_ptr<Head<T>> head_;
  AttentionInputObserver attention_observer_;

  // Kept from the last forward.
  int64_t B_ = 0, n_ = 0;
  bool training_ = false, kept_ = false, checkpointing_ = false, recompute_ = false;
  uint64_t seed_ = 0;
  // Host-side copies of the call's input (token ids, padding mask) and the positions made from them.
  std::vector<int32_t> tokens_, positions_;
  std::vector<uint8_t> padding_;
  // padding_ as a (B·n) view, empty without padding.
  TensorView<const uint8_t> padding_view() const {
    return padding_.empty() ? TensorView<const uint8_t>() : vector_view(padding_.data(), int64_t(padding_.size()));
  }
  Buffer<T> emb_sum_, emb_norm_mean_, emb_norm_rstd_;  // post-LN: embeddings before their LayerNorm
  Buffer<T> hidden_;  // (L + 1) × (B, n, d): block inputs and output (inference: 2, in turn)
  Buffer<T> final_, final_mean_, final_rstd_;          // after the final LayerNorm (pre-LN)
  const T* final_hidden_ = nullptr;                     // into hidden_ or final_
};

}  // namespace lf

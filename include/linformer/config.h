// A model's configuration: the encoder stack (width, depth, heads, FFN width, maximum length,
// pre- or post-LN, dropout rates), the attention kind of every layer with its options, and the head
// (`task`, a name in the head registry, model/head.h). It is what `config.json` beside a checkpoint holds, and it validates itself so that a bad
// file or flag is refused before anything is allocated.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/attention.h"
#include "linformer/tokens.h"

namespace lf {

struct LayerAttention {
  std::string kind = "linformer";
  json options = json::object();
};

// Upper bounds validate() enforces (far beyond what fits in memory; they keep size arithmetic in int64).
inline constexpr int64_t kMaxVocabSize = int64_t(1) << 24;  // also bounds n_classes
inline constexpr int64_t kMaxWidth = int64_t(1) << 16;      // d_model, d_ff
inline constexpr int64_t kMaxLen = int64_t(1) << 20;        // max_len
inline constexpr int64_t kMaxLayers = 1024;                 // n_layers
inline constexpr int64_t kMaxConvKernel = 4096;             // conv_kernel

struct ModelConfig {
  std::string task = "mlm";  // the head: a name in HeadRegistry (mlm, clm, classify, ...)
  int64_t vocab_size = kVocabSize;  // the byte tokenizer: 256 bytes + PAD, MASK, BOS, EOS
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t d_ff = 512;
  int64_t max_len = 512;
  bool pre_ln = true;  // false: post-LN (the original Transformer / BERT)
  double dropout_embedding = 0.1;
  double dropout_attention = 0.1;  // on attention probabilities (the kind's equivalent)
  double dropout_ffn = 0.1;        // after the FFN and after the attention output projection
  double ln_eps = 1e-5;
  // Position information: "learned" absolute embeddings (max_len × d, BERT/RoBERTa), fixed
  // "sinusoidal" ones (Vaswani et al. 2017; no parameters, sin/cos interleaved), or "none".
  std::string position = "learned";
  // > 0: a depthwise convolution of this many taps along the sequence on every block's attention input
  // (centred, odd sizes; causal for clm), so each position sees its neighbours whatever the attention
  // kind. It acts before Linformer's compression along the sequence, so it is valid under it.
  int64_t conv_kernel = 0;
  // Multiply the LM head's input by d^{-1/2} before the tied token embedding (as T5 does): with N(0, 1)
  // embeddings the first logits then have unit scale instead of √d (a first MLM loss near ln V).
  bool scale_tied_output = false;
  // false: no LayerNorm after the last block of a pre-LN model (lucidrains' LinformerLM has none).
  // Pre-LN only: a post-LN model has no final LayerNorm to drop.
  bool final_norm = true;
  // false: no LayerNorm on the embedding sum of a post-LN model (tatp22's LinformerLM has none; BERT
  // and RoBERTa have one). Post-LN only: a pre-LN model has no embedding LayerNorm to drop.
  bool embedding_norm = true;
  // The LM heads' output layer: "default" is the task's head (docs/model.md; the output matrix is the
  // token embedding); "linear" maps the last hidden states straight to the logits through an untied
  // `lm_head.weight` (V, d) and `lm_head.bias` (V), as LinformerLM's to_logits. Heads whose HeadInfo
  // has linear_output_head only (mlm, clm).
  std::string output_head = "default";
  // One entry per layer. A config file may give a single entry ("attention": {...}) that every layer
  // uses; from_json expands it.
  std::vector<LayerAttention> attention = {LayerAttention{}};
  // Heads that predict classes (HeadTargets::kClasses: classify).
  int64_t n_classes = 0;
  std::string pooling = "mean";  // mean (over unpadded positions) | first
  // The label map: class k is the data's label class_names[k] (the TSV's labels, sorted). Empty in
  // checkpoints written before it existed: class k is then the label "k" (class_name()).
  std::vector<std::string> class_names;

  // Throws lf::InvalidArgument naming the field for anything out of range, including an unknown head,
  // each layer's attention spec (validated by its kind) and a causal head over a kind without causal
  // support.
  void validate() const;
  json to_json() const;
  // Parses and validates; unknown keys are refused. Missing keys take the defaults above.
  static ModelConfig from_json(const json& j);

  // The name of class k: class_names[k], or "k" without a label map.
  std::string class_name(int64_t k) const;
  // Every class's name (n_classes of them): class_names, or the identity map "0", "1", ...
  std::vector<std::string> class_map() const;

  // The spec of layer i's attention, with the shared dimensions filled in.
  AttentionSpec attention_spec(int64_t layer) const;
};

}  // namespace lf

// Resizing and converting a trained model (`linformer convert`, docs/convert.md): a new max_len
// (position table, Linformer's E/F columns, AFT position biases), a new Linformer k, a new E/F
// sharing mode, and exact attention (full, flash) turned into Linformer. Every parameter that the
// conversion does not touch is copied bit for bit; what each rule preserves exactly is listed in
// docs/convert.md and tested in tests/train/test_convert.cpp.
//
// Two levels: convert_config + convert_weights work on configurations and arenas (the rules), and
// convert_checkpoint reads a checkpoint and writes a new run directory that `train --resume` can
// fine-tune (step 0, zero AdamW moments, the source's training options with the given overrides).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "linformer/arena.h"
#include "linformer/config.h"
#include "linformer/runtime.h"

namespace lf {

struct ConvertOptions {
  int64_t max_len = 0;     // the new max_len; 0 keeps it
  int64_t k = 0;           // the new Linformer k of every linformer layer; 0 keeps each layer's
  std::string sharing;     // the new E/F sharing of every linformer layer (none|headwise|kv|layerwise); "" keeps it
  std::string attention;   // the kind of every layer after conversion; "" keeps each layer's kind
  json attention_options = json::object();  // merged over each layer's options (after --k / --sharing: these win)
  // Rows and columns that a longer max_len adds to the position table and to learned E/F: "tile"
  // (row t copies row t mod old_max_len) or "init" (the parameter's own fresh initialisation).
  std::string extend = "tile";
  // E/F of an exact-attention layer turned into Linformer: "pool" (mean pooling over k windows of
  // max_len; the identity when k = max_len) or "init" (the kind's own initialisation).
  std::string init_projection = "pool";

  void validate() const;  // lf::InvalidArgument naming the flag
};

// What convert_weights did to each parameter that was not copied as it was, one line each, e.g.
// "layers.0.attn.proj_k: mean of 2 source matrices (not exact)".
struct ConvertReport {
  std::vector<std::string> notes;
};

// The configuration after conversion, validated. lf::InvalidArgument for an impossible conversion:
// an unknown kind, a kind change other than full/flash → full/flash/linformer, k > max_len, a
// changed Linformer option that the weights cannot follow (projection, one_kv_head,
// share_kv_linear, qkv_bias true → false, delta of fixed projections), --k or --sharing on a layer
// that is not linformer.
ModelConfig convert_config(const ModelConfig& source, const ConvertOptions& options);

// Fills `target` (allocated and initialised: what the rules leave to a fresh initialisation keeps it; declared by Model<float>(target_config))
// from `source` (declared by Model<float>(source_config), loaded) by the rules of docs/convert.md.
// lf::InvalidArgument when a parameter has no rule (a kind whose max_len-shaped parameters cannot be
// resized, named in the message), nothing being written then to any other checkpoint.
ConvertReport convert_weights(const ModelConfig& source_config, const ParamArena<float>& source,
                              const ModelConfig& target_config, ParamArena<float>& target,
                              const ConvertOptions& options);

struct ConvertResult {
  std::string source_dir;  // the checkpoint read (a run directory's latest)
  std::string checkpoint;  // the checkpoint written, <out_run>/checkpoints/step-00000000
  ModelConfig config;      // the converted model's configuration
  json train_options;      // the training options saved for `train --resume`
  ConvertReport report;
};

// Reads the checkpoint `source` (a checkpoint directory, or a run directory: its latest), converts
// it and writes the run `out_run` with one checkpoint at step 0: config.json, model.safetensors,
// optimizer.safetensors with zero AdamW moments (a fresh optimizer) and trainer_state.json whose
// options are the source's training options (a model-only checkpoint: the defaults) with
// `train_overrides` (TrainOptions keys) applied; unless overridden, seq_len becomes the new max_len
// when max_len changed (else the source's, at most max_len) and steps the warm-up length (at least 1;
// `train --resume --steps S` raises it). What the rules leave to a fresh initialisation is drawn from
// the converted run's seed, as `train` would draw it for a new model of the converted configuration. lf::IoError for a missing or corrupt checkpoint or an
// unwritable output; lf::InvalidArgument for an impossible conversion or an --out that already
// holds a run; lf::Error when both models exceed the memory limit of `runtime`, whose threads it runs with.
ConvertResult convert_checkpoint(const std::string& source, const std::string& out_run, const ConvertOptions& options,
                                 const json& train_overrides, const RuntimeOptions& runtime = {});

}  // namespace lf

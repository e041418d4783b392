// The smallest valid model configuration, shared by the checkpoint tests and the fuzz targets, the
// small byte models of the inference and CLI tests, and the training options of the tests' short runs.
// tiny_model_config(): vocab 16, d_model 8, 1 layer, 2 heads, d_ff 16, max_len 16, Linformer k = 4.
#pragma once
#include <filesystem>
#include <string>

#include "linformer/checkpoint.h"
#include "linformer/config.h"
#include "linformer/model.h"
#include "linformer/tokens.h"
#include "linformer/trainer.h"

namespace lf::test {

inline ModelConfig tiny_model_config() {
  ModelConfig c;
  c.vocab_size = 16;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.d_ff = 16;
  c.max_len = 16;
  c.attention = {LayerAttention{"linformer", json{{"k", 4}}}};
  return c;
}

// A byte-vocabulary model of d 16 for a `task` head and an attention `kind` (linformer: k = 8;
// classify: 3 classes), for the inference and CLI tests.
inline ModelConfig small_byte_model_config(const std::string& task, const std::string& kind, int64_t n_layers,
                                           int64_t max_len) {
  ModelConfig c;
  c.task = task;
  c.vocab_size = kVocabSize;
  c.d_model = 16;
  c.n_layers = n_layers;
  c.n_heads = 2;
  c.d_ff = 32;
  c.max_len = max_len;
  c.attention = {kind == "linformer" ? LayerAttention{kind, json{{"k", 8}}} : LayerAttention{kind, json::object()}};
  if (task == "classify") c.n_classes = 3;
  return c;
}

// A checkpoint of `c` with random weights (seed), untrained: what the inference tests read.
inline void save_random_checkpoint(const std::string& dir, const ModelConfig& c, uint64_t seed) {
  ParamArena<float> arena;
  Model<float> model(c, arena);
  arena.allocate(false);
  arena.initialize(seed);
  save_checkpoint(dir, c, arena, nullptr, json::object());
}

// Training options of the short runs in tests: data `dir`/corpus.txt, run directory `dir`/`run`,
// 4 × 16 tokens, no evaluation or checkpoint before the end, 5 % valid and 5 % test. Callers set the
// steps and whatever else their test is about.
inline TrainOptions tiny_train_options(const std::filesystem::path& dir, const std::string& run) {
  TrainOptions o;
  o.data_path = (dir / "corpus.txt").string();
  o.run_dir = (dir / run).string();
  o.batch_size = 4;
  o.seq_len = 16;
  o.eval_every = 0;
  o.save_every = 0;
  o.log_every = 10;
  o.valid_fraction = 0.05;
  o.test_fraction = 0.05;
  return o;
}

}  // namespace lf::test

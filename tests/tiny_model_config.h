// The smallest valid model configuration, shared by the checkpoint tests and the fuzz targets,
// and the training options of the tests' short runs.
// Model: // vocab 16, d_model 8, 1 layer, 2 heads, d_ff 16, max_len 16, Linformer k = 4.
#pragma once
#include <filesystem>
#include <string>

#include "linformer/config.h"
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

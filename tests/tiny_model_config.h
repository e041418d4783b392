// The smallest valid model configuration, shared by the checkpoint tests and the fuzz targets:
// vocab 16, d_model 8, 1 layer, 2 heads, d_ff 16, max_len 16, Linformer k = 4.
#pragma once
#include "model/config.h"

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

}  // namespace lf::test

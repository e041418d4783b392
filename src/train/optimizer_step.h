// The parts of Trainer::step that its tests also call on their own: AdamW over a whole parameter
// arena, and where a non-finite gradient entered the backward.
#pragma once
#include <cstdint>
#include <string>

#include "core/adamw_options.h"
#include "linformer/arena.h"

namespace lf {

// One AdamW step t (1-based) of the trainer over every parameter of the arena with the moments m, v
// (each arena.numel(), zero before step 1): fixed (non-trainable) tensors are skipped, and weight
// decay applies only to tensors of two or more dimensions (weight matrices, embeddings, projections),
// not to biases and LayerNorm parameters. options.weight_decay is that decay.
template <class T>
void adamw_step_params(ParamArena<T>& arena, T* m, T* v, int64_t t, const AdamWOptions& options);

// Where a NaN or Inf among the arena's gradients entered the backward: the first of the output head,
// layer L-1 … layer 0, the embeddings that holds one, with the first such parameter, e.g.
// "layer 2 (parameter 'layers.2.ffn.fc1.weight')"; "" when every gradient is finite.
std::string nonfinite_gradient_site(const ParamArena<float>& arena);

}  // namespace lf

// Views for the kinds written on ops (src/ops/): a parameter of the arena in its declared shape, a
// call's key padding mask, and the (B·n, width) rows of an activation, so that a kind hands ops its
// tensors without spelling out shapes at every call.
#pragma once
#include <cstdint>

#include "attention/attention.h"
#include "core/tensor.h"

namespace lf {

// Parameter `id` (values or gradients) as a view: a vector for rank 1, else (first dimension, the
// rest); empty for an optional parameter that was not declared (id < 0).
template <class T, class Arena>
TensorView<T> param_view(Arena& arena, int id, bool grad = false) {
  if (id < 0) return {};
  const std::vector<int64_t>& shape = arena.info(id).shape;
  T* data = grad ? arena.grad(id) : arena.value(id);
  if (shape.size() == 1) return vector_view(data, shape[0]);
  return matrix(data, shape[0], shape_numel(shape) / shape[0]);
}

// The call's key padding mask (B, m), or an empty view.
template <class T>
TensorView<const uint8_t> key_mask_view(const AttentionInput<T>& in) {
  if (!in.key_padding_mask) return {};
  return vector_view(in.key_padding_mask, in.B * in.kv_len());
}

// The B·n rows of width `width` of a (B, n, width) activation.
template <class P, class T>
TensorView<P> rows_view(const AttentionInput<T>& in, P* data, int64_t width) {
  return matrix(data, in.B * in.n, width);
}

}  // namespace lf

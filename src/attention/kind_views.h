// Views for the kinds written on ops (src/ops/): a call's key padding mask and the (B·n, width) rows
// of an activation, so that a kind hands ops its tensors without spelling out shapes at every call
// (parameters: ParamArena::value_view / grad_view).
#pragma once
#include <cstdint>

#include "linformer/attention.h"
#include "linformer/tensor.h"

namespace lf {

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

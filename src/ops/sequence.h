// Ops along the sequence and over the vocabulary: embedding lookup, sinusoidal positions, depthwise
// convolution along the sequence, pooling of a sequence to one vector, and cross-entropy of logits
// against token ids.
#pragma once
#include <cstdint>

#include "linformer/tokens.h"
#include "ops/view_args.h"

namespace lf::ops {

// out (N, d) = table (V, d)[ids (N)] (+= with accumulate); dtable (V, d) += dout scattered by ids.
// Throws lf::InvalidArgument for an id outside [0, V) before writing anything.
template <class T>
void embedding_forward(TensorView<const int32_t> ids, In<T> table, TensorView<T> out, bool accumulate = false);
template <class T>
void embedding_backward(TensorView<const int32_t> ids, In<T> dout, TensorView<T> dtable);
// out (B, n, d) += the fixed sinusoidal positions PE rows [offset, offset + n).
template <class T>
void sinusoidal_positions_add(TensorView<T> out, int64_t offset = 0);

// Depthwise convolution along n of x (B, n, d) with w (d, K) or (d, 1, K) and bias (d) (or {}): y (B, n, d). Causal:
// position t sees t−K+1..t; otherwise the window is centred. Backward: dx overwritten, dw/dbias +=.
template <class T>
void depthwise_conv1d_forward(In<T> x, In<T> w, In<T> bias, TensorView<T> y, bool causal);
template <class T>
void depthwise_conv1d_backward(In<T> x, In<T> w, In<T> dy, TensorView<T> dx, Out<T> dw, Out<T> dbias, bool causal);

// How a sequence is pooled to one vector: the mean over its unpadded positions, or its first position.
enum class SequencePooling : uint8_t { kMean, kFirst };
// pooled (B, d) from h (B, n, d), each sequence pooled over the positions padding (B·n, nonzero =
// padding; `{}`: none) does not mark: their mean (summed in order of position, then divided by their
// count), or row 0 (kFirst). Backward: dh (B, n, d) overwritten, the gradient dpooled (B, d) spread
// back over the pooled rows (dpooled / count, or row 0), zeros elsewhere.
template <class T>
void sequence_pool_forward(In<T> h, TensorView<const uint8_t> padding, SequencePooling pooling, TensorView<T> pooled);
template <class T>
void sequence_pool_backward(In<T> dpooled, TensorView<const uint8_t> padding, SequencePooling pooling,
                            TensorView<T> dh);

// Mean cross-entropy of logits (N, V) against targets (N); rows whose target is ignore_index don't count.
template <class T>
CrossEntropyResult cross_entropy_forward(In<T> logits, TensorView<const int32_t> targets, int32_t ignore_index = kIgnoreIndex);
// dlogits (N, V) = grad · (softmax − onehot) / count, zero on ignored rows.
template <class T>
void cross_entropy_backward(In<T> logits, TensorView<const int32_t> targets, TensorView<T> dlogits, double grad = 1.0,
                            int32_t ignore_index = kIgnoreIndex);

}  // namespace lf::ops

// The ops of `synthesizer` (src/attention/synthesizer.cpp) on one (sample, head)'s scores: n × n,
// row t seeing the keys j < end_t (end_t = t + 1 when causal, else n) that key_mask (n, nonzero =
// padding; `{}` for none) does not hide.
//   softmax:             P = softmax(S + bias + masks) row by row, 0 past end_t; a row with every
//                        key masked is 0
//   factorised softmax:  the same with S[t, j] = a[t, j / b] · b[t, j mod b] (a (n, a), b (n, b), a·b ≥ n)
// Every value is the same for any thread count and, for a causal row, for any n.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// probs (n, n) contiguous from scores (n, n; rows any stride apart, or probs itself) and bias (n, or {}).
template <class T>
void synthesizer_softmax(In<T> scores, In<T> bias, TensorView<const uint8_t> key_mask, bool causal,
                         TensorView<T> probs);
// probs (n, n) contiguous from the factors a (n, a) and b (n, b) (rows any stride apart).
template <class T>
void synthesizer_factorized_softmax(In<T> a, In<T> b, TensorView<const uint8_t> key_mask, bool causal,
                                    TensorView<T> probs);

// grad (n, n): ∂loss/∂probs on entry, ∂loss/∂scores on return (0 past end_t), from probs.
template <class T>
void synthesizer_softmax_backward(In<T> probs, bool causal, TensorView<T> grad);

// From dscores (n, n) of the factorised scores: da and db (overwritten) with the shapes and row
// strides of a and b.
template <class T>
void synthesizer_factors_backward(In<T> dscores, In<T> a, In<T> b, bool causal, TensorView<T> da, TensorView<T> db);

}  // namespace lf::ops

// The bias terms of Linformer's compressed keys and values. Compress-first computes
// K̂ = (E c) W_kᵀ + (E 1_real) b_kᵀ: the row sums of E over the real (unpadded) positions weight the
// bias (window poolings: ops::window_weight_sums), and the bias enters each slot with its row's weight.
// conv_full's convolution has a bias per output channel that a slot with no real position does not
// get. (conv_full's weight rearrangement is ops::copy_strided.)
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// sums (k) = Σ_t E[j, t] over the columns t of E (k, m) that padded (m, nonzero = padding; `{}`: none)
// does not mark, each row summed in order of t. Backward: dE (k, m) += dsums[j] at those columns.
template <class T>
void masked_row_sums(In<T> E, TensorView<const uint8_t> padded, TensorView<T> sums);
template <class T>
void masked_row_sums_backward(In<T> dsums, TensorView<const uint8_t> padded, TensorView<T> dE);

// C (k, width) += r bᵀ, i.e. C[j][c] += r[j]·b[c]: the bias b (width) with the weight r[j] (k) in row j.
template <class T>
void add_row_weighted_bias(In<T> r, In<T> b, TensorView<T> C);
// From dC (k, width): db (width) += Σ_j r[j]·dC[j] (j in order) and dr (k) = dC b (`{}`: not wanted).
template <class T>
void add_row_weighted_bias_backward(In<T> dC, In<T> r, In<T> b, TensorView<T> db, Out<T> dr);

// dst (k, width) row j = bias (width), or zeros where empty[j] (k) is nonzero. Backward: dbias (width)
// += the rows of ddst (k, width) whose slot is not empty, in order of j.
template <class T>
void slot_bias(In<T> bias, TensorView<const uint8_t> empty, TensorView<T> dst);
template <class T>
void slot_bias_backward(In<T> ddst, TensorView<const uint8_t> empty, TensorView<T> dbias);

}  // namespace lf::ops

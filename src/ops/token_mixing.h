// The ops around the token mixing of `mixer` (whose products are ops::matmul): the packed layout in
// which each channel group's mixing over positions is one product for every sample at once, the bias
// rows and their gradient sums, and the lower triangles of the causal mixing's diagonal blocks.
// G groups of d_h = d/G channels; N = B·d_h columns of a group's packed matrix; n_p ≥ n packed rows.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// xp (G, n_p, B·d_h) from x (B, n, d): xp[g][t][b·d_h + c] = x[b][t][g·d_h + c]; zero at the rows where
// mask (B, n) is nonzero (a select: NaN in the padding does not pass; `{}`: no mask) and at t ≥ n.
template <class T>
void token_mixing_pack(In<T> x, TensorView<const uint8_t> mask, TensorView<T> xp);

// The inverse: x (B, n, d) from the first n rows of xp (G, n_p, B·d_h).
template <class T>
void token_mixing_unpack(In<T> xp, TensorView<T> x);

// y (G, rows, N) with y[g][r][·] = values[g][r]: values (G, rows) with unit column stride, e.g. the
// first `rows` columns of a (G, L) bias.
template <class T>
void broadcast_rows(In<T> values, TensorView<T> y);

// sums (G, rows) += Σ_j x[g][r][j] for x (G, rows, N), each row summed in order; sums as values above.
template <class T>
void add_row_sums(In<T> x, TensorView<T> sums);

// y (bs, bs), contiguous, = the lower triangle (c ≤ r) of a (bs, bs), zeros above.
template <class T>
void lower_triangle(In<T> a, TensorView<T> y);

// y (bs, bs) += the lower triangle of a (bs, bs, contiguous).
template <class T>
void add_lower_triangle(In<T> a, TensorView<T> y);

}  // namespace lf::ops

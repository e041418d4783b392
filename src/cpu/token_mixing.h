// The kernels around the token mixing of `mixer` (the mixing itself is GEMMs): the layout that makes
// each channel group's mixing one GEMM over every sample, the bias rows and their gradient sums, and
// the lower-triangle copies of the causal (block lower-triangular) mixing. G groups of d_h = d/G
// channels; N = B·d_h columns of a group's packed matrix; n_p ≥ n packed rows.
#pragma once
#include <cstdint>

namespace lf {

// dst (G, n_p, B·d_h) from src (B, n, d): dst[g][t][b·d_h + c] = src[b][t][g·d_h + c], zero at the rows
// where mask (B, n) is nonzero (a select: NaN in the padding does not pass) and at the rows t ≥ n.
template <class T>
void token_mixing_pack(const T* src, const uint8_t* mask, int64_t B, int64_t n, int64_t d, int64_t G, int64_t np,
                       T* dst);

// The inverse of the pack: dst (B, n, d) from the first n rows of src (G, n_p, B·d_h).
template <class T>
void token_mixing_unpack(const T* src, int64_t B, int64_t n, int64_t d, int64_t G, int64_t np, T* dst);

// dst (G, rows, N): row r of group g filled with values[g·ld + r] (values (G, ld), its first `rows` used).
template <class T>
void broadcast_rows(const T* values, int64_t ld, int64_t G, int64_t rows, int64_t N, T* dst);

// sums[g·ld + r] += Σ_j src[g][r][j] for src (G, rows, N): each row summed in order (deterministic).
template <class T>
void add_row_sums(const T* src, int64_t G, int64_t rows, int64_t N, T* sums, int64_t ld);

// dst (bs × bs, dense) = the lower triangle (c ≤ r) of src (row stride ld), zeros above.
template <class T>
void lower_triangle(const T* src, int64_t ld, int64_t bs, T* dst);

// dst (row stride ld) += the lower triangle of src (bs × bs, dense).
template <class T>
void add_lower_triangle(const T* src, int64_t bs, T* dst, int64_t ld);

}  // namespace lf

// The bias terms of Linformer's compressed keys and values (the ops of ops/linformer_bias.h): the row
// sums of a learned or fixed E over the real positions and the bias they weight (compress-first), and
// conv_full's bias per slot. Each reduction or update has a fast path (vectorised, threaded over rows or
// columns above a size threshold, never inside a parallel region) and its plain `_ref` loop; the fast
// path's results are the same for any thread count (every sum runs on one thread in a fixed order).
// The updates (+=) match their reference bit for bit; the sums differ only by their order (lanes).
#pragma once
#include <cstdint>

namespace lf {

// sums[j] = Σ_t E[j, t] (E (k, m), rows lde apart) over the columns with padded[t] == 0 (padded null:
// all); the fast path adds in interleaved lanes, the reference in order of t. A padded column is
// skipped, not multiplied by zero (NaN or Inf there does not leak). Backward: dE[j, t] += dsums[j] at
// those columns.
template <class T>
void masked_row_sums(const T* E, int64_t lde, int64_t k, int64_t m, const uint8_t* padded, T* sums);
template <class T>
void masked_row_sums_ref(const T* E, int64_t lde, int64_t k, int64_t m, const uint8_t* padded, T* sums);
template <class T>
void masked_row_sums_backward(const T* dsums, int64_t k, int64_t m, const uint8_t* padded, T* dE, int64_t lde);
template <class T>
void masked_row_sums_backward_ref(const T* dsums, int64_t k, int64_t m, const uint8_t* padded, T* dE, int64_t lde);

// C[j][c] += r[j]·b[c] (C (k, width), rows ldc apart). Backward from dC: db[c] += dC[j][c]·r[j] (j in
// order) and, when dr is not null, dr[j] = Σ_c dC[j][c]·b[c] (the reference: c in order; the fast
// path: in lanes).
template <class T>
void add_row_weighted_bias(const T* r, const T* b, int64_t k, int64_t width, T* C, int64_t ldc);
template <class T>
void add_row_weighted_bias_ref(const T* r, const T* b, int64_t k, int64_t width, T* C, int64_t ldc);
template <class T>
void add_row_weighted_bias_backward(const T* dC, int64_t ldc, const T* r, const T* b, int64_t k, int64_t width, T* db,
                                    T* dr);
template <class T>
void add_row_weighted_bias_backward_ref(const T* dC, int64_t ldc, const T* r, const T* b, int64_t k, int64_t width,
                                        T* db, T* dr);

// dst row j (k rows of width, ldd apart) = bias, or zeros where empty[j] is nonzero. Backward: dbias
// += the rows of ddst whose slot is not empty, in order of j. Plain loops (copies and a column-wise
// add that vectorise as written; k·width is one head's (k, d_h) in conv_full).
template <class T>
void slot_bias(const T* bias, const uint8_t* empty, int64_t k, int64_t width, T* dst, int64_t ldd);
template <class T>
void slot_bias_backward(const T* ddst, int64_t ldd, const uint8_t* empty, int64_t k, int64_t width, T* dbias);

}  // namespace lf

// The CPU kernels of `synthesizer` (src/attention/synthesizer.cpp; the math is in src/ops/synthesizer.h)
// on one (sample, head)'s n × n scores: the softmax over each row's visible keys (causal: j ≤ t; key
// padding: -inf) from synthesised scores, or from the outer products of the factorised scores, and
// their backward. Rows in parallel above 128 × 128; every value is the same for any thread count and,
// for a causal row, for any n (fixed-order lane sums).
#pragma once
#include <cstdint>

namespace lf {

// P (n × n) = softmax(S + bias + masks) row by row over the keys row t sees (j < end_t = t + 1 when
// causal, else n); entries past end_t are 0, and so is a row whose keys are all masked. S: rows ld_s
// apart, may be P itself (ld_s = n); bias (n) and key_mask (n, nonzero = padding) may be null.
template <class T>
void synthesizer_softmax(const T* S, int64_t ld_s, const T* bias, const uint8_t* key_mask, bool causal, int64_t n,
                         T* P);
// The same softmax of the factorised scores S[t, j] = a[t, j / fb] · b[t, j mod fb], a (n × fa) and
// b (n × fb) rows ld_a and ld_b apart (fa · fb ≥ n).
template <class T>
void synthesizer_factorized_softmax(const T* a, int64_t ld_a, const T* b, int64_t ld_b, int64_t fb,
                                    const uint8_t* key_mask, bool causal, int64_t n, T* P);

// G (n × n): ∂loss/∂P on entry, ∂loss/∂(S + bias) on return, from P; entries past end_t become 0.
template <class T>
void synthesizer_softmax_backward(const T* P, bool causal, int64_t n, T* G);

// From G = ∂loss/∂S (n × n) of factorised scores: da (n × fa) and db (n × fb), overwritten, rows as
// a's and b's (ld_a, ld_b apart).
template <class T>
void synthesizer_factors_backward(const T* G, const T* a, int64_t ld_a, int64_t fa, const T* b, int64_t ld_b,
                                  int64_t fb, bool causal, int64_t n, T* da, T* db);

// Plain references: the softmax of the visible keys in double from the maximum, its backward, and the
// factors' gradient entry by entry.
template <class T>
void synthesizer_softmax_ref(const T* S, int64_t ld_s, const T* bias, const uint8_t* key_mask, bool causal, int64_t n,
                             T* P);
template <class T>
void synthesizer_softmax_backward_ref(const T* P, bool causal, int64_t n, T* G);
template <class T>
void synthesizer_factors_backward_ref(const T* G, const T* a, int64_t ld_a, int64_t fa, const T* b, int64_t ld_b,
                                      int64_t fb, bool causal, int64_t n, T* da, T* db);

}  // namespace lf

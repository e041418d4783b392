// The core of AFT-simple (src/attention/aft_simple.cpp) on Q, K, V (B, n, d): per channel c,
//   Y_tc = σ(Q_tc) · Σ_{t'} softmax_{t'}(K_{·c})_{t'} V_{t'c}
// over the keys t' that are not padding (causal: t' ≤ t); a query that sees no key gets Y = 0. The
// fast path shifts exp by the maximum of K (causal: a running maximum, an online softmax), so K of any
// size gives finite outputs. Parallel over (sample, block of 16 channels): the same bits for any
// thread count.
#pragma once
#include <cstdint>

namespace lf {

// o (B, n, d) = Y from q, k, v (B, n, d) and mask (B, n, nonzero = padding, or null). With r, m, s
// (the softmax means, maxima and sums: (B, n, d) causal, (B, d) otherwise) the statistics are kept
// for the backward and q is overwritten by σ(Q) (always, non-causal).
template <class T>
void aft_simple_forward(T* q, const T* k, const T* v, const uint8_t* mask, T* o, T* r, T* m, T* s, int64_t B,
                        int64_t n, int64_t d, bool causal);

// dq, dk, dv (B, n, d) overwritten from d_o (B, n, d), σ(Q) (`sg`) and the forward's statistics.
template <class T>
void aft_simple_backward(const T* sg, const T* k, const T* v, const uint8_t* mask, const T* r, const T* m, const T* s,
                         const T* d_o, T* dq, T* dk, T* dv, int64_t B, int64_t n, int64_t d, bool causal);

// Incremental decoding (causal, no padding): o (B, n, d) for the next n rows of q, k, v (B, n, d) (q raw, read
// only) from the carried online-softmax state of the rows before them, mx, sum, num (B, d): the running
// maximum of K, Σ exp(K − mx) and Σ exp(K − mx) V (−inf, 0, 0 before any row), updated in place.
template <class T>
void aft_simple_decode(const T* q, const T* k, const T* v, T* o, T* mx, T* sum, T* num, int64_t B, int64_t n,
                       int64_t d);
// Its plain reference: the same recurrence in double, libm's exp.
template <class T>
void aft_simple_decode_ref(const T* q, const T* k, const T* v, T* o, T* mx, T* sum, T* num, int64_t B, int64_t n,
                           int64_t d);

// Plain references from the raw Q (loops in the formula's order, softmax of the visible keys with
// their maximum subtracted; O(n²) per channel).
template <class T>
void aft_simple_forward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, T* o, int64_t B, int64_t n,
                            int64_t d, bool causal);
template <class T>
void aft_simple_backward_ref(const T* q, const T* k, const T* v, const uint8_t* mask, const T* d_o, T* dq, T* dk,
                             T* dv, int64_t B, int64_t n, int64_t d, bool causal);

}  // namespace lf

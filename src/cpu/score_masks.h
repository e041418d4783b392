// Masks on an attention score block: keys that are padding, and (causal) keys after the query, get
// -inf before the softmax, which turns them into probability 0 (a row of only -inf into zeros).
#pragma once
#include <cstdint>

namespace lf {

// S (n, mk) with rows ld apart: S[t, j] = -inf where key_mask[j] (mk, nonzero = padding; may be null)
// or, with causal, where j > q_start + t (row t is position q_start + t of the keys).
template <class T>
void mask_scores(T* S, int64_t n, int64_t mk, int64_t ld, const uint8_t* key_mask, bool causal, int64_t q_start = 0);

}  // namespace lf

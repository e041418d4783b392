// Pooling of each sequence's hidden states to one vector (the classifier head's `pooling`): the mean
// over the unpadded positions or the first position's row, and its backward. The head's loops, moved
// here unchanged (tests/ops/test_sequence_pool.cpp checks them against their definition).
#pragma once
#include <cstdint>

namespace lf {

// pooled (B, d) from h (B, n, d): first = row 0 of each sequence; otherwise the mean of the rows whose
// padding (B·n) is 0 (padding null: every row), summed in order of t, then divided by their count.
template <class T>
void sequence_pool_forward(const T* h, const uint8_t* padding, int64_t B, int64_t n, int64_t d, bool first,
                           T* pooled);
// dh (B, n, d) overwritten: dpooled (B, d) at row 0 (first), or dpooled / count at each unpadded row;
// zeros elsewhere.
template <class T>
void sequence_pool_backward(const T* dpooled, const uint8_t* padding, int64_t B, int64_t n, int64_t d, bool first,
                            T* dh);

}  // namespace lf

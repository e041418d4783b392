// Masking an attention score block before its softmax (padding keys, and keys after the query when
// causal): the masked scores become -inf.
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// scores (n, mk): -inf where key_mask (mk, nonzero = padding; `{}` for none) is set, and where key
// j > query t when causal (query t being key position q_start + t: a decoding chunk after q_start keys).
template <class T>
void mask_scores(TensorView<T> scores, TensorView<const uint8_t> key_mask, bool causal, int64_t q_start = 0);

}  // namespace lf::ops

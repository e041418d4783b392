// Exact softmax attention for a decoding step: a few new queries of B sequences against their cached
// keys and values (src/cpu/attention_decode.h has the method: one parallel region over chunks of key
// rows, each streaming its rows once for every head, an online softmax, the chunks merged exactly).
#pragma once
#include <cstdint>

#include "ops/view_args.h"

namespace lf::ops {

// o (B, n, h·d_h) = softmax(scale · q Kᵀ) V per head, causal: the n queries are the last n of the
// `rows = k.size(1)` positions, query r seeing keys 0 .. rows − n + r. q, o (B, n, h·d_h) contiguous;
// k, v (B, rows, hk·d_h), hk dividing h (query head i reads key head i / (h / hk)), rows contiguous, any stride
// between sequences (a KV cache's capacity). chunks: the key chunks per sequence (0: automatic, from
// the rows and the thread count). The same bits for a given thread count and chunk count.
template <class T>
void attention_decode(In<T> q, In<T> k, In<T> v, int64_t heads, double scale, Out<T> o, int64_t chunks = 0);

}  // namespace lf::ops

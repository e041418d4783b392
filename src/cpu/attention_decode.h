// Exact softmax attention for a decoding step ("flash-decoding" on the CPU): the n new queries
// (n small, usually 1) of B sequences against each sequence's cached keys and values, all heads at
// once, in one parallel region over chunks of key rows:
//   per (sequence, chunk): stream the chunk's rows in order; for each block of rows, every query and
//     head's scores scale·q·k_j from the row's contiguous hk·d_h keys, an online softmax per
//     (query, head) (running max m, sum ℓ, rescaled as m grows) and the weighted sum acc of the V rows;
//   then per (sequence, query, head): merge the chunks' (m, ℓ, acc) exactly,
//     M = max m_c, ℓ = Σ ℓ_c e^{m_c − M}, o = Σ acc_c e^{m_c − M} / ℓ, in chunk order.
// Rather than one GEMM per head (whose key columns are 1/h of each cached row), each row of K and V is
// read once, contiguously. Causal: query r is position q_start + r = rows − n + r and sees keys
// 0 .. q_start + r. The chunks depend on the row count, the thread count and DecodeShape::chunks
// only, and are merged in a fixed order: the same bits for a given thread count.
#pragma once
#include <cstdint>

#include "core/attention_shape.h"

namespace lf {

// q, o (B, n, h·d_h) contiguous; sequence b's keys and values are the rows × hk·d_h contiguous block
// at k + b·kv_stride, v + b·kv_stride (a KV cache's rows, kv_stride its capacity × width).
struct DecodeShape {
  int64_t B = 0, n = 0, rows = 0;  // sequences, new queries per sequence, cached keys (the new included)
  int64_t h = 0, hk = 0, d_h = 0;  // query heads, key/value heads (a divisor of h: kv_head_of), head width
  int64_t kv_stride = 0;           // elements between two sequences' first cached rows
  double scale = 1;
  int64_t chunks = 0;  // key chunks per sequence; 0: from the row count and the thread count
};

// Rows of one block of scores (the online softmax rescales once per block).
inline constexpr int64_t kDecodeBlock = 64;
// Fewest key rows per chunk when the chunk count is automatic: below it, a chunk's work does not pay
// for waking a thread.
inline constexpr int64_t kDecodeMinChunk = 256;

template <class T>
void attention_decode(const DecodeShape& s, const T* q, const T* k, const T* v, T* o);

// Its plain reference: the two-pass softmax in double, one (sequence, query, head) at a time.
template <class T>
void attention_decode_ref(const DecodeShape& s, const T* q, const T* k, const T* v, T* o);

}  // namespace lf

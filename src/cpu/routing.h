// `routing` (Roy, Saffar, Vaswani, Grangier 2021, the Routing Transformer): attention within clusters
// chosen by online k-means. These are the kernels on already projected tensors, checked and dispatched
// by ops/routing.h; the layer in attention/routing.cpp adds the maps and the centroids' state.
//
// Per batch b and head i (RoutingShape s, groups RoutingGroups):
//   routing heads (i >= local_heads), with qn_t, kn_t the unit-normalised q_t, k_t and μ_c the head's
//   unit centroids, sim(x, c) = x · μ_c:
//     balanced (the paper's balanced variant, lucidrains' KmeansAttention): group c holds the
//       min(w, n) queries and the min(w, n) keys of highest sim to μ_c (ties: the lower position;
//       padded positions rank last); a position may be in several groups or none.
//     nearest (the paper's definition, and its causal form): group c holds the queries and the
//       (unpadded) keys whose nearest centroid (argmax sim, the first on ties) is c.
//   local heads (i < local_heads): group β holds the queries of block β = [β·w, (β+1)·w) and the keys
//       of blocks β − 1, β and, unless causal, β + 1 (lucidrains' LocalAttention, look-back and
//       look-ahead one block).
//   visible keys j of query t in group g: the group's keys that are not padding and, when causal,
//     j <= t; in nearest mode also t itself (unless padded) when its key went to another cluster:
//     a query whose cluster holds no earlier key still has one (the paper leaves that row undefined).
//   o_g,t = Σ_j softmax_j(scale · q_t·k_j) · r_j · v_j over the visible keys (zero when there is none),
//     r_j the dropout factor (keep: 1/(1−p), drop: 0) of uniform01(seed, kRoutingDropoutStream,
//     e·n + slot), e the (group, query) entry's index in qidx, slot the key's index in the visible list;
//   out_t = Σ_g o_g,t / count_t over the groups holding t as a query (0 where none does).
#pragma once
#include <cstdint>

#include "core/routing_shape.h"

namespace lf {

inline constexpr uint64_t kRoutingDropoutStream = 0x70a71e6bull;

// The groups of one call from the normalised qn, kn (B, n, h·d_h) and the centroids (h − local_heads,
// c, d_h), as defined above. Parallel over (b, head), then concatenated in (b, head) order.
template <class T>
void routing_assign(const RoutingShape& s, const T* qn, const T* kn, const T* centroids, RoutingGroups& groups);

// out (B, n, h·d_h), overwritten, and lse (groups.queries()): each entry's log Σ exp of its scores
// (+inf where the entry sees no key). Parallel over (b, head); each head's groups in order, so the
// sums' order does not depend on the thread count.
template <class T>
void routing_forward(const RoutingShape& s, const RoutingGroups& groups, const T* q, const T* k, const T* v, T* out,
                     T* lse);

// dq, dk, dv (B, n, h·d_h), overwritten, from dout and the forward's lse (scores recomputed).
template <class T>
void routing_backward(const RoutingShape& s, const RoutingGroups& groups, const T* q, const T* k, const T* v,
                      const T* lse, const T* dout, T* dq, T* dk, T* dv);

// The online k-means step of a training forward: each unpadded qn_t and kn_t (B, n, h·d_h) of a
// routing head goes to its nearest centroid; a centroid that received vectors becomes
// normalise(decay·μ + (1 − decay)·mean of them), the others stay. centroids (h − local_heads, c, d_h).
template <class T>
void routing_update_centroids(const RoutingShape& s, const T* qn, const T* kn, double decay, T* centroids);

}  // namespace lf

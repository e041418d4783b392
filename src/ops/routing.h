// Routing attention (the Routing Transformer; the definition is in cpu/routing.h): the routing of
// queries and keys to groups, attention within the groups (forward and backward), and the online
// k-means update of the centroids. `s` gives the sizes and options (core/routing_shape.h); the views
// must match it: qn, kn, q, k, v, out and their gradients (B, n, h·d_h); centroids
// (h − local_heads, clusters, d_h); lse (groups.queries()); all contiguous.
#pragma once
#include "core/routing_shape.h"
#include "ops/view_args.h"

namespace lf::ops {

// groups (overwritten) of the normalised qn, kn under the centroids.
template <class T>
void routing_assign(const RoutingShape& s, In<T> qn, In<T> kn, In<T> centroids, RoutingGroups& groups);

// out and lse (log Σ exp per (group, query) entry) of attention within the groups.
template <class T>
void routing_attention_forward(const RoutingShape& s, const RoutingGroups& groups, In<T> q, In<T> k, In<T> v,
                               TensorView<T> out, Out<T> lse);

// dq, dk, dv (overwritten) from dout, with the forward's lse.
template <class T>
void routing_attention_backward(const RoutingShape& s, const RoutingGroups& groups, In<T> q, In<T> k, In<T> v,
                                In<T> lse, In<T> dout, TensorView<T> dq, Out<T> dk, Out<T> dv);

// One exponential-moving-average step of the centroids toward the vectors nearest to them.
template <class T>
void routing_update_centroids(const RoutingShape& s, In<T> qn, In<T> kn, double decay, TensorView<T> centroids);

}  // namespace lf::ops

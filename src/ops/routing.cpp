#include "ops/routing.h"

#include "cpu/routing.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

template <class View>
void require_sequence(const char* op, const char* name, const RoutingShape& s, const View& v) {
  require_shape(op, name, v, {s.B, s.n, s.h * s.d_h});
}
template <class View>
void require_centroids(const char* op, const RoutingShape& s, const View& c) {
  require_shape(op, "centroids", c, {s.h - s.local_heads, s.clusters, s.d_h});
}
void require_groups(const char* op, const RoutingShape& s, const RoutingGroups& g) {
  LF_REQUIRE(g.head_start.size() == size_t(s.B * s.h + 1) && g.count.size() == size_t(s.B * s.h * s.n), op,
             ": the groups were not made for this shape");
}

}  // namespace

template <class T>
void routing_assign(const RoutingShape& s, In<T> qn, In<T> kn, In<T> centroids, RoutingGroups& groups) {
  constexpr const char* op = "routing_assign";
  require_sequence(op, "qn", s, qn);
  require_sequence(op, "kn", s, kn);
  if (s.local_heads < s.h) require_centroids(op, s, centroids);
  LF_REQUIRE(s.window >= 1 && s.clusters >= 1 && s.local_heads >= 0 && s.local_heads <= s.h, op,
             ": window, clusters and local_heads out of range");
  LF_DISPATCH(op, device_of(op, qn, kn, centroids),
              return lf::routing_assign<T>(s, qn.data(), kn.data(), centroids.data(), groups));
}

template <class T>
void routing_attention_forward(const RoutingShape& s, const RoutingGroups& groups, In<T> q, In<T> k, In<T> v,
                               TensorView<T> out, Out<T> lse) {
  constexpr const char* op = "routing_attention_forward";
  require_sequence(op, "q", s, q);
  require_sequence(op, "k", s, k);
  require_sequence(op, "v", s, v);
  require_sequence(op, "out", s, out);
  require_groups(op, s, groups);
  require_shape(op, "lse", lse, {groups.queries()});
  LF_DISPATCH(op, device_of(op, q, k, v, out, lse),
              return lf::routing_forward<T>(s, groups, q.data(), k.data(), v.data(), out.data(), lse.data()));
}

template <class T>
void routing_attention_backward(const RoutingShape& s, const RoutingGroups& groups, In<T> q, In<T> k, In<T> v,
                                In<T> lse, In<T> dout, TensorView<T> dq, Out<T> dk, Out<T> dv) {
  constexpr const char* op = "routing_attention_backward";
  for (const auto& [name, view] : {std::pair{"q", q}, {"k", k}, {"v", v}, {"dout", dout}})
    require_sequence(op, name, s, view);
  require_sequence(op, "dq", s, dq);
  require_sequence(op, "dk", s, dk);
  require_sequence(op, "dv", s, dv);
  require_groups(op, s, groups);
  require_shape(op, "lse", lse, {groups.queries()});
  LF_DISPATCH(op, device_of(op, q, k, v, lse, dout, dq, dk, dv),
              return lf::routing_backward<T>(s, groups, q.data(), k.data(), v.data(), lse.data(), dout.data(),
                                             dq.data(), dk.data(), dv.data()));
}

template <class T>
void routing_update_centroids(const RoutingShape& s, In<T> qn, In<T> kn, double decay, TensorView<T> centroids) {
  constexpr const char* op = "routing_update_centroids";
  require_sequence(op, "qn", s, qn);
  require_sequence(op, "kn", s, kn);
  require_centroids(op, s, centroids);
  LF_REQUIRE(decay >= 0 && decay < 1, op, ": decay must be in [0, 1), got ", decay);
  LF_DISPATCH(op, device_of(op, qn, kn, centroids),
              return lf::routing_update_centroids<T>(s, qn.data(), kn.data(), decay, centroids.data()));
}

#define LF_INSTANTIATE(T)                                                                                         \
  template void routing_assign<T>(const RoutingShape&, In<T>, In<T>, In<T>, RoutingGroups&);                     \
  template void routing_attention_forward<T>(const RoutingShape&, const RoutingGroups&, In<T>, In<T>, In<T>,    \
                                             TensorView<T>, Out<T>);                                              \
  template void routing_attention_backward<T>(const RoutingShape&, const RoutingGroups&, In<T>, In<T>, In<T>,   \
                                              In<T>, In<T>, TensorView<T>, Out<T>, Out<T>);                       \
  template void routing_update_centroids<T>(const RoutingShape&, In<T>, In<T>, double, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

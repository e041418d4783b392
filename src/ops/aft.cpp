#include "ops/aft.h"

#include "cpu/aft_simple.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// x is a contiguous (B, n, d) tensor of the same shape as ref.
template <class V, class R>
void require_like(const char* op, const char* name, const V& x, const R& ref) {
  LF_REQUIRE(x.rank() == 3 && x.contiguous() && x.size(0) == ref.size(0) && x.size(1) == ref.size(1) &&
                 x.size(2) == ref.size(2),
             op, ": `", name, "` must be contiguous ", ref.shape_string(), ", not ", x.shape_string());
}

// q (B, n, d) contiguous and the mask (B, n) or empty.
template <class V>
void require_activation(const char* op, const V& q, TensorView<const uint8_t> mask) {
  LF_REQUIRE(q.rank() == 3 && q.contiguous(), op, ": activations must be contiguous (B, n, d), not ", q.shape_string());
  require_vector_or_empty(op, "mask", mask, q.size(0) * q.size(1));
}

// The statistics of AFT-simple: (B, n, d) causal, (B, d) otherwise; all present or all empty.
template <class V, class Q>
void require_stats(const char* op, const V& r, const V& m, const V& s, const Q& q, bool causal) {
  const bool any = r.data() || m.data() || s.data();
  if (!any) return;
  const int64_t want = (causal ? q.size(0) * q.size(1) : q.size(0)) * q.size(2);
  for (const V* x : {&r, &m, &s})
    LF_REQUIRE(x->data() && x->contiguous() && x->numel() == want, op, ": the statistics r, m, s need ", want,
               causal ? " (B·n·d)" : " (B·d)", " contiguous elements each, not ", x->shape_string());
}

}  // namespace

template <class T>
void aft_simple_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, Out<T> o, Out<T> r,
                        Out<T> m, Out<T> s, bool causal) {
  const char* op = "aft_simple_forward";
  require_activation(op, q, mask);
  require_like(op, "k", k, q);
  require_like(op, "v", v, q);
  require_like(op, "o", o, q);
  require_stats(op, r, m, s, q, causal);
  LF_DISPATCH(op, device_of(op, q, k, v, mask, o, r, m, s),
              return lf::aft_simple_forward<T>(q.data(), k.data(), v.data(), mask.data(), o.data(), r.data(), m.data(),
                                               s.data(), q.size(0), q.size(1), q.size(2), causal));
}

template <class T>
void aft_simple_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> r, In<T> m, In<T> s,
                         In<T> d_o, TensorView<T> dq, Out<T> dk, Out<T> dv, bool causal) {
  const char* op = "aft_simple_backward";
  require_activation(op, sigma_q, mask);
  require_like(op, "k", k, sigma_q);
  require_like(op, "v", v, sigma_q);
  require_like(op, "d_o", d_o, sigma_q);
  require_like(op, "dq", dq, sigma_q);
  require_like(op, "dk", dk, sigma_q);
  require_like(op, "dv", dv, sigma_q);
  LF_REQUIRE(r.data(), op, ": needs the statistics the forward kept");
  require_stats(op, r, m, s, sigma_q, causal);
  LF_DISPATCH(op, device_of(op, sigma_q, k, v, mask, r, m, s, d_o, dq, dk, dv),
              return lf::aft_simple_backward<T>(sigma_q.data(), k.data(), v.data(), mask.data(), r.data(), m.data(),
                                                s.data(), d_o.data(), dq.data(), dk.data(), dv.data(), sigma_q.size(0),
                                                sigma_q.size(1), sigma_q.size(2), causal));
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void aft_simple_forward<T>(TensorView<T>, In<T>, In<T>, TensorView<const uint8_t>, Out<T>, Out<T>,    \
                                      Out<T>, Out<T>, bool);                                                     \
  template void aft_simple_backward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>,      \
                                       In<T>, TensorView<T>, Out<T>, Out<T>, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

#include "ops/aft.h"

#include <initializer_list>
#include <string>

#include "cpu/aft_conv.h"
#include "cpu/aft_simple.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// x: contiguous with the given sizes.
template <class V>
void require_shape(const char* op, const char* name, const V& x, std::initializer_list<int64_t> sizes) {
  bool ok = x.contiguous() && x.rank() == int(sizes.size());
  int dim = 0;
  for (int64_t size : sizes) ok = ok && x.size(dim++) == size;
  std::string want = "(";
  for (int64_t size : sizes) want += (want.size() > 1 ? ", " : "") + std::to_string(size);
  LF_REQUIRE(ok, op, ": `", name, "` must be contiguous ", want, "), not ", x.shape_string());
}

// Every view contiguous with the given sizes (`names` lists them for the message).
template <class... V>
void require_shapes(const char* op, const char* names, std::initializer_list<int64_t> sizes, const V&... views) {
  (require_shape(op, names, views, sizes), ...);
}

// x: contiguous (B, n, d) of the same shape as ref (of rank 3).
template <class V, class R>
void require_like(const char* op, const char* name, const V& x, const R& ref) {
  require_shape(op, name, x, {ref.size(0), ref.size(1), ref.size(2)});
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

// The heads of AFT-conv: K (B, n, h) with h dividing d, ω (h, s).
template <class Q, class K, class W>
void require_conv_heads(const char* op, const Q& q, const K& k, const W& omega) {
  LF_REQUIRE(k.rank() == 3 && omega.rank() == 2, op, ": k (B, n, h) and omega (h, s), not ", k.shape_string(), " and ",
             omega.shape_string());
  const int64_t h = omega.size(0);
  LF_REQUIRE(h >= 1 && q.size(2) % h == 0, op, ": ", h, " heads do not divide the width ", q.size(2));
  require_shape(op, "k", k, {q.size(0), q.size(1), h});
  require_shape(op, "omega", omega, {h, omega.size(1)});
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

template <class T>
void aft_conv_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> omega, Out<T> o,
                      Out<T> r, Out<T> den, Out<T> m, bool causal) {
  const char* op = "aft_conv_forward";
  require_activation(op, q, mask);
  require_conv_heads(op, q, k, omega);
  require_like(op, "v", v, q);
  require_like(op, "o", o, q);
  if (r.data()) require_like(op, "r", r, q);
  const int64_t B = q.size(0), n = q.size(1), d = q.size(2), h = omega.size(0);
  require_shapes(op, "den and m", {B, h, n}, den, m);
  LF_DISPATCH(op, device_of(op, q, k, v, mask, omega, o, r, den, m),
              return lf::aft_conv_forward<T>(q.data(), k.data(), v.data(), mask.data(), omega.data(), o.data(),
                                             r.data(), den.data(), m.data(), B, n, d, h, omega.size(1), causal));
}

template <class T>
void aft_conv_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> omega, In<T> r,
                       In<T> den, In<T> m, In<T> d_o, TensorView<T> dq, Out<T> dk, Out<T> dv, TensorView<double> dwhat,
                       bool causal) {
  const char* op = "aft_conv_backward";
  require_activation(op, sigma_q, mask);
  require_conv_heads(op, sigma_q, k, omega);
  const int64_t B = sigma_q.size(0), n = sigma_q.size(1), d = sigma_q.size(2), h = omega.size(0), s = omega.size(1);
  require_shapes(op, "v, r, d_o, dq and dv", {B, n, d}, v, r, d_o, dq, dv);
  require_shape(op, "dk", dk, {B, n, h});
  require_shapes(op, "den and m", {B, h, n}, den, m);
  require_shape(op, "dwhat", dwhat, {h, s});
  LF_DISPATCH(op, device_of(op, sigma_q, k, v, mask, omega, r, den, m, d_o, dq, dk, dv, dwhat),
              return lf::aft_conv_backward<T>(sigma_q.data(), k.data(), v.data(), mask.data(), omega.data(), r.data(),
                                              den.data(), m.data(), d_o.data(), dq.data(), dk.data(), dv.data(),
                                              dwhat.data(), B, n, d, h, s, causal));
}

template <class T>
void aft_conv_kernel_forward(In<T> w, In<T> gamma, In<T> beta, TensorView<T> omega, TensorView<double> z,
                             TensorView<double> inv_std, double eps) {
  const char* op = "aft_conv_kernel_forward";
  LF_REQUIRE(w.rank() == 2, op, ": w must be (h, s), not ", w.shape_string());
  const int64_t h = w.size(0), s = w.size(1);
  require_shapes(op, "w, omega and z", {h, s}, w, omega, z);
  require_shapes(op, "gamma, beta and inv_std", {h}, gamma, beta, inv_std);
  LF_DISPATCH(op, device_of(op, w, gamma, beta, omega, z, inv_std),
              return lf::aft_conv_kernel_forward<T>(w.data(), gamma.data(), beta.data(), omega.data(), z.data(),
                                                    inv_std.data(), h, s, eps));
}

template <class T>
void aft_conv_kernel_backward(In<T> gamma, TensorView<const double> z, TensorView<const double> inv_std,
                              TensorView<const double> dwhat, TensorView<T> dw, Out<T> dgamma, Out<T> dbeta) {
  const char* op = "aft_conv_kernel_backward";
  LF_REQUIRE(z.rank() == 2, op, ": z must be (h, s), not ", z.shape_string());
  const int64_t h = z.size(0), s = z.size(1);
  require_shapes(op, "z, dwhat and dw", {h, s}, z, dwhat, dw);
  require_shapes(op, "gamma, inv_std, dgamma and dbeta", {h}, gamma, inv_std, dgamma, dbeta);
  LF_DISPATCH(op, device_of(op, gamma, z, inv_std, dwhat, dw, dgamma, dbeta),
              return lf::aft_conv_kernel_backward<T>(gamma.data(), z.data(), inv_std.data(), dwhat.data(), dw.data(),
                                                     dgamma.data(), dbeta.data(), h, s));
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void aft_simple_forward<T>(TensorView<T>, In<T>, In<T>, TensorView<const uint8_t>, Out<T>, Out<T>,    \
                                      Out<T>, Out<T>, bool);                                                     \
  template void aft_simple_backward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>,      \
                                       In<T>, TensorView<T>, Out<T>, Out<T>, bool);                             \
  template void aft_conv_forward<T>(TensorView<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, Out<T>, Out<T>, \
                                    Out<T>, Out<T>, bool);                                                       \
  template void aft_conv_backward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>, In<T>,  \
                                     In<T>, TensorView<T>, Out<T>, Out<T>, TensorView<double>, bool);             \
  template void aft_conv_kernel_forward<T>(In<T>, In<T>, In<T>, TensorView<T>, TensorView<double>,               \
                                           TensorView<double>, double);                                         \
  template void aft_conv_kernel_backward<T>(In<T>, TensorView<const double>, TensorView<const double>,           \
                                            TensorView<const double>, TensorView<T>, Out<T>, Out<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

#include "ops/aft.h"

#include <initializer_list>
#include <string>

#include "cpu/aft_conv.h"
#include "cpu/aft_decode.h"
#include "cpu/aft_position.h"
#include "cpu/aft_simple.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

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

// The position bias of AFT-full / AFT-local in one of its forms: bias_u, bias_v (max_len, d') or bias_w
// (max_len, band_width; aft_full's band_width 0: max_len), covering the length n.
template <class T>
AftPositionBias<T> position_bias(const char* op, const TensorView<const T>& u, const TensorView<const T>& v,
                                 const TensorView<const T>& w, int64_t n, int64_t band_width) {
  const bool factored = u.data() != nullptr;
  LF_REQUIRE(factored == (v.data() != nullptr) && factored != (w.data() != nullptr), op,
             ": the position bias is bias_u with bias_v (factored) or bias_w (stored), exactly one of the two");
  AftPositionBias<T> bias{u.data(), v.data(), w.data(), 0, 0};
  if (factored) {
    LF_REQUIRE(u.rank() == 2 && u.size(1) >= 1, op, ": bias_u must be (max_len, d'), not ", u.shape_string());
    bias.max_len = u.size(0);
    bias.rank = u.size(1);
    require_shapes(op, "bias_u and bias_v", {bias.max_len, bias.rank}, u, v);
  } else {
    LF_REQUIRE(w.rank() == 2, op, ": bias_w must be (max_len, ", band_width > 0 ? "W" : "max_len", "), not ",
               w.shape_string());
    bias.max_len = w.size(0);
    require_shape(op, "bias_w", w, {bias.max_len, band_width > 0 ? band_width : bias.max_len});
  }
  LF_REQUIRE(bias.max_len >= n, op, ": the position bias covers ", bias.max_len, " positions, fewer than the length ",
             n);
  return bias;
}

// The gradients of the bias's form, each the shape of its value.
template <class T>
AftPositionBiasGrad<T> position_bias_grad(const char* op, const AftPositionBias<T>& bias, const TensorView<T>& du,
                                          const TensorView<T>& dv, const TensorView<T>& dw, int64_t band_width) {
  if (bias.rank > 0)
    require_shapes(op, "grad_u and grad_v", {bias.max_len, bias.rank}, du, dv);
  else
    require_shape(op, "grad_w", dw, {bias.max_len, band_width > 0 ? band_width : bias.max_len});
  return {du.data(), dv.data(), dw.data()};
}

// The shared checks of the position kinds: activations (B, n, d) and the row block.
template <class Q, class... V>
void require_position_activations(const char* op, const Q& q, TensorView<const uint8_t> mask, int64_t row_block,
                                  const char* names, const V&... views) {
  require_activation(op, q, mask);
  require_shapes(op, names, {q.size(0), q.size(1), q.size(2)}, views...);
  LF_REQUIRE(row_block >= 1, op, ": row_block must be at least 1, got ", row_block);
}

// aft_local's band width W (2·window − 1, causal window) for a window within the bias's positions.
int64_t local_band_width(const char* op, int64_t window, bool causal) {
  LF_REQUIRE(window >= 1, op, ": window must be at least 1, got ", window);
  return causal ? window : 2 * window - 1;
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
void aft_simple_decode(In<T> q, In<T> k, In<T> v, Out<T> o, TensorView<T> mx, TensorView<T> sum, TensorView<T> num) {
  const char* op = "aft_simple_decode";
  require_activation(op, q, {});
  require_like(op, "k", k, q);
  require_like(op, "v", v, q);
  require_like(op, "o", o, q);
  require_shapes(op, "the state mx, sum, num", {q.size(0), q.size(2)}, mx, sum, num);
  LF_DISPATCH(op, device_of(op, q, k, v, o, mx, sum, num),
              return lf::aft_simple_decode<T>(q.data(), k.data(), v.data(), o.data(), mx.data(), sum.data(), num.data(),
                                              q.size(0), q.size(1), q.size(2)));
}

template <class T>
void aft_window_decode(In<T> q, In<T> K, In<T> V, int64_t L, int64_t window, In<T> bias, bool band, TensorView<T> mx,
                       TensorView<T> sum, TensorView<T> num, Out<T> o) {
  const char* op = "aft_window_decode";
  require_activation(op, q, {});
  require_like(op, "o", o, q);
  AftDecodeShape s;
  s.B = q.size(0);
  s.n = q.size(1);
  s.d = q.size(2);
  s.L = L;
  s.window = window;
  LF_REQUIRE(K.rank() == 3 && V.rank() == 3, op, ": the cache K, V must be (B, cap, ·), not ", K.shape_string(),
             " and ", V.shape_string());
  s.cap = K.size(1);
  s.dk = K.size(2);
  LF_REQUIRE(s.dk >= 1 && s.d % s.dk == 0, op, ": K's ", s.dk, " columns do not divide the width ", s.d);
  require_shape(op, "K", K, {s.B, s.cap, s.dk});
  require_shape(op, "V", V, {s.B, s.cap, s.d});
  LF_REQUIRE(L >= s.n && L <= s.cap, op, ": ", L, " cached rows must hold the ", s.n, " new ones and fit the cache of ",
             s.cap);
  LF_REQUIRE(window >= 1, op, ": the window must be positive, got ", window);
  const bool prefix = mx.data() != nullptr;
  LF_REQUIRE(prefix || window >= L, op, ": without a prefix state the window (", window, ") must cover the ", L,
             " cached keys");
  if (prefix) require_shapes(op, "the prefix state mx, sum, num", {s.B, s.d}, mx, sum, num);
  AftDecodeBias<T> b;
  b.w = bias.data();
  b.band = band;
  if (band) {
    LF_REQUIRE(bias.rank() == 3 && (bias.size(0) == 1 || bias.size(0) == s.n) && bias.size(2) == window &&
                   bias.size(1) >= 1 && s.d % bias.size(1) == 0 && bias.stride(2) == 1 &&
                   bias.stride(1) == window,
               op, ": a band bias must be (n or 1, groups dividing d, window = ", window, ") with dense rows, not ",
               bias.shape_string());
    b.groups = bias.size(1);
    b.ld = bias.size(0) == 1 ? 0 : bias.stride(0);
  } else {
    LF_REQUIRE(bias.rank() == 2 && bias.size(0) == s.n && bias.size(1) == L && bias.stride(1) == 1, op,
               ": a dense bias must be (n, L) = (", s.n, ", ", L, ") with unit column stride, not ", bias.shape_string());
    b.ld = bias.stride(0);
  }
  LF_DISPATCH(op, device_of(op, q, K, V, bias, mx, sum, num, o),
              return lf::aft_window_decode<T>(s, q.data(), K.data(), V.data(), b, mx.data(), sum.data(), num.data(),
                                              o.data()));
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

template <class T>
void aft_full_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                      In<T> bias_w, Out<T> o, Out<T> a, Out<T> den, Out<T> keys, int64_t row_block, bool causal) {
  const char* op = "aft_full_forward";
  require_position_activations(op, q, mask, row_block, "k, v, o, a and den", k, v, o, a, den);
  const int64_t B = q.size(0), n = q.size(1), d = q.size(2);
  require_shape(op, "keys", keys, {n, B, 2 * d});
  const AftPositionBias<T> bias = position_bias<T>(op, bias_u, bias_v, bias_w, n, 0);
  LF_DISPATCH(op, device_of(op, q, k, v, mask, bias_u, bias_v, bias_w, o, a, den, keys),
              return lf::aft_full_forward<T>(q.data(), k.data(), v.data(), mask.data(), bias, o.data(), a.data(),
                                             den.data(), keys.data(), B, n, d, row_block, causal));
}

template <class T>
void aft_full_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                       In<T> bias_w, In<T> a, In<T> den, Out<T> keys, TensorView<T> d_y, Out<T> dq, Out<T> dk,
                       Out<T> dv, Out<T> grad_u, Out<T> grad_v, Out<T> grad_w, int64_t row_block, bool causal) {
  const char* op = "aft_full_backward";
  require_position_activations(op, sigma_q, mask, row_block, "k, v, a, den, d_y, dq, dk and dv", k, v, a, den, d_y,
                               dq, dk, dv);
  const int64_t B = sigma_q.size(0), n = sigma_q.size(1), d = sigma_q.size(2);
  require_shape(op, "keys", keys, {n, B, 2 * d});
  const AftPositionBias<T> bias = position_bias<T>(op, bias_u, bias_v, bias_w, n, 0);
  const AftPositionBiasGrad<T> grad = position_bias_grad<T>(op, bias, grad_u, grad_v, grad_w, 0);
  LF_DISPATCH(op, device_of(op, sigma_q, k, v, mask, bias_u, bias_v, bias_w, a, den, keys, d_y, dq, dk, dv, grad_u,
                            grad_v, grad_w),
              return lf::aft_full_backward<T>(sigma_q.data(), k.data(), v.data(), mask.data(), bias, a.data(),
                                              den.data(), keys.data(), d_y.data(), dq.data(), dk.data(), dv.data(),
                                              grad, B, n, d, row_block, causal));
}

template <class T>
void aft_local_forward(TensorView<T> q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                       In<T> bias_w, Out<T> o, Out<T> a, Out<T> den, Out<T> key_state, int64_t window,
                       int64_t row_block, bool causal) {
  const char* op = "aft_local_forward";
  require_position_activations(op, q, mask, row_block, "k, v, o, a, den and key_state", k, v, o, a, den, key_state);
  const int64_t W = local_band_width(op, window, causal);
  const AftPositionBias<T> bias = position_bias<T>(op, bias_u, bias_v, bias_w, q.size(1), W);
  LF_REQUIRE(window <= bias.max_len, op, ": window ", window, " exceeds the bias's ", bias.max_len, " positions");
  LF_DISPATCH(op, device_of(op, q, k, v, mask, bias_u, bias_v, bias_w, o, a, den, key_state),
              return lf::aft_local_forward<T>(q.data(), k.data(), v.data(), mask.data(), bias, o.data(), a.data(),
                                              den.data(), key_state.data(), q.size(0), q.size(1), q.size(2), window,
                                              row_block, causal));
}

template <class T>
void aft_local_backward(In<T> sigma_q, In<T> k, In<T> v, TensorView<const uint8_t> mask, In<T> bias_u, In<T> bias_v,
                        In<T> bias_w, In<T> a, In<T> den, In<T> key_state, TensorView<T> d_y, Out<T> dq, Out<T> dk,
                        Out<T> dv, Out<T> grad_u, Out<T> grad_v, Out<T> grad_w, int64_t window, int64_t row_block,
                        bool causal) {
  const char* op = "aft_local_backward";
  require_position_activations(op, sigma_q, mask, row_block, "k, v, a, den, key_state, d_y, dq, dk and dv", k, v, a,
                               den, key_state, d_y, dq, dk, dv);
  const int64_t W = local_band_width(op, window, causal);
  const AftPositionBias<T> bias = position_bias<T>(op, bias_u, bias_v, bias_w, sigma_q.size(1), W);
  LF_REQUIRE(window <= bias.max_len, op, ": window ", window, " exceeds the bias's ", bias.max_len, " positions");
  const AftPositionBiasGrad<T> grad = position_bias_grad<T>(op, bias, grad_u, grad_v, grad_w, W);
  LF_DISPATCH(op, device_of(op, sigma_q, k, v, mask, bias_u, bias_v, bias_w, a, den, key_state, d_y, dq, dk, dv,
                            grad_u, grad_v, grad_w),
              return lf::aft_local_backward<T>(sigma_q.data(), k.data(), v.data(), mask.data(), bias, a.data(),
                                               den.data(), key_state.data(), d_y.data(), dq.data(), dk.data(),
                                               dv.data(), grad, sigma_q.size(0), sigma_q.size(1), sigma_q.size(2),
                                               window, row_block, causal));
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void aft_simple_decode<T>(In<T>, In<T>, In<T>, Out<T>, TensorView<T>, TensorView<T>, TensorView<T>);  \
  template void aft_window_decode<T>(In<T>, In<T>, In<T>, int64_t, int64_t, In<T>, bool, TensorView<T>,           \
                                     TensorView<T>, TensorView<T>, Out<T>);                                        \
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
                                            TensorView<const double>, TensorView<T>, Out<T>, Out<T>);            \
  template void aft_full_forward<T>(TensorView<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>,  \
                                    Out<T>, Out<T>, Out<T>, Out<T>, int64_t, bool);                              \
  template void aft_full_backward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>, In<T>,  \
                                     In<T>, Out<T>, TensorView<T>, Out<T>, Out<T>, Out<T>, Out<T>, Out<T>,        \
                                     Out<T>, int64_t, bool);                                                     \
  template void aft_local_forward<T>(TensorView<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>, \
                                     Out<T>, Out<T>, Out<T>, Out<T>, int64_t, int64_t, bool);                    \
  template void aft_local_backward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>, In<T>, In<T>, In<T>, \
                                      In<T>, In<T>, TensorView<T>, Out<T>, Out<T>, Out<T>, Out<T>, Out<T>,       \
                                      Out<T>, int64_t, int64_t, bool);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

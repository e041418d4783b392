#include "ops/linear_attention.h"

#include <string>

#include "cpu/feature_maps.h"
#include "cpu/linear_attention.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// Checks that views hold the same rows × cols, each contiguous (for element- and row-wise kernels).
template <class A, class B>
void require_same_dense(const char* op, const A& a, const B& b) {
  require_same_matrix(op, a, b);
  LF_REQUIRE(a.contiguous() && b.contiguous(), op, ": views ", a.shape_string(), " and ", b.shape_string(),
             " must be contiguous");
}

// Checks an element-wise op's three views (the same dense shape) and returns their device.
template <class T>
Device elementwise_device(const char* op, In<T> a, In<T> b, In<T> out) {
  require_same_dense(op, a, b);
  require_same_dense(op, a, out);
  return device_of(op, a, b, out);
}

template <class View>
void require_dense_or_empty(const char* op, const char* name, const View& v, std::initializer_list<int64_t> shape) {
  if (v.data()) require_shape(op, name, v, shape);
}

LinearCoreShape core_shape(const LinearAttentionSizes& z, const LinearAttentionOptions& o, const uint8_t* key_mask) {
  LinearCoreShape s;
  s.B = z.B;
  s.h = z.h;
  s.n = z.n;
  s.m = z.m;
  s.r = z.r;
  s.dv = z.dv;
  s.causal = o.causal;
  s.chunk = o.chunk;
  s.eps = o.eps;
  s.key_mask = key_mask;
  return s;
}

// The sizes of a call from its views, every view checked against them.
template <class T>
LinearAttentionSizes checked_sizes(const char* op, In<T> phi_q, In<T> phi_k, In<T> v,
                                   TensorView<const uint8_t> key_mask, In<T> key_shift, const LinearAttentionOptions& o,
                                   In<T> out, In<T> den) {
  LF_REQUIRE(phi_q.rank() == 4 && phi_k.rank() == 4 && v.rank() == 4, op,
             ": phi_q, phi_k and v must be (B, len, h, ·), not ", phi_q.shape_string(), ", ", phi_k.shape_string(),
             ", ", v.shape_string());
  LinearAttentionSizes z;
  z.B = phi_q.size(0);
  z.n = phi_q.size(1);
  z.h = phi_q.size(2);
  z.r = phi_q.size(3);
  z.m = phi_k.size(1);
  z.dv = v.size(3);
  require_shape(op, "phi_q", phi_q, {z.B, z.n, z.h, z.r});
  require_shape(op, "phi_k", phi_k, {z.B, z.m, z.h, z.r});
  require_shape(op, "v", v, {z.B, z.m, z.h, z.dv});
  require_shape(op, "out", out, {z.B, z.n, z.h, z.dv});
  require_shape(op, "den", den, {z.B, z.h, z.n});
  require_dense_or_empty(op, "key_mask", key_mask, {z.B, z.m});
  LF_REQUIRE(o.causal || !key_shift.data(), op, ": key_shift applies to causal attention only");
  require_dense_or_empty(op, "key_shift", key_shift, {z.B, z.h, z.m});
  return z;
}

}  // namespace

template <class T>
void linear_attention_forward(In<T> phi_q, In<T> phi_k, In<T> v, TensorView<const uint8_t> key_mask, In<T> key_shift,
                              const LinearAttentionOptions& options, TensorView<T> out, TensorView<T> den) {
  const char* op = "linear_attention_forward";
  const LinearAttentionSizes z = checked_sizes<T>(op, phi_q, phi_k, v, key_mask, key_shift, options, out, den);
  const LinearCoreShape s = core_shape(z, options, key_mask.data());
  LF_DISPATCH(
      op, device_of(op, phi_q, phi_k, v, key_mask, key_shift, out, den),
      return linear_core_forward<T>(s, phi_q.data(), phi_k.data(), v.data(), key_shift.data(), out.data(), den.data()));
}

template <class T>
void linear_attention_backward(In<T> phi_q, In<T> phi_k, In<T> v, TensorView<const uint8_t> key_mask, In<T> key_shift,
                               const LinearAttentionOptions& options, In<T> out, In<T> den, In<T> dout,
                               TensorView<T> dphi_q, TensorView<T> dphi_k, TensorView<T> dv) {
  const char* op = "linear_attention_backward";
  const LinearAttentionSizes z = checked_sizes<T>(op, phi_q, phi_k, v, key_mask, key_shift, options, out, den);
  require_shape(op, "dout", dout, {z.B, z.n, z.h, z.dv});
  require_shape(op, "dphi_q", dphi_q, {z.B, z.n, z.h, z.r});
  require_shape(op, "dphi_k", dphi_k, {z.B, z.m, z.h, z.r});
  require_shape(op, "dv", dv, {z.B, z.m, z.h, z.dv});
  const LinearCoreShape s = core_shape(z, options, key_mask.data());
  LF_DISPATCH(op, device_of(op, phi_q, phi_k, v, key_mask, key_shift, out, den, dout, dphi_q, dphi_k, dv),
              return linear_core_backward<T>(s, phi_q.data(), phi_k.data(), v.data(), key_shift.data(), out.data(),
                                             den.data(), dout.data(), dphi_q.data(), dphi_k.data(), dv.data()));
}

template <class T>
void linear_attention_decode(In<T> phi_q, In<T> phi_k, In<T> v, In<T> key_shift, const LinearAttentionOptions& options,
                             TensorView<T> H, TensorView<T> z, TensorView<T> R, TensorView<T> out, TensorView<T> den) {
  const char* op = "linear_attention_decode";
  LF_REQUIRE(options.causal, op, ": decoding is causal");
  const LinearAttentionSizes s = checked_sizes<T>(op, phi_q, phi_k, v, {}, key_shift, options, out, den);
  LF_REQUIRE(s.n == s.m, op, ": as many new keys as new queries, got ", s.m, " and ", s.n);
  require_shape(op, "H", H, {s.B, s.h, s.r, s.dv});
  require_shape(op, "z", z, {s.B, s.h, s.r});
  LF_REQUIRE(!key_shift.data() == !R.data(), op, ": the state's scale R goes with key_shift, both or neither");
  require_dense_or_empty(op, "R", R, {s.B, s.h});
  const LinearCoreState<T> state{H.data(), z.data(), R.data()};
  LF_DISPATCH(op, device_of(op, phi_q, phi_k, v, key_shift, H, z, R, out, den),
              return linear_core_forward<T>(core_shape(s, options, nullptr), phi_q.data(), phi_k.data(), v.data(),
                                            key_shift.data(), out.data(), den.data(), &state));
}

double linear_attention_flops(const LinearAttentionSizes& sizes, const LinearAttentionOptions& options) {
  return linear_core_flops(core_shape(sizes, options, nullptr));
}

double linear_attention_scratch_bytes(const LinearAttentionSizes& sizes, const LinearAttentionOptions& options,
                                      int64_t element_size) {
  return linear_core_scratch_bytes(core_shape(sizes, options, nullptr), element_size);
}

// ---- feature maps
// ----------------------------------------------------------------------------------

template <class T>
void elu_plus_one_forward(In<T> x, TensorView<const uint8_t> row_mask, TensorView<T> y) {
  const char* op = "elu_plus_one_forward";
  require_same_dense(op, x, y);
  require_vector_or_empty(op, "row_mask", row_mask, x.rows());
  LF_DISPATCH(op, device_of(op, x, row_mask, y),
              return lf::elu_plus_one_forward<T>(x.data(), row_mask.data(), y.data(), x.rows(), x.cols()));
}

template <class T>
void elu_plus_one_backward(In<T> phi, In<T> dy, TensorView<T> dx) {
  const char* op = "elu_plus_one_backward";
  LF_DISPATCH(op, elementwise_device<T>(op, phi, dy, dx),
              return lf::elu_plus_one_backward<T>(phi.data(), dy.data(), dx.data(), phi.numel()));
}

template <class T>
void relu_features_forward(In<T> u, double eps, TensorView<T> phi) {
  const char* op = "relu_features_forward";
  require_same_dense(op, u, phi);
  LF_DISPATCH(op, elementwise_device<T>(op, u, phi, phi),
              return lf::relu_features_forward<T>(u.data(), T(eps), phi.data(), u.numel()));
}

template <class T>
void relu_features_backward(In<T> phi, double eps, In<T> dphi, TensorView<T> du) {
  const char* op = "relu_features_backward";
  LF_DISPATCH(op, elementwise_device<T>(op, phi, dphi, du),
              return lf::relu_features_backward<T>(phi.data(), T(eps), dphi.data(), du.data(), phi.numel()));
}

template <class T>
void column_softmax_forward(In<T> phi, TensorView<T> y) {
  const char* op = "column_softmax_forward";
  LF_REQUIRE(phi.rank() == 4, op, ": phi must be (B, m, h, r), not ", phi.shape_string());
  require_same_dense(op, phi, y);
  LF_DISPATCH(op, device_of(op, phi, y),
              return lf::column_softmax_forward<T>(phi.size(0), phi.size(1), phi.size(2), phi.size(3), phi.data(),
                                                   y.data()));
}

template <class T>
void column_softmax_backward(In<T> y, In<T> dy, TensorView<T> du) {
  const char* op = "column_softmax_backward";
  LF_REQUIRE(y.rank() == 4, op, ": y must be (B, m, h, r), not ", y.shape_string());
  LF_DISPATCH(op, elementwise_device<T>(op, y, dy, du),
              return lf::column_softmax_backward<T>(y.size(0), y.size(1), y.size(2), y.size(3), y.data(), dy.data(),
                                                    du.data()));
}

template <class T>
void favor_query_features(In<T> u, TensorView<T> phi) {
  const char* op = "favor_query_features";
  require_same_dense(op, u, phi);
  LF_REQUIRE(u.cols() > 0, op, ": no features in ", u.shape_string());
  LF_DISPATCH(op, device_of(op, u, phi), return lf::favor_query_features<T>(u.data(), phi.data(), u.rows(), u.cols()));
}

template <class T>
void favor_key_features(In<T> k, In<T> u, TensorView<const uint8_t> key_mask, double half_sq_scale,
                        const LinearAttentionOptions& options, TensorView<T> phi, TensorView<T> key_max) {
  const char* op = "favor_key_features";
  LF_REQUIRE(k.rank() == 4 && u.rank() == 4, op, ": k and u must be (B, m, h, ·), not ", k.shape_string(), " and ",
             u.shape_string());
  FavorKeyShape s;
  s.B = k.size(0);
  s.m = k.size(1);
  s.h = k.size(2);
  s.d_h = k.size(3);
  s.mf = u.size(3);
  s.span = options.causal ? 1 : s.m;
  LF_REQUIRE(s.m > 0 && s.mf > 0, op, ": no keys or no features in ", u.shape_string());
  require_shape(op, "k", k, {s.B, s.m, s.h, s.d_h});
  require_shape(op, "u", u, {s.B, s.m, s.h, s.mf});
  require_shape(op, "phi", phi, {s.B, s.m, s.h, s.mf});
  require_dense_or_empty(op, "key_mask", key_mask, {s.B, s.m});
  require_shape(op, "key_max", key_max, {s.B, s.h, s.spans()});
  LF_DISPATCH(op, device_of(op, k, u, key_mask, phi, key_max),
              return lf::favor_key_features<T>(s, k.data(), u.data(), key_mask.data(), T(half_sq_scale), phi.data(),
                                               key_max.data()));
}

template <class T>
void favor_features_backward(In<T> phi, In<T> dphi, TensorView<T> du) {
  const char* op = "favor_features_backward";
  LF_DISPATCH(op, elementwise_device<T>(op, phi, dphi, du),
              return lf::favor_features_backward<T>(phi.data(), dphi.data(), du.data(), phi.numel()));
}

template <class T>
void favor_key_norm_backward(In<T> k, In<T> du, double sq_scale, TensorView<T> dk) {
  const char* op = "favor_key_norm_backward";
  const int64_t rows = k.rows(), d_h = k.cols();
  require_same_dense(op, k, dk);
  LF_REQUIRE(du.rows() == rows && du.contiguous() && k.contiguous(), op, ": `du` ", du.shape_string(),
             " must be one contiguous row per row of k ", k.shape_string());
  LF_DISPATCH(op, device_of(op, k, du, dk),
              return lf::favor_key_norm_backward<T>(k.data(), du.data(), T(sq_scale), rows, d_h, du.cols(), dk.data()));
}

#define LF_INSTANTIATE(T)                                                                                             \
  template void linear_attention_forward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>,                    \
                                            const LinearAttentionOptions&, TensorView<T>, TensorView<T>);             \
  template void linear_attention_backward<T>(In<T>, In<T>, In<T>, TensorView<const uint8_t>, In<T>,                   \
                                             const LinearAttentionOptions&, In<T>, In<T>, In<T>, TensorView<T>,       \
                                             TensorView<T>, TensorView<T>);                                           \
  template void linear_attention_decode<T>(In<T>, In<T>, In<T>, In<T>, const LinearAttentionOptions&, TensorView<T>, \
                                           TensorView<T>, TensorView<T>, TensorView<T>, TensorView<T>);             \
  template void elu_plus_one_forward<T>(In<T>, TensorView<const uint8_t>, TensorView<T>);                             \
  template void elu_plus_one_backward<T>(In<T>, In<T>, TensorView<T>);                                                \
  template void relu_features_forward<T>(In<T>, double, TensorView<T>);                                               \
  template void column_softmax_forward<T>(In<T>, TensorView<T>);                                                      \
  template void column_softmax_backward<T>(In<T>, In<T>, TensorView<T>);                                              \
  template void relu_features_backward<T>(In<T>, double, In<T>, TensorView<T>);                                       \
  template void favor_query_features<T>(In<T>, TensorView<T>);                                                        \
  template void favor_key_features<T>(In<T>, In<T>, TensorView<const uint8_t>, double, const LinearAttentionOptions&, \
                                      TensorView<T>, TensorView<T>);                                                  \
  template void favor_features_backward<T>(In<T>, In<T>, TensorView<T>);                                              \
  template void favor_key_norm_backward<T>(In<T>, In<T>, double, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

#include "ops/norm_act.h"

#include "cpu/dropout.h"
#include "cpu/gelu.h"
#include "cpu/layernorm.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// An element-wise op's operands: `a` contiguous, and `b` contiguous with as many elements.
template <class A, class B>
void require_elementwise(const char* op, const char* a_name, const A& a, const char* b_name, const B& b) {
  require_contiguous(op, a_name, a);
  require_contiguous(op, b_name, b, a.numel());
}

// What a layernorm's every call reads: x (rows, C); weight (C); mean, rstd (rows).
template <class T>
void require_layernorm(const char* op, In<T> x, In<T> weight, In<T> mean, In<T> rstd) {
  require_contiguous(op, "x", x);
  require_contiguous(op, "weight", weight, x.cols());
  require_contiguous(op, "mean", mean, x.rows());
  require_contiguous(op, "rstd", rstd, x.rows());
}

// The views of a forward (or its re-application): the above, y (rows, C) and bias (C).
template <class T>
void require_layernorm_forward(const char* op, In<T> x, In<T> weight, In<T> bias, In<T> mean, In<T> rstd,
                               In<T> y) {
  require_layernorm<T>(op, x, weight, mean, rstd);
  require_contiguous(op, "y", y, x.numel());
  require_contiguous(op, "bias", bias, x.cols());
}

}  // namespace

template <class T>
void layernorm_forward(In<T> x, In<T> weight, In<T> bias, TensorView<T> y, Out<T> mean, Out<T> rstd, double eps) {
  const char* op = "layernorm_forward";
  require_layernorm_forward<T>(op, x, weight, bias, mean, rstd, y);
  LF_DISPATCH(op, device_of(op, x, weight, bias, y, mean, rstd),
              return lf::layernorm_forward<T>(x.data(), weight.data(), bias.data(), y.data(), mean.data(), rstd.data(),
                                              x.rows(), x.cols(), eps));
}

template <class T>
void layernorm_apply(In<T> x, In<T> weight, In<T> bias, In<T> mean, In<T> rstd, TensorView<T> y) {
  const char* op = "layernorm_apply";
  require_layernorm_forward<T>(op, x, weight, bias, mean, rstd, y);
  LF_DISPATCH(op, device_of(op, x, weight, bias, mean, rstd, y),
              return lf::layernorm_apply<T>(x.data(), weight.data(), bias.data(), mean.data(), rstd.data(), y.data(),
                                            x.rows(), x.cols()));
}

template <class T>
void layernorm_backward(In<T> x, In<T> weight, In<T> mean, In<T> rstd, In<T> dy, TensorView<T> dx, Out<T> dweight,
                        Out<T> dbias) {
  const char* op = "layernorm_backward";
  require_layernorm<T>(op, x, weight, mean, rstd);
  require_contiguous(op, "dy", dy, x.numel());
  require_contiguous(op, "dx", dx, x.numel());
  require_vector_or_empty(op, "dweight", dweight, x.cols());
  require_vector_or_empty(op, "dbias", dbias, x.cols());
  LF_DISPATCH(op, device_of(op, x, weight, mean, rstd, dy, dx, dweight, dbias),
              return lf::layernorm_backward<T>(x.data(), weight.data(), mean.data(), rstd.data(), dy.data(), dx.data(),
                                               dweight.data(), dbias.data(), x.rows(), x.cols()));
}

template <class T>
void gelu_forward(In<T> x, TensorView<T> y) {
  require_elementwise("gelu_forward", "x", x, "y", y);
  LF_DISPATCH("gelu_forward", device_of("gelu_forward", x, y), return lf::gelu_forward<T>(x.data(), y.data(), x.numel()));
}

template <class T>
void gelu_backward(In<T> x, In<T> dy, TensorView<T> dx) {
  require_elementwise("gelu_backward", "x", x, "dy", dy);
  require_elementwise("gelu_backward", "dy", dy, "dx", dx);
  LF_DISPATCH("gelu_backward", device_of("gelu_backward", x, dy, dx),
              return lf::gelu_backward<T>(x.data(), dy.data(), dx.data(), x.numel()));
}

template <class T>
void dropout_forward(In<T> x, TensorView<T> y, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  require_elementwise("dropout_forward", "x", x, "y", y);
  LF_DISPATCH("dropout_forward", device_of("dropout_forward", x, y),
              return lf::dropout_forward<T>(x.data(), y.data(), x.numel(), p, seed, stream, offset));
}

template <class T>
void dropout_backward(In<T> dy, TensorView<T> dx, double p, uint64_t seed, uint64_t stream, uint64_t offset) {
  require_elementwise("dropout_backward", "dy", dy, "dx", dx);
  LF_DISPATCH("dropout_backward", device_of("dropout_backward", dy, dx),
              return lf::dropout_backward<T>(dy.data(), dx.data(), dy.numel(), p, seed, stream, offset));
}

#define LF_INSTANTIATE(T)                                                                                      \
  template void layernorm_forward<T>(In<T>, In<T>, In<T>, TensorView<T>, Out<T>, Out<T>, double);              \
  template void layernorm_apply<T>(In<T>, In<T>, In<T>, In<T>, In<T>, TensorView<T>);                          \
  template void layernorm_backward<T>(In<T>, In<T>, In<T>, In<T>, In<T>, TensorView<T>, Out<T>, Out<T>);       \
  template void gelu_forward<T>(In<T>, TensorView<T>);                                                         \
  template void gelu_backward<T>(In<T>, In<T>, TensorView<T>);                                                 \
  template void dropout_forward<T>(In<T>, TensorView<T>, double, uint64_t, uint64_t, uint64_t);                \
  template void dropout_backward<T>(In<T>, TensorView<T>, double, uint64_t, uint64_t, uint64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

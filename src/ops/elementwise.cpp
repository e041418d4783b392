#include "ops/elementwise.h"

#include "cpu/adamw.h"
#include "cpu/elementwise.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// x and y: rows of the same rows × cols (their row strides may differ).
template <class X, class Y>
void require_same_rows(const char* op, const X& x, const Y& y) {
  require_rows(op, "x", x);
  require_rows(op, "y", y);
  require_same_matrix(op, x, y);
}

}  // namespace

template <class T>
void fill(TensorView<T> y, double value) {
  require_rows("fill", "y", y);
  LF_DISPATCH("fill", y.device(), return fill_rows<T>(y.data(), y.rows(), y.cols(), y.row_stride(), T(value)));
}

template <class T>
void copy(In<T> x, TensorView<T> y) {
  require_same_rows("copy", x, y);
  LF_DISPATCH("copy", device_of("copy", x, y),
              return copy_rows<T>(x.data(), x.row_stride(), y.data(), y.row_stride(), y.rows(), y.cols()));
}

template <class T>
void axpby(double alpha, In<T> x, double beta, TensorView<T> y) {
  require_same_rows("axpby", x, y);
  LF_DISPATCH("axpby", device_of("axpby", x, y),
              return axpby_rows<T>(T(alpha), x.data(), x.row_stride(), T(beta), y.data(), y.row_stride(), y.rows(),
                                   y.cols()));
}

template <class T>
void scale(TensorView<T> y, double s) {
  require_contiguous("scale", "y", y);
  LF_DISPATCH("scale", y.device(), return scale_inplace<T>(y.data(), y.numel(), s));
}

template <class T>
void zero_masked_rows(TensorView<const uint8_t> mask, TensorView<T> y) {
  if (!mask.data()) return;
  require_rows("zero_masked_rows", "y", y);
  require_contiguous("zero_masked_rows", "mask", mask, y.rows());
  LF_DISPATCH("zero_masked_rows", device_of("zero_masked_rows", mask, y),
              return lf::zero_masked_rows<T>(y.data(), y.row_stride(), mask.data(), y.rows(), y.cols()));
}

template <class T>
void relu_forward(In<T> x, TensorView<T> y) {
  require_same_rows("relu_forward", x, y);
  LF_DISPATCH("relu_forward", device_of("relu_forward", x, y),
              return relu_rows<T>(x.data(), x.row_stride(), y.data(), y.row_stride(), y.rows(), y.cols()));
}

template <class T>
void relu_backward(In<T> y, In<T> dy, TensorView<T> dx) {
  const char* op = "relu_backward";
  require_same_rows(op, y, dy);
  require_same_rows(op, dy, dx);
  LF_DISPATCH(op, device_of(op, y, dy, dx),
              return relu_backward_rows<T>(y.data(), y.row_stride(), dy.data(), dy.row_stride(), dx.data(),
                                           dx.row_stride(), dx.rows(), dx.cols()));
}

template <class T>
void copy_strided(In<T> x, TensorView<T> y, bool accumulate) {
  const char* op = "copy_strided";
  LF_REQUIRE(x.rank() == y.rank(), op, ": shapes ", x.shape_string(), " and ", y.shape_string(), " differ");
  // Rank 4, leading dimensions of size 1 first.
  int64_t sizes[kMaxRank], xs[kMaxRank], ys[kMaxRank];
  const int pad = kMaxRank - y.rank();
  for (int d = 0; d < kMaxRank; ++d) {
    const bool real = d >= pad;
    sizes[d] = real ? y.size(d - pad) : 1;
    xs[d] = real ? x.stride(d - pad) : 0;
    ys[d] = real ? y.stride(d - pad) : 0;
    LF_REQUIRE(!real || x.size(d - pad) == sizes[d], op, ": shapes ", x.shape_string(), " and ", y.shape_string(),
               " differ");
  }
  LF_DISPATCH(op, device_of(op, x, y), return lf::copy_strided<T>(x.data(), xs, y.data(), ys, sizes, accumulate));
}

template <class T>
bool all_finite(In<T> x) {
  LF_REQUIRE(x.contiguous(), "all_finite: x ", x.shape_string(), " must be contiguous");
  LF_DISPATCH("all_finite", x.device(), return lf::all_finite<T>(x.data(), x.numel()));
}

#define LF_INSTANTIATE(T)                                               \
  template void fill<T>(TensorView<T>, double);                         \
  template void copy<T>(In<T>, TensorView<T>);                          \
  template void axpby<T>(double, In<T>, double, TensorView<T>);         \
  template void scale<T>(TensorView<T>, double);                        \
  template void zero_masked_rows<T>(TensorView<const uint8_t>, TensorView<T>);  \
  template void relu_forward<T>(In<T>, TensorView<T>);                          \
  template void relu_backward<T>(In<T>, In<T>, TensorView<T>);                  \
  template void copy_strided<T>(In<T>, TensorView<T>, bool);                     \
  template bool all_finite<T>(In<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

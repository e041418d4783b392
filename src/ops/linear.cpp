#include "ops/linear.h"

#include "cpu/linear.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// The (out, in) of W, checked against x's and y's widths.
template <class T>
void check_linear(const char* op, In<T> x, In<T> W, int64_t N, int64_t out_width, In<T> bias) {
  LF_REQUIRE(W.rank() == 2 && W.contiguous(), op, ": `W` must be a contiguous (out, in) matrix, not ", W.shape_string());
  LF_REQUIRE(W.size(0) == out_width, op, ": W ", W.shape_string(), " gives width ", W.size(0), ", not ", out_width);
  if (x.data()) {  // the backward needs no x when it skips dW
    require_rows(op, "x", x);
    LF_REQUIRE(W.size(1) == x.cols() && x.rows() == N, op, ": x ", x.shape_string(), " for W ", W.shape_string(),
               " and ", N, " rows");
  }
  require_vector_or_empty(op, "bias", bias, out_width);
}

}  // namespace

template <class T>
void linear_forward(In<T> x, In<T> W, In<T> bias, TensorView<T> y) {
  require_rows("linear_forward", "y", y);
  check_linear<T>("linear_forward", x, W, y.rows(), y.cols(), bias);
  LF_DISPATCH_DETAIL("linear_forward", device_of("linear_forward", x, W, bias, y),
                     linear_product_detail<T>(y.rows(), W.size(0), W.size(1)),
                     return lf::linear_forward<T>(x.data(), W.data(), bias.data(), y.data(), y.rows(), W.size(1), W.size(0),
                                           x.row_stride(), y.row_stride()));
}

template <class T>
void linear_backward(In<T> x, In<T> W, In<T> dy, Out<T> dx, Out<T> dW, Out<T> dbias, bool accumulate_dx) {
  const char* op = "linear_backward";
  require_rows(op, "dy", dy);
  check_linear<T>(op, x, W, dy.rows(), dy.cols(), {});
  if (dx.data()) {
    require_rows(op, "dx", dx);
    LF_REQUIRE(dx.rows() == dy.rows() && dx.cols() == W.size(1), op, ": dx ", dx.shape_string(), " for dy ",
               dy.shape_string(), " and W ", W.shape_string());
    LF_REQUIRE(!x.data() || !dW.data() || x.row_stride() == dx.row_stride(), op,
               ": x and dx must have one row stride (the backend takes one for both)");
  }
  require_vector_or_empty(op, "dW", dW, W.numel());
  require_vector_or_empty(op, "dbias", dbias, W.size(0));
  // Three dispatches, one per product (and the bias's sums), so that a profile (linformer/profile.h)
  // times each GEMM by its shape: dx = dy · W is (N × out) · (out × in), dW += dyᵀ · x is
  // (out × N) · (N × in). Each lambda returns through LF_DISPATCH's `return`.
  const Device device = device_of(op, x, W, dy, dx, dW, dbias);
  const int64_t N = dy.rows(), in = W.size(1), out = W.size(0), ldy = dy.row_stride();
  auto part = [](const char* name, profile_detail::Detail d) {
    d.text = str_cat(name, ": ", d.text);
    return d;
  };
  if (dx.data())
    [&] {
      LF_DISPATCH_DETAIL(op, device, part("dx", product_detail(N, in, out, false, false)),
                         return lf::linear_backward<T>(nullptr, W.data(), dy.data(), dx.data(), nullptr, nullptr, N,
                                                       in, out, accumulate_dx, dx.row_stride(), ldy));
    }();
  if (dW.data())
    [&] {
      LF_DISPATCH_DETAIL(op, device, part("dW", product_detail(out, in, N, true, false)),
                         return lf::linear_backward<T>(x.data(), W.data(), dy.data(), nullptr, dW.data(), nullptr, N,
                                                       in, out, false, x.row_stride(), ldy));
    }();
  if (dbias.data())
    [&] { LF_DISPATCH("add_column_sums", device, return lf::add_column_sums<T>(dy.data(), dbias.data(), N, out, ldy)); }();
}

template <class T>
void add_column_sums(In<T> dy, TensorView<T> dbias) {
  require_rows("add_column_sums", "dy", dy);
  require_vector_or_empty("add_column_sums", "dbias", dbias, dy.cols());
  LF_DISPATCH("add_column_sums", device_of("add_column_sums", dy, dbias),
              return lf::add_column_sums<T>(dy.data(), dbias.data(), dy.rows(), dy.cols(), dy.row_stride()));
}

#define LF_INSTANTIATE(T)                                                                           \
  template void linear_forward<T>(In<T>, In<T>, In<T>, TensorView<T>);                              \
  template void linear_backward<T>(In<T>, In<T>, In<T>, Out<T>, Out<T>, Out<T>, bool);              \
  template void add_column_sums<T>(In<T>, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

#include "ops/softmax.h"

#include "cpu/softmax.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {
template <class A, class B>
void require_contiguous_pair(const char* op, const A& a, const B& b) {
  LF_REQUIRE(a.contiguous() && b.contiguous(), op, ": views must be contiguous");
  require_same_matrix(op, a, b);
}
}  // namespace

template <class T>
void softmax_forward(In<T> x, TensorView<T> y) {
  require_contiguous_pair("softmax_forward", x, y);
  LF_DISPATCH("softmax_forward", device_of("softmax_forward", x, y),
              return lf::softmax_forward<T>(x.data(), y.data(), y.rows(), y.cols()));
}

template <class T>
void softmax_backward(In<T> y, In<T> dy, TensorView<T> dx) {
  require_contiguous_pair("softmax_backward", y, dy);
  require_contiguous_pair("softmax_backward", y, dx);
  LF_DISPATCH("softmax_backward", device_of("softmax_backward", y, dy, dx),
              return lf::softmax_backward<T>(y.data(), dy.data(), dx.data(), dx.rows(), dx.cols()));
}

template void softmax_forward<float>(In<float>, TensorView<float>);
template void softmax_forward<double>(In<double>, TensorView<double>);
template void softmax_backward<float>(In<float>, In<float>, TensorView<float>);
template void softmax_backward<double>(In<double>, In<double>, TensorView<double>);

}  // namespace lf::ops

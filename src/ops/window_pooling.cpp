#include "ops/window_pooling.h"

#include "cpu/window_pooling.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// src (m, width), dst (k, width) with unit column strides; the optional per-window and per-position
// vectors of the right length.
template <class S, class D>
void check_pooling(const char* op, const S& src, const D& dst, int64_t w, TensorView<const uint8_t> padded) {
  require_rows(op, "src", src);
  require_rows(op, "dst", dst);
  LF_REQUIRE(src.rank() == 2 && dst.rank() == 2 && src.cols() == dst.cols(), op, ": src ", src.shape_string(),
             " (m, width) and dst ", dst.shape_string(), " (k, width)");
  LF_REQUIRE(w >= 1, op, ": windows of ", w, " positions");  // windows past m are empty
  require_vector_or_empty(op, "padded", padded, src.rows());
}

template <class T>
void check_weights(const char* op, In<T> tap, TensorView<const int32_t> count, int64_t w, int64_t k) {
  LF_REQUIRE(!tap.data() != !count.data(), op, ": give exactly one of `tap` (conv) and `count` (mean)");
  require_vector_or_empty(op, "tap", tap, w);
  require_vector_or_empty(op, "count", count, k);
}

}  // namespace

template <class T>
void window_compress(In<T> src, In<T> tap, TensorView<const int32_t> count, TensorView<const uint8_t> padded,
                     int64_t w, TensorView<T> dst) {
  const char* op = "window_compress";
  check_pooling(op, src, dst, w, padded);
  check_weights<T>(op, tap, count, w, dst.rows());
  LF_DISPATCH(op, device_of(op, src, tap, count, padded, dst),
              return lf::window_compress<T>(src.data(), src.row_stride(), src.rows(), src.cols(), w, dst.rows(),
                                            tap.data(), count.data(), padded.data(), dst.data(), dst.row_stride()));
}

template <class T>
void window_compress_backward(In<T> src, In<T> tap, TensorView<const int32_t> count, TensorView<const uint8_t> padded,
                              int64_t w, In<T> ddst, TensorView<T> dsrc, Out<T> dtap) {
  const char* op = "window_compress_backward";
  check_pooling(op, src, ddst, w, padded);
  check_weights<T>(op, tap, count, w, ddst.rows());
  require_rows(op, "dsrc", dsrc);
  require_same_matrix(op, src, dsrc);
  require_vector_or_empty(op, "dtap", dtap, w);
  LF_DISPATCH(op, device_of(op, src, tap, count, padded, ddst, dsrc, dtap),
              return lf::window_compress_backward<T>(src.data(), src.row_stride(), src.rows(), src.cols(), w,
                                                     ddst.rows(), tap.data(), count.data(), padded.data(), ddst.data(),
                                                     ddst.row_stride(), dsrc.data(), dsrc.row_stride(), dtap.data()));
}

template <class T>
void window_max_pool(In<T> src, TensorView<const uint8_t> padded, int64_t w, TensorView<T> dst,
                     TensorView<int32_t> amax) {
  const char* op = "window_max_pool";
  check_pooling(op, src, dst, w, padded);
  require_same_matrix(op, dst, amax);
  LF_REQUIRE(amax.row_stride() == dst.row_stride() && amax.stride(-1) == 1, op,
             ": amax and dst must have one row stride");
  LF_DISPATCH(op, device_of(op, src, padded, dst, amax),
              return lf::window_max_pool<T>(src.data(), src.row_stride(), src.rows(), src.cols(), w, dst.rows(),
                                            padded.data(), dst.data(), amax.data(), dst.row_stride()));
}

template <class T>
void window_max_pool_backward(TensorView<const int32_t> amax, In<T> ddst, TensorView<T> dsrc) {
  const char* op = "window_max_pool_backward";
  require_rows(op, "ddst", ddst);
  require_rows(op, "dsrc", dsrc);
  require_same_matrix(op, amax, ddst);
  LF_REQUIRE(amax.row_stride() == ddst.row_stride() && amax.stride(-1) == 1 && dsrc.cols() == ddst.cols(), op,
             ": amax ", amax.shape_string(), ", ddst ", ddst.shape_string(), ", dsrc ", dsrc.shape_string());
  LF_DISPATCH(op, device_of(op, amax, ddst, dsrc),
              return lf::window_max_pool_backward<T>(amax.data(), ddst.data(), ddst.row_stride(), ddst.cols(),
                                                     ddst.rows(), dsrc.data(), dsrc.row_stride()));
}

template <class T>
void window_weight_sums(In<T> tap, TensorView<const int32_t> count, TensorView<const uint8_t> padded, int64_t w,
                        int64_t m, TensorView<T> sums) {
  const char* op = "window_weight_sums";
  LF_REQUIRE(w >= 1 && m >= 0, op, ": windows of ", w, " positions over ", m);
  LF_REQUIRE(sums.contiguous(), op, ": `sums` ", sums.shape_string(), " must be contiguous");
  check_weights<T>(op, tap, count, w, sums.numel());
  require_vector_or_empty(op, "padded", padded, m);
  LF_DISPATCH(op, device_of(op, tap, count, padded, sums),
              return lf::window_weight_sums<T>(m, w, sums.numel(), tap.data(), count.data(), padded.data(),
                                               sums.data()));
}

template <class T>
void window_weight_sums_backward(In<T> dsums, TensorView<const uint8_t> padded, int64_t w, int64_t m,
                                 TensorView<T> dtap) {
  const char* op = "window_weight_sums_backward";
  LF_REQUIRE(w >= 1 && m >= 0, op, ": windows of ", w, " positions over ", m);
  LF_REQUIRE(dsums.contiguous(), op, ": `dsums` ", dsums.shape_string(), " must be contiguous");
  require_vector_or_empty(op, "padded", padded, m);
  LF_REQUIRE(dtap.data(), op, ": `dtap` is required");
  require_vector_or_empty(op, "dtap", dtap, w);
  LF_DISPATCH(op, device_of(op, dsums, padded, dtap),
              return lf::window_weight_sums_backward<T>(m, w, dsums.numel(), padded.data(), dsums.data(),
                                                        dtap.data()));
}

#define LF_INSTANTIATE(T)                                                                                        \
  template void window_compress<T>(In<T>, In<T>, TensorView<const int32_t>, TensorView<const uint8_t>, int64_t,  \
                                   TensorView<T>);                                                               \
  template void window_compress_backward<T>(In<T>, In<T>, TensorView<const int32_t>, TensorView<const uint8_t>,  \
                                            int64_t, In<T>, TensorView<T>, Out<T>);                              \
  template void window_max_pool<T>(In<T>, TensorView<const uint8_t>, int64_t, TensorView<T>, TensorView<int32_t>); \
  template void window_max_pool_backward<T>(TensorView<const int32_t>, In<T>, TensorView<T>);                  \
  template void window_weight_sums<T>(In<T>, TensorView<const int32_t>, TensorView<const uint8_t>, int64_t,       \
                                      int64_t, TensorView<T>);                                                   \
  template void window_weight_sums_backward<T>(In<T>, TensorView<const uint8_t>, int64_t, int64_t, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

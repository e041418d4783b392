#include "ops/linformer_bias.h"

#include "cpu/linformer_bias.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

template <class V>
void require_vector(const char* op, const char* name, const V& v, int64_t n) {
  LF_REQUIRE(v.data(), op, ": `", name, "` is required");
  require_vector_or_empty(op, name, v, n);
}

// m (k, width): rank-2 rows with unit column stride.
template <class M>
void require_matrix(const char* op, const char* name, const M& m) {
  require_rows(op, name, m);
  LF_REQUIRE(m.rank() == 2, op, ": `", name, "` ", m.shape_string(), " must be a matrix");
}

}  // namespace

template <class T>
void masked_row_sums(In<T> E, TensorView<const uint8_t> padded, TensorView<T> sums) {
  const char* op = "masked_row_sums";
  require_matrix(op, "E", E);
  require_vector(op, "sums", sums, E.rows());
  require_vector_or_empty(op, "padded", padded, E.cols());
  LF_DISPATCH(op, device_of(op, E, padded, sums),
              return lf::masked_row_sums<T>(E.data(), E.row_stride(), E.rows(), E.cols(), padded.data(), sums.data()));
}

template <class T>
void masked_row_sums_backward(In<T> dsums, TensorView<const uint8_t> padded, TensorView<T> dE) {
  const char* op = "masked_row_sums_backward";
  require_matrix(op, "dE", dE);
  require_vector(op, "dsums", dsums, dE.rows());
  require_vector_or_empty(op, "padded", padded, dE.cols());
  LF_DISPATCH(op, device_of(op, dsums, padded, dE),
              return lf::masked_row_sums_backward<T>(dsums.data(), dE.rows(), dE.cols(), padded.data(), dE.data(),
                                                     dE.row_stride()));
}

template <class T>
void add_row_weighted_bias(In<T> r, In<T> b, TensorView<T> C) {
  const char* op = "add_row_weighted_bias";
  require_matrix(op, "C", C);
  require_vector(op, "r", r, C.rows());
  require_vector(op, "b", b, C.cols());
  LF_DISPATCH(op, device_of(op, r, b, C),
              return lf::add_row_weighted_bias<T>(r.data(), b.data(), C.rows(), C.cols(), C.data(), C.row_stride()));
}

template <class T>
void add_row_weighted_bias_backward(In<T> dC, In<T> r, In<T> b, TensorView<T> db, Out<T> dr) {
  const char* op = "add_row_weighted_bias_backward";
  require_matrix(op, "dC", dC);
  require_vector(op, "r", r, dC.rows());
  require_vector(op, "b", b, dC.cols());
  require_vector(op, "db", db, dC.cols());
  require_vector_or_empty(op, "dr", dr, dC.rows());
  LF_DISPATCH(op, device_of(op, dC, r, b, db, dr),
              return lf::add_row_weighted_bias_backward<T>(dC.data(), dC.row_stride(), r.data(), b.data(), dC.rows(),
                                                           dC.cols(), db.data(), dr.data()));
}

template <class T>
void slot_bias(In<T> bias, TensorView<const uint8_t> empty, TensorView<T> dst) {
  const char* op = "slot_bias";
  require_matrix(op, "dst", dst);
  require_vector(op, "bias", bias, dst.cols());
  require_vector(op, "empty", empty, dst.rows());
  LF_DISPATCH(op, device_of(op, bias, empty, dst),
              return lf::slot_bias<T>(bias.data(), empty.data(), dst.rows(), dst.cols(), dst.data(), dst.row_stride()));
}

template <class T>
void slot_bias_backward(In<T> ddst, TensorView<const uint8_t> empty, TensorView<T> dbias) {
  const char* op = "slot_bias_backward";
  require_matrix(op, "ddst", ddst);
  require_vector(op, "empty", empty, ddst.rows());
  require_vector(op, "dbias", dbias, ddst.cols());
  LF_DISPATCH(op, device_of(op, ddst, empty, dbias),
              return lf::slot_bias_backward<T>(ddst.data(), ddst.row_stride(), empty.data(), ddst.rows(), ddst.cols(),
                                               dbias.data()));
}

#define LF_INSTANTIATE(T)                                                                             \
  template void masked_row_sums<T>(In<T>, TensorView<const uint8_t>, TensorView<T>);                  \
  template void masked_row_sums_backward<T>(In<T>, TensorView<const uint8_t>, TensorView<T>);         \
  template void add_row_weighted_bias<T>(In<T>, In<T>, TensorView<T>);                                \
  template void add_row_weighted_bias_backward<T>(In<T>, In<T>, In<T>, TensorView<T>, Out<T>);        \
  template void slot_bias<T>(In<T>, TensorView<const uint8_t>, TensorView<T>);                        \
  template void slot_bias_backward<T>(In<T>, TensorView<const uint8_t>, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

#include "ops/token_mixing.h"

#include "cpu/token_mixing.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

template <class View>
void require_rank(const char* op, const char* name, const View& v, int rank, bool contiguous) {
  LF_REQUIRE(v.rank() == rank && (contiguous ? v.contiguous() : v.uniform_rows()), op, ": `", name, "` ",
             v.shape_string(), " must be ", contiguous ? "a contiguous" : "an", " array of rank ", rank,
             contiguous ? "" : " with unit column stride");
}

// Checks x (B, n, d) against xp (G, n_p, B·d_h).
template <class X, class P>
void require_packing(const char* op, const X& x, const P& xp) {
  require_rank(op, "x", x, 3, true);
  require_rank(op, "xp", xp, 3, true);
  const int64_t G = xp.size(0), d = x.size(2);
  LF_REQUIRE(G > 0 && d % G == 0 && xp.size(1) >= x.size(1) && xp.size(2) == x.size(0) * (d / G), op, ": x ",
             x.shape_string(), " does not pack into ", xp.shape_string(), " (G, n_p ≥ n, B·d/G)");
}

// Checks values (G, rows) against x (G, rows, N).
template <class X, class V>
void require_row_values(const char* op, const X& x, const V& values) {
  require_rank(op, "x", x, 3, true);
  require_rank(op, "values", values, 2, false);
  LF_REQUIRE(values.size(0) == x.size(0) && values.size(1) == x.size(1), op, ": values ", values.shape_string(),
             " for rows of ", x.shape_string());
}

template <class A, class Y>
void require_square(const char* op, const A& a, const Y& y, bool a_contiguous) {
  require_rank(op, "a", a, 2, a_contiguous);
  require_rank(op, "y", y, 2, !a_contiguous);
  LF_REQUIRE(a.size(0) == a.size(1) && y.size(0) == a.size(0) && y.size(1) == a.size(1), op, ": a ",
             a.shape_string(), " and y ", y.shape_string(), " must be the same square");
}

}  // namespace

template <class T>
void token_mixing_pack(In<T> x, TensorView<const uint8_t> mask, TensorView<T> xp) {
  constexpr const char* op = "token_mixing_pack";
  require_packing(op, x, xp);
  require_vector_or_empty(op, "mask", mask, x.size(0) * x.size(1));
  LF_DISPATCH(op, device_of(op, x, mask, xp),
              return lf::token_mixing_pack<T>(x.data(), mask.data(), x.size(0), x.size(1), x.size(2), xp.size(0),
                                              xp.size(1), xp.data()));
}

template <class T>
void token_mixing_unpack(In<T> xp, TensorView<T> x) {
  constexpr const char* op = "token_mixing_unpack";
  require_packing(op, x, xp);
  LF_DISPATCH(op, device_of(op, xp, x),
              return lf::token_mixing_unpack<T>(xp.data(), x.size(0), x.size(1), x.size(2), xp.size(0), xp.size(1),
                                                x.data()));
}

template <class T>
void broadcast_rows(In<T> values, TensorView<T> y) {
  constexpr const char* op = "broadcast_rows";
  require_row_values(op, y, values);
  LF_DISPATCH(op, device_of(op, values, y),
              return lf::broadcast_rows<T>(values.data(), values.stride(0), y.size(0), y.size(1), y.size(2), y.data()));
}

template <class T>
void add_row_sums(In<T> x, TensorView<T> sums) {
  constexpr const char* op = "add_row_sums";
  require_row_values(op, x, sums);
  LF_DISPATCH(op, device_of(op, x, sums),
              return lf::add_row_sums<T>(x.data(), x.size(0), x.size(1), x.size(2), sums.data(), sums.stride(0)));
}

template <class T>
void lower_triangle(In<T> a, TensorView<T> y) {
  constexpr const char* op = "lower_triangle";
  require_square(op, a, y, false);
  LF_DISPATCH(op, device_of(op, a, y), return lf::lower_triangle<T>(a.data(), a.stride(0), a.size(0), y.data()));
}

template <class T>
void add_lower_triangle(In<T> a, TensorView<T> y) {
  constexpr const char* op = "add_lower_triangle";
  require_square(op, a, y, true);
  LF_DISPATCH(op, device_of(op, a, y), return lf::add_lower_triangle<T>(a.data(), a.size(0), y.data(), y.stride(0)));
}

#define LF_INSTANTIATE(T)                                                                   \
  template void token_mixing_pack<T>(In<T>, TensorView<const uint8_t>, TensorView<T>); \
  template void token_mixing_unpack<T>(In<T>, TensorView<T>);                          \
  template void broadcast_rows<T>(In<T>, TensorView<T>);                               \
  template void add_row_sums<T>(In<T>, TensorView<T>);                                 \
  template void lower_triangle<T>(In<T>, TensorView<T>);                               \
  template void add_lower_triangle<T>(In<T>, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

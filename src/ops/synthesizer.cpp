#include "ops/synthesizer.h"

#include "cpu/synthesizer.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

using Mask = TensorView<const uint8_t>;

// The n of a contiguous (n, n) view of scores or probabilities.
template <class V>
int64_t square_size(const char* op, const char* name, const V& v) {
  LF_REQUIRE(v.rank() == 2 && v.size(0) == v.size(1) && v.contiguous(), op, ": `", name, "` ", v.shape_string(),
             " must be a contiguous (n, n) matrix");
  return v.size(0);
}

// The factors a (n, a) and b (n, b) of n × n scores: rows, with a·b ≥ n.
template <class V>
void require_factors(const char* op, const V& a, const V& b, int64_t n) {
  LF_REQUIRE(a.rank() == 2 && b.rank() == 2, op, ": the factors a ", a.shape_string(), " and b ", b.shape_string(),
             " must be matrices");
  require_rows(op, "a", a);
  require_rows(op, "b", b);
  LF_REQUIRE(a.size(0) == n && b.size(0) == n && b.size(1) >= 1 && a.size(1) * b.size(1) >= n, op, ": the factors a ",
             a.shape_string(), " and b ", b.shape_string(), " must have ", n, " rows and a·b ≥ ", n, " columns");
}

}  // namespace

template <class T>
void synthesizer_softmax(In<T> scores, In<T> bias, Mask key_mask, bool causal, TensorView<T> probs) {
  constexpr const char* op = "synthesizer_softmax";
  const int64_t n = square_size(op, "probs", probs);
  LF_REQUIRE(scores.rank() == 2, op, ": `scores` must be a matrix, not ", scores.shape_string());
  require_rows(op, "scores", scores);
  require_same_matrix(op, scores, probs);
  LF_REQUIRE(scores.data() != probs.data() || scores.row_stride() == n, op,
             ": scores in place of probs must have probs' row stride");
  require_vector_or_empty(op, "bias", bias, n);
  require_vector_or_empty(op, "key_mask", key_mask, n);
  LF_DISPATCH(op, device_of(op, scores, bias, key_mask, probs),
              return lf::synthesizer_softmax<T>(scores.data(), scores.row_stride(), bias.data(), key_mask.data(),
                                                causal, n, probs.data()));
}

template <class T>
void synthesizer_factorized_softmax(In<T> a, In<T> b, Mask key_mask, bool causal, TensorView<T> probs) {
  constexpr const char* op = "synthesizer_factorized_softmax";
  const int64_t n = square_size(op, "probs", probs);
  require_factors(op, a, b, n);
  require_vector_or_empty(op, "key_mask", key_mask, n);
  LF_DISPATCH(op, device_of(op, a, b, key_mask, probs),
              return lf::synthesizer_factorized_softmax<T>(a.data(), a.row_stride(), b.data(), b.row_stride(),
                                                           b.size(1), key_mask.data(), causal, n, probs.data()));
}

template <class T>
void synthesizer_softmax_backward(In<T> probs, bool causal, TensorView<T> grad) {
  constexpr const char* op = "synthesizer_softmax_backward";
  const int64_t n = square_size(op, "probs", probs);
  square_size(op, "grad", grad);
  require_same_matrix(op, probs, grad);
  LF_DISPATCH(op, device_of(op, probs, grad), return lf::synthesizer_softmax_backward<T>(probs.data(), causal, n,
                                                                                          grad.data()));
}

template <class T>
void synthesizer_factors_backward(In<T> dscores, In<T> a, In<T> b, bool causal, TensorView<T> da, TensorView<T> db) {
  constexpr const char* op = "synthesizer_factors_backward";
  const int64_t n = square_size(op, "dscores", dscores);
  require_factors(op, a, b, n);
  LF_REQUIRE(da.rank() == 2 && db.rank() == 2, op, ": da ", da.shape_string(), " and db ", db.shape_string(),
             " must be matrices");
  require_same_matrix(op, a, da);
  require_same_matrix(op, b, db);
  LF_REQUIRE(da.uniform_rows() && db.uniform_rows() && da.row_stride() == a.row_stride() &&
                 db.row_stride() == b.row_stride(),
             op, ": da and db must have the row strides of a and b (", a.row_stride(), ", ", b.row_stride(), ")");
  LF_DISPATCH(op, device_of(op, dscores, a, b, da, db),
              return lf::synthesizer_factors_backward<T>(dscores.data(), a.data(), a.row_stride(), a.size(1), b.data(),
                                                         b.row_stride(), b.size(1), causal, n, da.data(), db.data()));
}

#define LF_INSTANTIATE(T)                                                                                 \
  template void synthesizer_softmax<T>(In<T>, In<T>, Mask, bool, TensorView<T>);                          \
  template void synthesizer_factorized_softmax<T>(In<T>, In<T>, Mask, bool, TensorView<T>);               \
  template void synthesizer_softmax_backward<T>(In<T>, bool, TensorView<T>);                              \
  template void synthesizer_factors_backward<T>(In<T>, In<T>, In<T>, bool, TensorView<T>, TensorView<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

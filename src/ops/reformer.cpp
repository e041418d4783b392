#include "ops/reformer.h"

#include <initializer_list>

#include "cpu/reformer.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

template <class View>
void require_sequence(const char* op, const char* name, const ReformerShape& s, const View& v) {
  require_shape(op, name, v, {s.B, s.n, s.h * s.d_h});
}
void require_lists(const char* op, const ReformerShape& s, TensorView<const int32_t> buckets,
                   TensorView<const int32_t> perm) {
  require_shape(op, "buckets", buckets, {s.n_hashes, s.B, s.h, s.n});
  if (perm.data()) require_shape(op, "perm", perm, {s.n_hashes, s.B, s.h, s.n});
}
template <class View>
void require_stats(const char* op, const ReformerShape& s, const View& stats) {
  require_shape(op, "stats", stats, {2, s.B, s.h, s.n});
}

}  // namespace

template <class T>
void lsh_rotations(uint64_t seed, uint64_t stream, TensorView<T> R) {
  constexpr const char* op = "lsh_rotations";
  LF_REQUIRE(R.rank() == 4 && R.contiguous(), op, ": `R` ", R.shape_string(),
             " must be contiguous (n_hashes, h, d_h, n_buckets/2)");
  LF_DISPATCH(op, R.device(),
              return reformer_rotations<T>(seed, stream, R.size(0), R.size(1), R.size(2), 2 * R.size(3), R.data()));
}

template <class T>
void lsh_hash(const ReformerShape& s, In<T> u, In<T> R, TensorView<int32_t> buckets) {
  constexpr const char* op = "lsh_hash";
  require_sequence(op, "u", s, u);
  require_shape(op, "R", R, {s.n_hashes, s.h, s.d_h, s.n_buckets / 2});
  require_lists(op, s, buckets, {});
  LF_DISPATCH(op, device_of(op, u, R, buckets), return reformer_hash<T>(s, u.data(), R.data(), buckets.data()));
}

void lsh_single_bucket(const ReformerShape& s, TensorView<int32_t> buckets) {
  constexpr const char* op = "lsh_single_bucket";
  require_lists(op, s, buckets, {});
  LF_DISPATCH(op, device_of(op, buckets), return reformer_single_bucket(s, buckets.data()));
}

void lsh_sort(const ReformerShape& s, TensorView<const int32_t> buckets, TensorView<int32_t> perm) {
  constexpr const char* op = "lsh_sort";
  require_lists(op, s, buckets, perm);
  LF_DISPATCH(op, device_of(op, buckets, perm), return reformer_sort(s, buckets.data(), perm.data()));
}

template <class T>
void lsh_attention_forward(const ReformerShape& s, In<T> q, In<T> kn, In<T> v, TensorView<const int32_t> buckets,
                           TensorView<const int32_t> perm, TensorView<T> out, Out<T> stats) {
  constexpr const char* op = "lsh_attention_forward";
  require_sequence(op, "q", s, q);
  require_sequence(op, "kn", s, kn);
  require_sequence(op, "v", s, v);
  require_sequence(op, "out", s, out);
  require_lists(op, s, buckets, perm);
  require_stats(op, s, stats);
  LF_DISPATCH(op, device_of(op, q, kn, v, buckets, perm, out, stats),
              return reformer_forward<T>(s, q.data(), kn.data(), v.data(), buckets.data(), perm.data(), out.data(),
                                         stats.data()));
}

template <class T>
void lsh_attention_backward(const ReformerShape& s, In<T> q, In<T> kn, In<T> v, TensorView<const int32_t> buckets,
                            TensorView<const int32_t> perm, In<T> out, In<T> stats, In<T> dout, TensorView<T> dq,
                            Out<T> dkn, Out<T> dv) {
  constexpr const char* op = "lsh_attention_backward";
  const std::initializer_list<std::pair<const char*, TensorView<const T>>> sequences = {
      {"q", q}, {"kn", kn}, {"v", v}, {"out", out}, {"dout", dout}, {"dq", dq}, {"dkn", dkn}, {"dv", dv}};
  for (const auto& [name, view] : sequences) require_sequence(op, name, s, view);
  require_lists(op, s, buckets, perm);
  require_stats(op, s, stats);
  LF_DISPATCH(op, device_of(op, q, kn, v, buckets, perm, out, stats, dout, dq, dkn, dv),
              return reformer_backward<T>(s, q.data(), kn.data(), v.data(), buckets.data(), perm.data(), out.data(),
                                          stats.data(), dout.data(), dq.data(), dkn.data(), dv.data()));
}

template <class T>
void l2_normalize_rows(In<T> u, TensorView<T> kn, Out<T> norms, double floor) {
  constexpr const char* op = "l2_normalize_rows";
  LF_REQUIRE(u.contiguous() && kn.contiguous(), op, ": views must be contiguous");
  require_same_matrix(op, u, kn);
  require_contiguous(op, "norms", norms, u.rows());
  LF_DISPATCH(op, device_of(op, u, kn, norms),
              return lf::l2_normalize_rows<T>(u.data(), u.rows(), u.cols(), floor, kn.data(), norms.data()));
}

template <class T>
void l2_normalize_rows_backward(In<T> kn, In<T> norms, In<T> dkn, TensorView<T> du, double floor) {
  constexpr const char* op = "l2_normalize_rows_backward";
  LF_REQUIRE(kn.contiguous() && dkn.contiguous() && du.contiguous(), op, ": views must be contiguous");
  require_same_matrix(op, kn, dkn);
  require_same_matrix(op, kn, du);
  require_contiguous(op, "norms", norms, kn.rows());
  LF_DISPATCH(op, device_of(op, kn, norms, dkn, du),
              return lf::l2_normalize_rows_backward<T>(kn.data(), norms.data(), dkn.data(), kn.rows(), kn.cols(), floor,
                                                       du.data()));
}

#define LF_INSTANTIATE(T)                                                                                            \
  template void lsh_rotations<T>(uint64_t, uint64_t, TensorView<T>);                                                \
  template void lsh_hash<T>(const ReformerShape&, In<T>, In<T>, TensorView<int32_t>);                                \
  template void lsh_attention_forward<T>(const ReformerShape&, In<T>, In<T>, In<T>, TensorView<const int32_t>,       \
                                         TensorView<const int32_t>, TensorView<T>, Out<T>);                          \
  template void lsh_attention_backward<T>(const ReformerShape&, In<T>, In<T>, In<T>, TensorView<const int32_t>,      \
                                          TensorView<const int32_t>, In<T>, In<T>, In<T>, TensorView<T>, Out<T>,     \
                                          Out<T>);                                                                   \
  template void l2_normalize_rows<T>(In<T>, TensorView<T>, Out<T>, double);                                          \
  template void l2_normalize_rows_backward<T>(In<T>, In<T>, In<T>, TensorView<T>, double);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

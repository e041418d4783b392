#include "ops/sparse_attention.h"

#include <tuple>

#include "cpu/sparse_attention.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

constexpr const char* kOp = "sparse_attention";

// Checks the call's shape against the pattern and a (B, rows, h·d_h) contiguous view.
template <class View>
void require_heads(const SparseShape& s, const char* name, const View& v, int64_t rows) {
  LF_REQUIRE(v.contiguous() && v.numel() == s.B * rows * s.h * s.d_h && v.cols() == s.h * s.d_h, kOp, ": `", name,
             "` ", v.shape_string(), " must be a contiguous (", s.B, ", ", rows, ", ", s.h * s.d_h, ")");
}

void require_call(const SparseShape& s, const SparsePattern& p) {
  LF_REQUIRE(p.n == s.n && p.m == s.m, kOp, ": the pattern is ", p.n, " x ", p.m, " but the call has ", s.n,
             " queries and ", s.m, " keys");
}

}  // namespace

SparsePattern build_sparse_pattern(int64_t n, int64_t m, bool causal, const RowKeys& row_keys, bool with_transpose) {
  return lf::build_sparse_pattern(n, m, causal, row_keys, with_transpose);
}

int64_t count_pattern_entries(int64_t n, int64_t m, bool causal, const RowKeys& row_keys) {
  return lf::count_pattern_entries(n, m, causal, row_keys);
}

template <class T>
void sparse_attention_forward(const SparseShape& s, const SparsePattern& p, In<T> q, In<T> k, In<T> v,
                              TensorView<T> probs, TensorView<T> out) {
  require_call(s, p);
  require_heads(s, "q", q, s.n);
  require_heads(s, "k", k, s.m);
  require_heads(s, "v", v, s.m);
  require_heads(s, "out", out, s.n);
  const bool keep = probs.data() != nullptr;
  if (keep) require_contiguous(kOp, "probs", probs, s.B * s.h * p.nnz());
  LF_DISPATCH(kOp, device_of(kOp, q, k, v, probs, out),
              return lf::sparse_attention_forward<T>(s, p, q.data(), k.data(), v.data(), probs.data(), out.data(),
                                                     keep));
}

template <class T>
void sparse_attention_backward(const SparseShape& s, const SparsePattern& p, In<T> q, In<T> k, In<T> v, In<T> out,
                               In<T> probs, In<T> dout, TensorView<T> dq, TensorView<T> dk, TensorView<T> dv) {
  require_call(s, p);
  LF_REQUIRE(p.has_transpose(), kOp, ": the backward needs the pattern's transpose");
  for (const auto& [name, view, rows] : {std::tuple{"q", q, s.n}, {"k", k, s.m}, {"v", v, s.m}, {"out", out, s.n},
                                         {"dout", dout, s.n}, {"dq", In<T>(dq), s.n}, {"dk", In<T>(dk), s.m},
                                         {"dv", In<T>(dv), s.m}})
    require_heads(s, name, view, rows);
  require_contiguous(kOp, "probs", probs, s.B * s.h * p.nnz());
  LF_DISPATCH(kOp, device_of(kOp, q, k, v, out, probs, dout, dq, dk, dv),
              return lf::sparse_attention_backward<T>(s, p, q.data(), k.data(), v.data(), out.data(), probs.data(),
                                                      dout.data(), dq.data(), dk.data(), dv.data()));
}

template <class T>
double sparse_attention_workspace_bytes(int64_t n, int64_t d_h) {
  return lf::sparse_attention_workspace_bytes(n, d_h, sizeof(T));
}

#define LF_INSTANTIATE(T)                                                                                       \
  template void sparse_attention_forward<T>(const SparseShape&, const SparsePattern&, In<T>, In<T>, In<T>,       \
                                            TensorView<T>, TensorView<T>);                                      \
  template void sparse_attention_backward<T>(const SparseShape&, const SparsePattern&, In<T>, In<T>, In<T>, In<T>, \
                                             In<T>, In<T>, TensorView<T>, TensorView<T>, TensorView<T>);        \
  template double sparse_attention_workspace_bytes<T>(int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

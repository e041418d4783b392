#include "ops/matmul.h"

#include "cpu/gemm.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

// How a backend reads the last two dimensions of an operand: rows `ld` apart, or the transpose of such.
struct Layout {
  bool trans = false;
  int64_t ld = 0;
};

template <class V>
Layout layout_of(const V& v, const char* name) {
  const int r = v.rank();
  if (v.stride(r - 1) == 1 && (v.stride(r - 2) >= v.size(r - 1) || v.size(r - 2) <= 1))
    return {false, std::max<int64_t>(v.stride(r - 2), std::max<int64_t>(v.size(r - 1), 1))};
  if (v.stride(r - 2) == 1 && (v.stride(r - 1) >= v.size(r - 2) || v.size(r - 1) <= 1))
    return {true, std::max<int64_t>(v.stride(r - 1), std::max<int64_t>(v.size(r - 2), 1))};
  throw InvalidArgument(str_cat("matmul: `", name, "` ", v.shape_string(), " is neither row- nor column-major"));
}

}  // namespace

template <class T>
void matmul(In<T> a, In<T> b, TensorView<T> c, double alpha, double beta) {
  const int rank = c.rank();
  LF_REQUIRE(rank == 2 || rank == 3, "matmul: the output must have rank 2 or 3, not ", c.shape_string());
  LF_REQUIRE((a.rank() == 2 || a.rank() == rank) && (b.rank() == 2 || b.rank() == rank),
             "matmul: operands ", a.shape_string(), " and ", b.shape_string(), " for an output ", c.shape_string());
  const int64_t M = c.size(-2), N = c.size(-1), K = a.size(-1);
  LF_REQUIRE(a.size(-2) == M && b.size(-2) == K && b.size(-1) == N, "matmul: ", a.shape_string(), " · ",
             b.shape_string(), " does not give ", c.shape_string());
  const Layout la = layout_of(a, "a"), lb = layout_of(b, "b"), lc = layout_of(c, "c");
  LF_REQUIRE(!lc.trans, "matmul: the output must be row-major, not a transposed view");
  const Device device = device_of("matmul", a, b, c);
  if (rank == 2)
    LF_DISPATCH_DETAIL("matmul", device, product_detail(M, N, K, la.trans, lb.trans),
                return gemm<T>(la.trans, lb.trans, M, N, K, T(alpha), a.data(), la.ld, b.data(), lb.ld, T(beta),
                               c.data(), lc.ld));
  const int64_t batch = c.size(0);
  LF_REQUIRE((a.rank() == 2 || a.size(0) == batch) && (b.rank() == 2 || b.size(0) == batch),
             "matmul: batch sizes of ", a.shape_string(), ", ", b.shape_string(), " and ", c.shape_string(), " differ");
  const int64_t sa = a.rank() == 3 ? a.stride(0) : 0, sb = b.rank() == 3 ? b.stride(0) : 0;
  LF_DISPATCH_DETAIL("matmul", device, product_detail(M, N, K, la.trans, lb.trans, batch),
              return gemm_batched<T>(la.trans, lb.trans, M, N, K, T(alpha), a.data(), la.ld, sa, b.data(), lb.ld, sb,
                                     T(beta), c.data(), lc.ld, c.stride(0), batch));
}

template void matmul<float>(In<float>, In<float>, TensorView<float>, double, double);
template void matmul<double>(In<double>, In<double>, TensorView<double>, double, double);

}  // namespace lf::ops

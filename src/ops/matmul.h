// Matrix products: c = alpha · a · b + beta · c, with a (M, K), b (K, N) and c (M, N). An operand may
// be a transposed view (`k.t()`): the backend reads it in place. With rank 3 the first dimension is a
// batch of independent products; an operand of rank 2 then serves every item (a shared weight).
// Threaded inside the backend: never call it from an OpenMP parallel region.
#pragma once
#include "ops/view_args.h"

namespace lf::ops {

template <class T>
void matmul(In<T> a, In<T> b, TensorView<T> c, double alpha = 1, double beta = 0);

}  // namespace lf::ops

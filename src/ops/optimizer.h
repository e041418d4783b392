// The optimizer's ops: one AdamW step over contiguous parameters, and the two halves of clipping by
// global norm (the norm; scaling is ops::scale in elementwise.h).
#pragma once
#include <cstdint>

#include "core/adamw_options.h"
#include "ops/view_args.h"

namespace lf::ops {

// Step t (1-based) on params with grads, updating the moments m and v in place (zero before step 1);
// all four contiguous with one element count. Throws lf::InvalidArgument for t < 1 or options outside
// PyTorch's accepted ranges.
template <class T>
void adamw_step(TensorView<T> params, In<T> grads, Out<T> m, Out<T> v, int64_t t, const AdamWOptions& options);

// sqrt(Σ g²) over contiguous g, the same for any thread count; inf/NaN gradients give inf/NaN.
template <class T>
double global_norm(In<T> g);

}  // namespace lf::ops

// AdamW (Loshchilov & Hutter), as torch.optim.AdamW: weight decay is decoupled from the adaptive step
// (p −= lr·wd·p), then the bias-corrected moments drive p −= lr·m̂/(√v̂ + eps). One flat loop over the
// whole parameter arena. Also the two helpers of gradient clipping by global norm.
#pragma once
#include <cstdint>

#include "core/adamw_options.h"

namespace lf {

// One step t (1-based) on params (n) with grads (n), updating the moment buffers m (n) and v (n) in
// place (zero before step 1). Throws lf::InvalidArgument for t < 1 or options outside PyTorch's
// accepted ranges (lr, eps, weight_decay >= 0; betas in [0, 1)).
template <class T>
void adamw_step(T* params, const T* grads, T* m, T* v, int64_t n, int64_t t, const AdamWOptions& opt);

// Plain reference (each element computed in double), same contract.
template <class T>
void adamw_step_ref(T* params, const T* grads, T* m, T* v, int64_t n, int64_t t, const AdamWOptions& opt);

// sqrt(Σ g²) over g (n), accumulated in double in fixed chunks: the result does not depend on the
// thread count. Inf/NaN gradients give an inf/NaN norm, which the caller can test for.
template <class T>
double grad_global_norm(const T* g, int64_t n);

// x (n) *= s, e.g. s = max_norm / norm to clip gradients.
template <class T>
void scale_inplace(T* x, int64_t n, double s);

}  // namespace lf

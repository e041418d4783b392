#include "ops/optimizer.h"

#include "cpu/adamw.h"
#include "ops/dispatch.h"

namespace lf::ops {

template <class T>
void adamw_step(TensorView<T> params, In<T> grads, Out<T> m, Out<T> v, int64_t t, const AdamWOptions& options) {
  const char* op = "adamw_step";
  const int64_t n = params.numel();
  require_contiguous(op, "params", params);
  require_contiguous(op, "grads", grads, n);
  require_contiguous(op, "m", m, n);
  require_contiguous(op, "v", v, n);
  LF_DISPATCH(op, device_of(op, params, grads, m, v),
              return lf::adamw_step<T>(params.data(), grads.data(), m.data(), v.data(), n, t, options));
}

template <class T>
double global_norm(In<T> g) {
  require_contiguous("global_norm", "g", g);
  LF_DISPATCH("global_norm", g.device(), return grad_global_norm<T>(g.data(), g.numel()));
}

template void adamw_step<float>(TensorView<float>, In<float>, Out<float>, Out<float>, int64_t, const AdamWOptions&);
template void adamw_step<double>(TensorView<double>, In<double>, Out<double>, Out<double>, int64_t,
                                 const AdamWOptions&);
template double global_norm<float>(In<float>);
template double global_norm<double>(In<double>);

}  // namespace lf::ops

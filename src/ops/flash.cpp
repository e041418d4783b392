#include "ops/flash.h"

#include "cpu/flash.h"
#include "ops/dispatch.h"

namespace lf::ops {
namespace {

template <class Q, class K, class L>
void require_flash_views(const char* op, const SdpaShape& s, const Q& q, const K& k, const K& v, const Q& out,
                         const L& lse) {
  require_shape(op, "q", q, {s.B, s.n, s.h * s.d_h});
  require_shape(op, "k", k, {s.B, s.mk, s.hk * s.d_h});
  require_shape(op, "v", v, {s.B, s.mk, s.hk * s.d_h});
  require_shape(op, "out", out, {s.B, s.n, s.h * s.d_h});
  require_shape(op, "lse", lse, {s.B, s.h, s.n});
}

}  // namespace

template <class T>
void flash_attention_forward(const SdpaShape& s, In<T> q, In<T> k, In<T> v, TensorView<T> out, Out<T> lse) {
  constexpr const char* op = "flash_attention_forward";
  require_flash_views(op, s, q, k, v, TensorView<const T>(out), TensorView<const T>(lse));
  LF_DISPATCH(op, device_of(op, q, k, v, out, lse),
              return flash_forward<T>(s, q.data(), k.data(), v.data(), out.data(), lse.data()));
}

template <class T>
void flash_attention_backward(const SdpaShape& s, In<T> q, In<T> k, In<T> v, In<T> out, In<T> lse, In<T> dout,
                              TensorView<T> dq, Out<T> dk, Out<T> dv) {
  constexpr const char* op = "flash_attention_backward";
  require_flash_views(op, s, q, k, v, out, lse);
  require_flash_views(op, s, dout, TensorView<const T>(dk), TensorView<const T>(dv), TensorView<const T>(dq), lse);
  LF_DISPATCH(op, device_of(op, q, k, v, out, lse, dout, dq, dk, dv),
              return flash_backward<T>(s, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(),
                                       dk.data(), dv.data()));
}

#define LF_INSTANTIATE(T)                                                                                    \
  template void flash_attention_forward<T>(const SdpaShape&, In<T>, In<T>, In<T>, TensorView<T>, Out<T>);    \
  template void flash_attention_backward<T>(const SdpaShape&, In<T>, In<T>, In<T>, In<T>, In<T>, In<T>, \
                                            TensorView<T>, Out<T>, Out<T>);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf::ops

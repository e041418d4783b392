// The padding helpers of attention.h, on the ops layer.
#include "linformer/attention.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"

namespace lf {

template <class T>
const T* zero_padded_rows(const T* x, const uint8_t* mask, int64_t B, int64_t m, int64_t d, Buffer<T>& clean) {
  if (!mask) return x;
  clean.resize(B * m * d);
  const TensorView<T> rows = clean.view({B * m, d});
  ops::copy<T>(matrix(x, B * m, d), rows);
  ops::zero_masked_rows(vector_view(mask, B * m), rows);
  return clean.data();
}

template <class T>
void zero_rows_at_padding(T* dx, const uint8_t* mask, int64_t B, int64_t m, int64_t d) {
  if (mask) ops::zero_masked_rows(vector_view(mask, B * m), matrix(dx, B * m, d));
}

#define LF_INSTANTIATE(T)                                                                                    \
  template const T* zero_padded_rows<T>(const T*, const uint8_t*, int64_t, int64_t, int64_t, Buffer<T>&); \
  template void zero_rows_at_padding<T>(T*, const uint8_t*, int64_t, int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf

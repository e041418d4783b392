// The padding helpers of attention.h, on the ops layer.
#include "linformer/attention.h"
#include "linformer/tensor.h"
#include "ops/elementwise.h"

namespace lf {

template <class T>
const T* zero_padded_rows(const T* x, const uint8_t* mask, int64_t B, int64_t m, int64_t d, std::vector<T>& clean) {
  if (!mask) return x;
  clean.resize(size_t(B * m * d));
  ops::copy<T>(matrix(x, B * m, d), matrix(clean.data(), B * m, d));
  ops::zero_masked_rows(vector_view(mask, B * m), matrix(clean.data(), B * m, d));
  return clean.data();
}

template <class T>
void zero_rows_at_padding(T* dx, const uint8_t* mask, int64_t B, int64_t m, int64_t d) {
  if (mask) ops::zero_masked_rows(vector_view(mask, B * m), matrix(dx, B * m, d));
}

#define LF_INSTANTIATE(T)                                                                                    \
  template const T* zero_padded_rows<T>(const T*, const uint8_t*, int64_t, int64_t, int64_t, std::vector<T>&); \
  template void zero_rows_at_padding<T>(T*, const uint8_t*, int64_t, int64_t, int64_t);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf

#include "cpu/linformer_bias.h"

#include <algorithm>

namespace lf {

template <class T>
void masked_row_sums(const T* E, int64_t lde, int64_t k, int64_t m, const uint8_t* padded, T* sums) {
  for (int64_t j = 0; j < k; ++j) {
    const T* row = E + j * lde;
    T s = 0;
    for (int64_t t = 0; t < m; ++t)
      if (!(padded && padded[t])) s += row[t];
    sums[j] = s;
  }
}

template <class T>
void masked_row_sums_backward(const T* dsums, int64_t k, int64_t m, const uint8_t* padded, T* dE, int64_t lde) {
  for (int64_t j = 0; j < k; ++j) {
    T* row = dE + j * lde;
    for (int64_t t = 0; t < m; ++t)
      if (!(padded && padded[t])) row[t] += dsums[j];
  }
}

template <class T>
void add_row_weighted_bias(const T* r, const T* b, int64_t k, int64_t width, T* C, int64_t ldc) {
  for (int64_t j = 0; j < k; ++j)
    for (int64_t c = 0; c < width; ++c) C[j * ldc + c] += r[j] * b[c];
}

template <class T>
void add_row_weighted_bias_backward(const T* dC, int64_t ldc, const T* r, const T* b, int64_t k, int64_t width, T* db,
                                    T* dr) {
  for (int64_t j = 0; j < k; ++j) {
    T s = 0;
    for (int64_t c = 0; c < width; ++c) {
      db[c] += dC[j * ldc + c] * r[j];
      s += dC[j * ldc + c] * b[c];
    }
    if (dr) dr[j] = s;
  }
}

template <class T>
void slot_bias(const T* bias, const uint8_t* empty, int64_t k, int64_t width, T* dst, int64_t ldd) {
  for (int64_t j = 0; j < k; ++j) {
    if (empty[j])
      std::fill_n(dst + j * ldd, width, T(0));
    else
      std::copy(bias, bias + width, dst + j * ldd);
  }
}

template <class T>
void slot_bias_backward(const T* ddst, int64_t ldd, const uint8_t* empty, int64_t k, int64_t width, T* dbias) {
  for (int64_t j = 0; j < k; ++j)
    if (!empty[j])
      for (int64_t c = 0; c < width; ++c) dbias[c] += ddst[j * ldd + c];
}

#define LF_INSTANTIATE(T)                                                                                     \
  template void masked_row_sums<T>(const T*, int64_t, int64_t, int64_t, const uint8_t*, T*);                  \
  template void masked_row_sums_backward<T>(const T*, int64_t, int64_t, const uint8_t*, T*, int64_t);         \
  template void add_row_weighted_bias<T>(const T*, const T*, int64_t, int64_t, T*, int64_t);                  \
  template void add_row_weighted_bias_backward<T>(const T*, int64_t, const T*, const T*, int64_t, int64_t, T*, \
                                                  T*);                                                        \
  template void slot_bias<T>(const T*, const uint8_t*, int64_t, int64_t, T*, int64_t);                        \
  template void slot_bias_backward<T>(const T*, int64_t, const uint8_t*, int64_t, int64_t, T*);
LF_INSTANTIATE(float)
LF_INSTANTIATE(double)
#undef LF_INSTANTIATE

}  // namespace lf

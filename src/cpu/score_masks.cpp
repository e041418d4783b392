#include "cpu/score_masks.h"

#include <limits>

namespace lf {

template <class T>
void mask_scores(T* S, int64_t n, int64_t mk, int64_t ld, const uint8_t* key_mask, bool causal, int64_t q_start) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  if (key_mask)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < mk; ++j)
        if (key_mask[j]) S[t * ld + j] = neg_inf;
  if (causal)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = q_start + t + 1; j < mk; ++j) S[t * ld + j] = neg_inf;
}

template void mask_scores<float>(float*, int64_t, int64_t, int64_t, const uint8_t*, bool, int64_t);
template void mask_scores<double>(double*, int64_t, int64_t, int64_t, const uint8_t*, bool, int64_t);

}  // namespace lf
